"""``--precision``: one definition for every command that runs a model."""

from __future__ import annotations

import argparse

from fcnseg.accel.precision import PRECISIONS


def add_precision_argument(parser: argparse.ArgumentParser, default: str = "fp32") -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="fp32, bf16 (autocast, fp32 weights), fp16 (GPU), or auto: bf16 where the CPU "
        "(AMX, AVX512-BF16) or GPU computes it natively, else fp32 (default %(default)s)",
    )
