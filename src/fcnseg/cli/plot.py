"""``fcnseg plot RUN_DIR [RUN_DIR ...] [--out FILE]``: learning curves of existing runs.

Draws training loss and val mean IU / boundary IoU against step (:func:`fcnseg.plots.
learning_curves`), the picture :class:`~fcnseg.engine.trainer.Trainer` writes as
``curves.png`` at the end of a run. One folder: that run, or the stages of a staged run one
after the other; several folders: one line per run, each from step 0. Needs matplotlib
(``pip install 'fcnseg[plots]'``); without it the command fails in one line (exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="training run folders (metrics.jsonl)"
    )
    parser.add_argument(
        "--out", help="the PNG to write (default RUN_DIR/curves.png; required for several)"
    )
    parser.add_argument("--title", help="figure title")


def run(args: argparse.Namespace) -> int:
    from fcnseg.plots import find_runs, learning_curves

    dirs = [Path(p) for p in args.runs]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such folder")
    if len(dirs) == 1:
        runs: dict[str, Path] | Path = dirs[0]
        out = Path(args.out) if args.out else dirs[0] / "curves.png"
    else:
        if not args.out:
            raise ValueError("several run folders: say where the picture goes with --out FILE")
        runs = {}
        for d in dirs:
            found = find_runs(d)
            # a staged folder among several runs: each stage is a line of its own
            for name, path in found.items():
                label = d.name if len(found) == 1 else f"{d.name}/{name}"
                runs[label] = path
        out = Path(args.out)
    written = learning_curves(runs, out, title=args.title)
    print(f"wrote {written}")
    return 0
