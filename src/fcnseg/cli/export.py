"""``fcnseg export --checkpoint CKPT --format onnx|torchscript|safetensors|aoti --out FILE``.

Exports the model and prints the parity report: the exported artefact is run next to PyTorch
on an input of a different size (batch, height and width) than the export example; the command
fails (exit 2) unless logits agree within 1e-3 and argmax on more than 99.9 % of the pixels.
``--format aoti`` compiles the model ahead of time (AOTInductor, a C++ compiler needed here
only) into a ``.pt2`` package for exactly ``--size`` (batch 1) and this CPU's vector ISA,
checked at the same size (see ``fcnseg.export.aoti``); ``fcnseg bench --aoti FILE`` times it.
``--precision bf16`` (or ``auto`` where the CPU has native bf16) compiles the bf16 autocast
graph instead, judged by its argmax (99 % of the pixels).

``--format onnx --int8 --calibration DIR`` writes a statically quantized (QDQ, per-channel)
graph calibrated on DIR's images, its float32 twin, and ``FILE.parity.json``: argmax
agreement with float32 on real images, and with ``--parity-data`` (a ``folder`` dataset root)
or ``--dataset/--root/--split`` the mean IU of each (see ``fcnseg.export.int8``).
"""

from __future__ import annotations

import argparse
import json

from fcnseg.cli.int8_options import add_int8_options, int8_options
from fcnseg.cli.precision_option import add_precision_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="an fcnseg checkpoint")
    parser.add_argument(
        "--format", required=True, dest="fmt",
        choices=("onnx", "torchscript", "safetensors", "aoti"),
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument(
        "--size",
        default="256x256",
        help="export example size HxW (default 256x256); for aoti, the one size it runs",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    add_precision_argument(parser)  # aoti only: bf16 compiles the bf16 autocast graph
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    q = parser.add_argument_group("int8 (ONNX Runtime static quantization)")
    q.add_argument("--int8", action="store_true", help="quantize: QDQ, per-channel int8 weights")
    add_int8_options(q)


def run(args: argparse.Namespace) -> int:
    from fcnseg.accel.precision import resolve_precision
    from fcnseg.config import parse_size
    from fcnseg.engine.checkpoint import load_model
    from fcnseg.export import (
        export_aoti,
        export_onnx,
        export_safetensors,
        export_torchscript,
        format_report,
    )

    height, width = parse_size(args.size, "--size")
    precision = resolve_precision(args.precision, "cpu")
    if precision != "fp32" and args.fmt != "aoti":
        raise ValueError(f"--precision {args.precision} is for --format aoti; {args.fmt} is fp32")
    if args.int8:
        return _run_int8(args, (1, 3, height, width))
    model = load_model(args.checkpoint)
    example = (1, 3, height, width)
    if args.fmt == "onnx":
        report = export_onnx(model, args.out, example, opset=args.opset)
    elif args.fmt == "torchscript":
        report = export_torchscript(model, args.out, example)
    elif args.fmt == "aoti":
        report = export_aoti(model, args.out, example, precision=precision)
    else:
        report = export_safetensors(model, args.out)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _run_int8(args: argparse.Namespace, example: tuple[int, int, int, int]) -> int:
    from fcnseg.engine.checkpoint import load_model
    from fcnseg.export.int8 import export_onnx_int8, format_int8_report

    if args.fmt != "onnx":
        raise ValueError("--int8 needs --format onnx")
    options = int8_options(args)
    report = export_onnx_int8(
        load_model(args.checkpoint),
        args.out,
        args.calibration,
        example,
        **options,
        opset=args.opset,
    )
    print(json.dumps(report, indent=2) if args.json else format_int8_report(report))
    return 0
