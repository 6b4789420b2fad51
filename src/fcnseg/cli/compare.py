"""``fcnseg compare --checkpoints A B C IMAGE [--mask GT.png] --out FILE``: the paper's Figure 4.

Runs each checkpoint on the image and draws ``input | model A | model B | ... | ground truth``,
each column titled with the checkpoint's architecture (FCN-32s -> 16s -> 8s: coarse to fine),
with a legend naming the classes present, using :func:`fcnseg.viz.comparison_figure`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # ``--checkpoints A B C IMAGE``: argparse's "+" also swallows the positional IMAGE, so the
    # last value is taken as the image when IMAGE is not given separately.
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        required=True,
        metavar="CKPT",
        help="checkpoints, in column order, then the image",
    )
    parser.add_argument("image", nargs="?", metavar="IMAGE", help="the image")
    parser.add_argument("--mask", help="ground-truth index PNG for the last column")
    parser.add_argument("--out", required=True, help="the figure to write (PNG)")
    parser.add_argument("--tta", help="test-time augmentation, e.g. flip,0.75,1.0,1.25")
    parser.add_argument("--scale", type=int, default=1, help="integer enlargement of the figure")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")


def column_titles(configs: list[dict], paths: list[Path]) -> list[str]:
    """Each checkpoint's arch (``fcn8s/resnet18``-style only where needed to tell them apart);
    repeated titles get the file stem appended."""
    titles = [str(c.get("arch", p.stem)) for c, p in zip(configs, paths, strict=True)]
    if len(set(titles)) < len(titles):  # same arch twice: say which backbone
        titles = [f"{t}/{c.get('backbone')}" for t, c in zip(titles, configs, strict=True)]
    if len(set(titles)) < len(titles):  # still ambiguous: name the file
        titles = [f"{t} ({p.stem})" for t, p in zip(titles, paths, strict=True)]
    return titles


def run(args: argparse.Namespace) -> int:
    from fcnseg.data.palettes import load_index_png
    from fcnseg.engine.checkpoint import load_model
    from fcnseg.inference import model_palette, predict
    from fcnseg.io.images import load_image
    from fcnseg.viz import comparison_figure

    if args.scale < 1:
        raise ValueError(f"--scale must be >= 1, got {args.scale}")
    checkpoints = list(args.checkpoints)
    image_path = args.image
    if image_path is None:
        if len(checkpoints) < 2:
            raise ValueError("give the checkpoints, then the image: --checkpoints A B C IMAGE")
        image_path = checkpoints.pop()
    image = load_image(image_path)
    target = None
    if args.mask is not None:
        if not Path(args.mask).is_file():
            raise FileNotFoundError(f"{args.mask}: no such file")
        target = load_index_png(args.mask)
        if tuple(target.shape) != tuple(image.shape[-2:]):
            raise ValueError(
                f"{args.mask}: mask is {target.shape[0]}x{target.shape[1]} but "
                f"{image_path} is {image.shape[1]}x{image.shape[2]}"
            )
    paths = [Path(p) for p in checkpoints]
    models, masks = [], []
    for path in paths:
        model = load_model(path)
        masks.append(predict(model, [image], device=args.device, tta=args.tta)[0])
        models.append(model)
        model.cpu()  # free the GPU for the next one
    num_classes = {m.num_classes for m in models}
    if len(num_classes) > 1:
        raise ValueError(f"the checkpoints predict different numbers of classes: {num_classes}")
    titles = column_titles([m.config for m in models], paths)
    figure = comparison_figure(
        [image],
        {t: [m] for t, m in zip(titles, masks, strict=True)},
        [target] if target is not None else None,
        model_palette(models[0]),
        scale=args.scale,
        class_names=models[0].class_names,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(f"compared {len(models)} model(s): {', '.join(titles)} -> {out}")
    return 0
