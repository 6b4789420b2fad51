"""``fcnseg demo``: train FCN-32s -> 16s -> 8s on the embedded shapes set, evaluate, report."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--minutes", type=float, help="total training time budget in minutes (default: recipe)"
    )
    parser.add_argument("--max-steps", type=int, help="cap each stage's steps (quick check)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.demo import run_demo

    result = run_demo(
        out=args.out,
        minutes=args.minutes,
        max_steps=args.max_steps,
        progress=not args.no_progress,
    )
    print(result["table"])
    print(f"wrote {result['out']}/metrics.json, report.md, figure.png")
    return 0
