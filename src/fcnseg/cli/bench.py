"""``fcnseg bench``: latency, throughput and memory of one fcnseg configuration.

    fcnseg bench --model fcn8s --backbone vgg16 --size 500x500 --batch 1 [--pad100]
                 [--device cpu|cuda] [--precision fp32|bf16|fp16|auto] [--channels-last]
                 [--optimize [CANDIDATE]] [--train] [--isolate] [--json FILE]
    fcnseg bench --onnx FP32.onnx INT8.onnx --size 360x480 [--onnx-batches 1,8] [--threads 2]
    fcnseg bench --aoti MODEL.pt2 [MORE.pt2 ...] [--repeat 50]
    fcnseg bench --int8 --calibration DIR --size 360x480
                 (--checkpoint run/best.pt | --backbone mobilenet_v3_large [--context global])
                 [--onnx-batches 1,8]

The configuration runs through ``fcnseg.bench.run_benchmark``, inference through the inference
core (its ``--precision``). The comparison with peers (torchfcn's network of the same head,
torchvision's fcn_resnet50), FLOPs and the GEMM peak belong to the repository's harness, not
the package, which never imports it: ``python -m benchmarks.run`` (the suites) and
``benchmarks.harness.run_benchmark`` from a checkout.
With ``--onnx`` it times the given ONNX files instead (e.g. the float32 and int8 graphs of
``fcnseg export --int8``) with ONNX Runtime at each batch size, the first file the baseline.
With ``--aoti`` it times AOTInductor packages (``fcnseg export --format aoti``) at the size
each was compiled for.
With ``--int8`` it quantizes the model (calibrated on DIR) and times float32 PyTorch, float32
ONNX Runtime and int8 ONNX Runtime side by side at each batch size
(``fcnseg.bench.compare_runtimes``), then prints the int8 parity report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fcnseg.cli.int8_options import add_int8_options, int8_options

# The model options' defaults; a --checkpoint carries its own model, so --int8 refuses any of
# these set beside it rather than time a model the user did not ask for.
MODEL_DEFAULTS = {
    "model": "fcn8s",
    "backbone": "vgg16",
    "num_classes": 21,
    "pad100": False,
    "weights": None,
    "context": None,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fcnseg.cli.precision_option import add_precision_argument
    from fcnseg.models import list_backbones, list_models

    parser.add_argument("--model", default=MODEL_DEFAULTS["model"], choices=list_models())
    parser.add_argument("--backbone", default=MODEL_DEFAULTS["backbone"], choices=list_backbones())
    parser.add_argument("--size", default="500x500", help="input HxW (default 500x500)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward (default 1)")
    parser.add_argument("--num-classes", type=int, default=MODEL_DEFAULTS["num_classes"])
    parser.add_argument(
        "--pad100",
        action="store_true",
        default=MODEL_DEFAULTS["pad100"],
        help="the Caffe reference geometry",
    )
    parser.add_argument(
        "--weights", default=MODEL_DEFAULTS["weights"], help="full-FCN weights file (optional)"
    )
    parser.add_argument(
        "--context",
        type=lambda name: None if name.lower() == "none" else name,
        default=MODEL_DEFAULTS["context"],
        help="a context head on the stride-32 map: global (ParseNet) or pyramid (PSPNet); "
        "default none, the paper's FCN",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    add_precision_argument(parser)
    parser.add_argument("--channels-last", action="store_true", help="NHWC model and input")
    parser.add_argument(
        "--optimize",
        nargs="?",
        const="auto",
        default=None,
        metavar="CANDIDATE",
        help="fcnseg only: optimize_for_inference; alone it keeps the fastest of its "
        "candidates, with a name (onednn, eager, channels_last, frozen, frozen_channels_last, or "
        "onednn_streamed: weights memory-mapped from a saved checkpoint and kept out of the "
        "resident set) it builds that one",
    )
    parser.add_argument("--train", action="store_true", help="also time a training step")
    parser.add_argument("--train-size", default=None, help="HxW of the training step")
    parser.add_argument("--train-batch", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--isolate",
        action="store_true",
        help="each configuration in a fresh process (fair peak RSS; slower)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--onnx", nargs="+", type=Path, default=None, metavar="FILE",
        help="time these ONNX files with ONNX Runtime (the first is the baseline of the ratios)",
    )  # fmt: skip
    parser.add_argument("--onnx-batches", default="1,8", help="--onnx batch sizes (default 1,8)")
    parser.add_argument(
        "--aoti", nargs="+", type=Path, default=None, metavar="FILE",
        help="time these AOTInductor packages (fcnseg export --format aoti) at their size",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="--onnx intra-op threads")
    q = parser.add_argument_group("float32 vs int8 (--int8)")
    q.add_argument(
        "--int8", action="store_true",
        help="time float32 PyTorch, float32 ONNX Runtime and int8 ONNX Runtime side by side "
        "(batch sizes from --onnx-batches)",
    )  # fmt: skip
    q.add_argument("--checkpoint", default=None, help="--int8: a trained model (fcnseg file)")
    add_int8_options(q)


def run(args: argparse.Namespace) -> int:
    from fcnseg.accel.optimize import NAMED
    from fcnseg.bench import format_table, run_benchmark
    from fcnseg.config import parse_size

    if args.batch < 1 or args.repeat < 1 or args.warmup < 0:
        raise ValueError("--batch and --repeat must be >= 1, --warmup >= 0")
    if args.optimize not in (None, "auto", *NAMED):
        raise ValueError(f"--optimize {args.optimize}: choose one of {list(NAMED)} (or none: auto)")
    if args.onnx:
        return _run_onnx(args)
    if args.aoti:
        return _run_aoti(args)
    if args.int8:
        return _run_int8(args)
    optimize = {None: False, "auto": True}.get(args.optimize, args.optimize)
    common = dict(
        size=parse_size(args.size, "--size"),
        batch=args.batch,
        num_classes=args.num_classes,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        train=args.train,
        train_size=parse_size(args.train_size, "--train-size") if args.train_size else None,
        train_batch=args.train_batch,
        warmup=args.warmup,
        repeat=args.repeat,
        isolate=args.isolate,
    )
    rows = [
        run_benchmark(
            args.model,
            backbone=args.backbone,
            pad100=args.pad100,
            weights=args.weights,
            context=args.context,
            optimize=optimize,
            **common,
        )
    ]
    print(format_table(rows))
    machine = rows[0].get("machine")
    if machine:
        gemm = rows[0].get("gemm_peak_gflops")
        load = machine.get("load_avg_1m")
        print(
            f"\n{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}"
            + (f", {gemm:.0f} GFLOP/s {args.precision} GEMM peak" if gemm else "")
            + (f", load {load:.2f}" if load is not None else "")
        )
    _write_json(args, rows)
    return 0


def _run_onnx(args: argparse.Namespace) -> int:
    from fcnseg.bench import bench_onnx_file, format_table
    from fcnseg.config import parse_size

    batches = _batches(args.onnx_batches)
    size = parse_size(args.size, "--size")
    rows_all = []
    for batch in batches:
        rows = [
            bench_onnx_file(p, size, batch, args.warmup, args.repeat, args.threads)
            for p in args.onnx
        ]
        print(format_table(rows) + "\n")
        rows_all += rows
    _write_json(args, rows_all)
    return 0


def _run_aoti(args: argparse.Namespace) -> int:
    from fcnseg.bench import bench_aoti_file, format_table

    rows = [bench_aoti_file(p, args.warmup, args.repeat) for p in args.aoti]
    print(format_table(rows))
    _write_json(args, rows)
    return 0


def _write_json(args: argparse.Namespace, rows) -> None:
    """``--json FILE``: the rows as JSON (values JSON cannot hold written as text)."""
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, default=str))
        print(f"wrote {args.json}")


def _batches(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        raise ValueError(f"--onnx-batches {text!r}: expected e.g. 1,8") from None
    if not batches or min(batches) < 1:
        raise ValueError("--onnx-batches must be >= 1")
    return batches


def _run_int8(args: argparse.Namespace) -> int:
    from fcnseg.bench import compare_runtimes, format_table
    from fcnseg.config import parse_size
    from fcnseg.engine.checkpoint import load_model
    from fcnseg.export.int8 import format_int8_report
    from fcnseg.models import build_model

    options = int8_options(args)
    if args.device != "cpu" or args.precision != "fp32":
        raise ValueError("--int8 compares CPU runtimes: leave --device cpu and --precision fp32")
    if args.checkpoint:
        changed = [k for k, v in MODEL_DEFAULTS.items() if getattr(args, k) != v]
        if changed:
            flags = ", ".join("--" + k.replace("_", "-") for k in changed)
            raise ValueError(f"--checkpoint {args.checkpoint} carries its own model: drop {flags}")
        model = load_model(args.checkpoint)
    else:
        model = build_model(
            args.model, backbone=args.backbone, num_classes=args.num_classes,
            pad100=args.pad100, context=args.context, weights=args.weights,
        )  # fmt: skip
    optimize = {None: True, "auto": True}.get(args.optimize, args.optimize)
    result = compare_runtimes(
        model.eval(),
        parse_size(args.size, "--size"),
        args.calibration,
        _batches(args.onnx_batches),
        threads=args.threads or 2,
        warmup=args.warmup,
        repeat=args.repeat,
        optimize=optimize,
        **options,
    )
    for batch in sorted({r["batch"] for r in result["rows"]}):
        print(format_table([r for r in result["rows"] if r["batch"] == batch]) + "\n")
    print(format_int8_report(result["export"]))
    machine = result["machine"]
    print(f"\n{machine['cpu']} ({machine['isa']}), {args.threads or 2} threads, "
          f"torch {machine['torch']}")  # fmt: skip
    _write_json(args, result)
    return 0
