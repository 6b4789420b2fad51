"""``fcnseg heatmap --backbone vgg16 [--weights W] IMAGE --out FILE``: Section 3.1 made visible.

A torchvision ImageNet classifier is convolutionalized (``fcnseg.convolutionalize``: its fully
connected layers become convolutions), run on the whole image, and its class scores, a coarse
stride-32 map, are turned into probabilities (softmax over the 1000 classes at each location),
upsampled bilinearly to the image and drawn as a colour heatmap over it: the paper's Figure 2
("convolutionalization ... produces a heatmap"). One panel per class: ``--class K``, or the
``--topk`` classes whose probability peaks highest anywhere in the image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

_MIN_SIDE = 224  # ImageNet classifiers' training size; VGG's fc6 needs >= 193 anyway
_TITLE_H = 18
_GAP = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fcnseg.models import (
        list_backbones,  # every registered backbone is a torchvision classifier
    )

    parser.add_argument("image", metavar="IMAGE", help="the image")
    parser.add_argument("--backbone", default="vgg16", choices=list_backbones(), help="classifier")
    parser.add_argument(
        "--weights",
        help="ImageNet weights: a torchvision enum name (IMAGENET1K_V1, DEFAULT) or a "
        "torchvision state-dict file (default: random init, a meaningless heatmap)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--class", type=int, dest="class_index", help="ImageNet class index K")
    which.add_argument("--topk", type=int, default=3, help="the k most likely classes (3)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (0..1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--out", required=True, help="the PNG/JPEG to write")


def category_names(backbone: str, weights: str | None) -> list[str] | None:
    """ImageNet category names from torchvision's weight-enum metadata (no download), or None
    when ``weights`` is not an enum name (a file, or no weights)."""
    import torchvision

    if weights is None:
        return None
    try:
        enum = torchvision.models.get_model_weights(backbone)
        chosen = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except (KeyError, ValueError):
        return None
    return list(chosen.meta.get("categories") or []) or None


def colormap(values: np.ndarray) -> np.ndarray:
    """The 'jet' colour ramp (blue -> cyan -> yellow -> red) for values in [0, 1]: uint8 (..., 3).

    Piecewise-linear channels: red ``1.5 - |4v - 3|``, green ``1.5 - |4v - 2|``,
    blue ``1.5 - |4v - 1|``, each clipped to [0, 1].
    """
    v = np.clip(values.astype(np.float32), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    rgb = np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


def class_probabilities(net, image, device) -> torch.Tensor:
    """Softmax class probabilities of the convolutionalized ``net`` on a uint8 image (3, H, W),
    upsampled bilinearly to (H, W): float tensor (1000, H, W) on the CPU."""
    import torch
    import torch.nn.functional as F

    from fcnseg.data.transforms import DEFAULT_PREPROCESS, Normalize

    height, width = image.shape[-2:]
    x = Normalize(DEFAULT_PREPROCESS)(image)[None].to(device)
    if min(height, width) < _MIN_SIDE:  # too small for fc6's 7x7 window: enlarge for the net
        scale = _MIN_SIDE / min(height, width)
        size = (round(height * scale), round(width * scale))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        probs = net(x).float().softmax(1)
        probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
    return probs[0].cpu()


def render(image: np.ndarray, panels: list[tuple[str, np.ndarray]], alpha: float):
    """input | one heatmap per class, each titled: an RGB ``PIL.Image``."""
    from PIL import Image, ImageDraw, ImageFont

    height, width = image.shape[:2]
    cells = [("input", image)]
    for title, prob in panels:
        peak = float(prob.max())
        norm = prob / peak if peak > 0 else prob  # the map's shape; the title gives the scale
        blended = alpha * colormap(norm).astype(np.float32) + (1 - alpha) * image
        cells.append((f"{title} (max p={peak:.2f})", np.round(blended).astype(np.uint8)))
    canvas = Image.new(
        "RGB",
        (len(cells) * (width + _GAP) + _GAP, height + _TITLE_H + _GAP),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, (title, cell) in enumerate(cells):
        x = _GAP + i * (width + _GAP)
        draw.text((x + 2, 3), _fit(draw, title, font, width - 4), fill=(20, 20, 20), font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(cell)), (x, _TITLE_H))
    return canvas


def _fit(draw, text: str, font, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def run(args: argparse.Namespace) -> int:
    from fcnseg.io import load_image, resolve_device
    from fcnseg.models import convolutionalize
    from fcnseg.models.backbones import torchvision_classifier

    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.weights is None:
        print(
            f"warning: no --weights: {args.backbone} is randomly initialised, so the heatmap "
            "is meaningless without trained weights (try --weights IMAGENET1K_V1)",
            file=sys.stderr,
        )
    device = resolve_device(args.device)
    image = load_image(args.image)
    net = convolutionalize(torchvision_classifier(args.backbone, args.weights)).eval().to(device)
    probs = class_probabilities(net, image, device)
    num_classes = probs.shape[0]
    names = category_names(args.backbone, args.weights)
    if args.class_index is not None:
        if not 0 <= args.class_index < num_classes:
            raise ValueError(f"--class must be in 0..{num_classes - 1}, got {args.class_index}")
        chosen = [args.class_index]
    else:
        if args.topk < 1:
            raise ValueError(f"--topk must be >= 1, got {args.topk}")
        peaks = probs.flatten(1).max(1).values
        chosen = peaks.topk(min(args.topk, num_classes)).indices.tolist()
    panels = []
    for k in chosen:
        name = names[k] if names and k < len(names) else f"class {k}"
        panels.append((name, probs[k].numpy()))
        label = f"{name} (class {k})" if names else name
        print(f"{label}: max probability {float(probs[k].max()):.3f}")
    figure = render(image.permute(1, 2, 0).numpy(), panels, args.alpha)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(f"heatmap -> {out}")
    return 0
