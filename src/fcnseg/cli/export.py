"""``fcnseg export --checkpoint CKPT --format onnx|torchscript|safetensors --out FILE``.

Exports the model and prints the parity report: the exported artefact is run next to PyTorch
on an input of a different size (batch, height and width) than the export example; the command
fails (exit 2) unless logits agree within 1e-3 and argmax on more than 99.9 % of the pixels.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="an fcnseg checkpoint")
    parser.add_argument(
        "--format", required=True, choices=("onnx", "torchscript", "safetensors"), dest="fmt"
    )
    parser.add_argument("--out", required=True, help="the file to write")
    parser.add_argument(
        "--size", default="256x256", help="export example size HxW (default 256x256)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from fcnseg.config import parse_size
    from fcnseg.engine.checkpoint import load_model
    from fcnseg.export import (
        export_onnx,
        export_safetensors,
        export_torchscript,
        format_report,
    )

    height, width = parse_size(args.size, "--size")
    model = load_model(args.checkpoint)
    example = (1, 3, height, width)
    if args.fmt == "onnx":
        report = export_onnx(model, args.out, example, opset=args.opset)
    elif args.fmt == "torchscript":
        report = export_torchscript(model, args.out, example)
    else:
        report = export_safetensors(model, args.out)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
