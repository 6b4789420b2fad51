"""``fcnseg predict --checkpoint CKPT INPUTS... --out DIR``: label images with a trained model.

For every input image writes ``DIR/<stem>.png``: an index PNG of the image's size whose pixel
values are the class indices and whose embedded palette colours them (viewers show colours,
``fcnseg.data.load_index_png`` reads indices). ``--overlay`` adds ``<stem>_overlay.png`` (the
colours blended over the image, a legend of the classes present below it), ``--side-by-side``
adds ``<stem>_side.png`` (image | colours).
Inputs are files, folders and globs; images are decoded by a DataLoader and batched when they
share a size. ``--onnx FILE`` runs an fcnseg ONNX export (float32 or int8, ``fcnseg export``)
with ONNX Runtime on the CPU instead of a checkpoint; ``--aoti FILE`` an AOTInductor package
(``fcnseg export --format aoti``), on images of the one size it was compiled for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fcnseg.cli.precision_option import add_precision_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="an fcnseg checkpoint or .safetensors")
    source.add_argument("--onnx", help="an fcnseg ONNX export (fp32 or int8), run by ONNX Runtime")
    source.add_argument("--aoti", help="an AOTInductor package (fcnseg export --format aoti)")
    parser.add_argument("--threads", type=int, default=2, help="--onnx: intra-op threads (2)")
    parser.add_argument("inputs", nargs="+", metavar="INPUTS", help="images, folders or globs")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="weight of the colours in the overlay (0..1)"
    )
    parser.add_argument(
        "--side-by-side", action="store_true", help="also write <stem>_side.png (image | labels)"
    )
    parser.add_argument("--tta", help="test-time augmentation, e.g. flip,0.75,1.0,1.25")
    parser.add_argument("--window", type=int, help="sliding-window tile size in pixels")
    parser.add_argument("--overlap", type=float, default=0.33, help="tile overlap (0..1)")
    parser.add_argument("--batch-size", type=int, default=1, help="same-size images per pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_precision_argument(parser)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--low-memory",
        action="store_true",
        help="CPU: map the checkpoint's weights from disk and keep them out of the resident "
        "set between layers (VGG16 FCN-8s on a 500x500 image: 1.1 instead of 1.6 GiB; "
        "python -m benchmarks.predict_memory)",
    )


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * colours + (1 - alpha) * image``, uint8 (H, W, 3)."""
    mixed = alpha * colours.astype(np.float32) + (1.0 - alpha) * image.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _check_stems(paths: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ValueError(
                f"{seen[p.stem]} and {p} would both be written as {p.stem}.png; "
                "predict them into different --out folders"
            )
        seen[p.stem] = p


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from fcnseg.data.palettes import colorize, save_index_png
    from fcnseg.engine.checkpoint import load_model
    from fcnseg.inference import expand_inputs, iter_predict, model_palette
    from fcnseg.viz import classes_present, with_legend

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    paths = expand_inputs(args.inputs)
    _check_stems(paths)
    if args.onnx:
        from fcnseg.export.int8 import OnnxRuntimeModel

        model, fast, args.device = OnnxRuntimeModel(args.onnx, threads=args.threads), False, "cpu"
    elif args.aoti:
        from fcnseg.export.aoti import AotiModel

        model, fast, args.device = AotiModel(args.aoti), False, "cpu"
    else:
        model, fast = load_model(args.checkpoint, mmap=args.low_memory), True
    if model.num_classes > 256:
        raise ValueError(f"{model.num_classes} classes do not fit an index PNG (at most 256)")
    palette = model_palette(model)
    names = getattr(model, "class_names", None) or [str(i) for i in range(model.num_classes)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictions = iter_predict(
        model,
        paths,
        batch_size=args.batch_size,
        device=args.device,
        tta=args.tta,
        window=args.window,
        overlap=args.overlap,
        precision=args.precision,
        progress=not args.no_progress,
        num_workers=args.workers,
        low_memory=args.low_memory and fast,
        fast=fast,
    )
    written = 0
    for p in predictions:
        stem = paths[p.index].stem
        save_index_png(p.labels, out / f"{stem}.png", palette)
        if args.overlay or args.side_by_side:
            image = p.image.permute(1, 2, 0).numpy()
            colours = colorize(p.labels, palette)
            if args.overlay:
                present = classes_present([p.labels], len(palette))
                with_legend(overlay(image, colours, args.alpha), names, palette, present).save(
                    out / f"{stem}_overlay.png"
                )
            if args.side_by_side:
                Image.fromarray(np.concatenate([image, colours], axis=1)).save(
                    out / f"{stem}_side.png"
                )
        written += 1
    print(f"predicted {written} image(s) -> {out}")
    return 0
