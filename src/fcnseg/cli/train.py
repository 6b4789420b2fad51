"""``fcnseg train --config FILE [--set key=value ...] [--resume]``: runs ``engine.train``."""

from __future__ import annotations

import argparse
import json

from fcnseg.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.max_steps=100 (repeatable)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from <out>/last.pt where it stopped"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine import train

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    metrics = summary.get("metrics") or {}
    short = {k: round(metrics[k], 4) for k in ("mean_iou", "pixel_acc") if k in metrics}
    print(
        f"done: step {summary.get('step')} ({summary.get('stop_reason')}); "
        f"val {json.dumps(short)}; checkpoints in {summary.get('out')}"
    )
    return 0
