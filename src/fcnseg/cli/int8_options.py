"""The int8 options ``fcnseg export --int8`` and ``fcnseg bench --int8`` share: calibration,
the parity set and scale, 7-bit weights. One definition, so the two commands read alike."""

from __future__ import annotations

import argparse
from typing import Any


def add_int8_options(group: argparse._ArgumentGroup) -> None:
    """Calibration, parity and weight-range options (``--int8`` itself is the command's own)."""
    group.add_argument("--calibration", help="folder of calibration images (needed by --int8)")
    group.add_argument("--calibration-count", type=int, default=32, help="images used (32)")
    group.add_argument("--parity-data", help="a 'folder' dataset root (images + masks) for parity")
    group.add_argument("--dataset", help="parity on this dataset (with --root, --split): camvid")
    group.add_argument("--root", help="the --dataset folder")
    group.add_argument("--split", default="val", help="the --dataset/--parity-data split (val)")
    group.add_argument("--parity-count", type=int, default=32, help="parity images (default 32)")
    group.add_argument(
        "--parity-scale", type=float, default=1.0,
        help="run the parity images at this scale, as the recipe evaluates (e.g. 0.5)",
    )  # fmt: skip
    group.add_argument(
        "--reduce-range", action=argparse.BooleanOptionalAction, default=None,
        help="7-bit int8 weights (default: on where the CPU has no VNNI, whose int8 kernels "
        "can saturate with 8-bit weights)",
    )  # fmt: skip


def int8_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``export_onnx_int8`` / ``compare_runtimes`` from the options,
    checked before any export starts.

    Raises:
        ValueError: no or a bad ``--calibration`` folder, or both parity sources given.
    """
    from fcnseg.export.int8 import calibration_images

    if not args.calibration:
        raise ValueError("--int8 needs --calibration DIR (a folder of images to calibrate on)")
    calibration_images(args.calibration, args.calibration_count)  # fail before exporting
    if args.parity_data and args.dataset:
        raise ValueError("give --parity-data DIR or --dataset/--root, not both")
    parity_data = None
    if args.parity_data:
        parity_data = ("folder", args.parity_data, args.split)
    elif args.dataset:
        parity_data = (args.dataset, args.root, args.split)
    return {
        "calibration_count": args.calibration_count,
        "parity_data": parity_data,
        "parity_count": args.parity_count,
        "parity_scale": args.parity_scale,
        "reduce_range": args.reduce_range,
    }
