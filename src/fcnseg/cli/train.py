"""``fcnseg train --config FILE [--set key=value ...] [--resume] [--nproc N]``: runs
``engine.train``.

Distributed: ``torchrun --nproc-per-node N -m fcnseg train ...`` runs one process per rank
(see docs/distributed.md); ``--nproc N`` is a shortcut that launches exactly that on this
machine (``torchrun --standalone``). Only rank 0 prints the summary. A rank that fails prints
``fcnseg train: rank R: ...`` and exits non-zero; torchrun's agent then ends the others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from fcnseg.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="YAML recipe (see configs/); default: the embedded demo recipe (the staged "
        "FCN-32s -> 16s -> 8s on the generated shapes set, what `fcnseg demo` trains)",
    )
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
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train with N processes on this machine (launches torchrun --standalone "
        "--nproc-per-node N); data.batch_size stays the global batch",
    )


def _child_argv(args: argparse.Namespace) -> list[str]:
    """The command line each torchrun process runs (this one, without ``--nproc``)."""
    argv = ["train"] + (["--config", args.config] if args.config else [])
    for item in args.overrides:
        argv += ["--set", item]
    if args.resume:
        argv.append("--resume")
    if args.no_progress:
        argv.append("--no-progress")
    if getattr(args, "debug", False):
        argv.append("--debug")
    return argv


def _recipe(args: argparse.Namespace):
    """The recipe file with the overrides applied; without ``--config``, the embedded demo's."""
    from fcnseg.engine.demo import DEMO_RECIPE

    return load_config(args.config, args.overrides, default=DEMO_RECIPE)


def run(args: argparse.Namespace) -> int:
    from fcnseg.engine.distributed import (
        cleanup_distributed,
        dist_timeout,
        get_rank,
        is_dist,
        is_main_process,
        launch,
    )

    if args.nproc is not None:
        if "LOCAL_RANK" in os.environ:
            raise ValueError("--nproc launches torchrun: leave it out when already under torchrun")
        if args.nproc < 1:
            raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
        if args.nproc > 1:
            _recipe(args)  # a bad recipe fails once, here
            return launch(args.nproc, _child_argv(args))

    from torch.distributed.elastic.multiprocessing.errors import record

    from fcnseg.engine import train

    cfg = _recipe(args)
    if "TORCHELASTIC_ERROR_FILE" in os.environ:
        # under torchrun: the failing rank's traceback goes into the job's failure summary
        train = record(train)
    try:
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except Exception as e:
        if is_dist():
            # Name the rank: torchrun interleaves every process's stderr. No clean-up: the
            # other ranks may be stuck in a collective; exiting non-zero makes torchrun's
            # agent end them.
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(
                f"fcnseg train: rank {get_rank()}: {type(e).__name__}: {first} (collectives "
                f"wait at most {dist_timeout().total_seconds():g} s: FCNSEG_DIST_TIMEOUT)",
                file=sys.stderr,
                flush=True,
            )
        raise
    main = is_main_process()
    cleanup_distributed()
    if main:
        metrics = summary.get("metrics") or {}
        short = {k: round(metrics[k], 4) for k in ("mean_iou", "pixel_acc") if k in metrics}
        print(
            f"done: step {summary.get('step')} ({summary.get('stop_reason')}); "
            f"val {json.dumps(short)}; checkpoints in {summary.get('out')}"
        )
    return 0
