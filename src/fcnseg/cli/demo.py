"""``fcnseg demo``: train FCN-32s -> 16s -> 8s on the embedded shapes set (plus the controls
that split each gain into skip and extra steps), evaluate, write a report and figures."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fcnseg.engine.demo import DEFAULT_CONTROLS, DEMO_SECONDS

    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEMO_SECONDS,
        help=f"wall-time budget of the whole demo (default {DEMO_SECONDS:g}); the runs share "
        "it and every learning-rate schedule ends within it",
    )
    parser.add_argument(
        "--no-time-limit",
        action="store_true",
        help="bound the runs by their recipe steps and minutes only",
    )
    parser.add_argument("--max-steps", type=int, help="cap each run's steps (quick check)")
    parser.add_argument(
        "--controls",
        default=",".join(DEFAULT_CONTROLS),
        help="control runs, comma-separated: continued (the coarser model trained on for the "
        "next stage's steps: skip vs extra steps), alone (FCN-8s from scratch for the whole "
        "line's steps; doubles the time), or none (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.demo import run_demo

    if not args.no_time_limit and not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    result = run_demo(
        out=args.out,
        budget_seconds=None if args.no_time_limit else args.seconds,
        max_steps=args.max_steps,
        controls=[c.strip() for c in args.controls.split(",") if c.strip() not in ("", "none")],
        progress=not args.no_progress,
    )
    print(result["table"])
    print(f"wrote {result['out']}/metrics.json, report.md, figure.png, curves.png")
    print(f"demo finished in {result['seconds']:.0f} s")
    return 0
