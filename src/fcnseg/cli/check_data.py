"""``fcnseg check-data --dataset NAME --root DIR [--split train,val] ...``: validate every pair.

Calls :func:`fcnseg.data.validation.check_splits` and prints its summary: pairs per split,
problems per kind, the first 20 problem lines (``<file>: <problem>``). Exit code 0 when
the data is clean, 2 when a problem was found.
"""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset name (folder, camvid, voc, ...)")
    parser.add_argument("--root", required=True, help="the dataset folder")
    parser.add_argument(
        "--split", default="train,val", help="comma-separated splits to check (default train,val)"
    )
    parser.add_argument(
        "--num-classes",
        type=_positive_int,
        default=None,
        help="valid labels are 0..N-1 (default: the dataset's class list)",
    )
    parser.add_argument(
        "--model-min-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="report images whose short side is below N px (the model's minimum input)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=_positive_int,
        default=None,
        metavar="N",
        help="refuse images with more than N pixels (default: PIL's limit, 89,478,485)",
    )
    parser.add_argument("--max-lines", type=int, default=20, help="problem lines to print")
    parser.add_argument("--no-progress", action="store_true", help="no progress counter")


def run(args: argparse.Namespace) -> int:
    from fcnseg.data.validation import check_splits, set_max_image_pixels

    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not splits:
        raise ValueError(f"--split {args.split!r} names no split")
    previous = None
    if args.max_image_pixels is not None:
        previous = set_max_image_pixels(args.max_image_pixels)
    try:
        report = check_splits(
            args.dataset,
            args.root,
            splits,
            num_classes=args.num_classes,
            min_size=args.model_min_size,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    finally:
        if args.max_image_pixels is not None:
            set_max_image_pixels(previous)
    print(f"check-data: {args.dataset} at {args.root}")
    print(report.summary(max_lines=args.max_lines))
    return 0 if report.ok else 2
