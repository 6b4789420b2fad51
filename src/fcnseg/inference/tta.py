"""Test-time augmentation: horizontal flips and scales, averaged in probability space at the
input's resolution (in float32 whatever precision the views ran in)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["parse_tta", "tta_logits"]


def parse_tta(tta: Sequence | str | None) -> tuple[tuple[float, ...], bool]:
    """``["flip", 0.75, 1.0, 1.25]`` or ``"flip,0.75,1.0,1.25"`` -> ``((0.75, 1.0, 1.25), True)``.

    No scale given means ``(1.0,)``. Raises ValueError on an unknown item or a scale <= 0.
    """
    if tta is None:
        return (1.0,), False
    items = [s.strip() for s in tta.split(",") if s.strip()] if isinstance(tta, str) else tta
    flip, scales = False, []
    for item in items:
        if isinstance(item, str) and item.lower() == "flip":
            flip = True
            continue
        try:
            scale = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"tta: {item!r} is neither 'flip' nor a scale") from None
        if not scale > 0:
            raise ValueError(f"tta: scales must be > 0, got {scale}")
        scales.append(scale)
    return tuple(scales) or (1.0,), flip


def tta_logits(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Class scores of ``images`` (N, 3, H, W), averaged over scales and flips.

    Each view is the input resized (bilinear) by a scale and optionally mirrored; its logits
    are mirrored back and resized (bilinear) to (H, W), turned into softmax probabilities and
    averaged. Returns ``(N, C, H, W)``: the plain logits when there is a single view (scale 1,
    no flip), else the log of the averaged probabilities (so ``softmax`` of the result is the
    average probability and ``argmax`` the TTA prediction).
    """
    height, width = images.shape[-2:]
    views = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
    if views == [(1.0, False)]:
        return model(images)
    prob_sum = None
    for scale, mirrored in views:
        x = images
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if mirrored:
            x = x.flip(-1)
        logits = model(x).float()
        if mirrored:
            logits = logits.flip(-1)
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        probs = logits.softmax(1)
        prob_sum = probs if prob_sum is None else prob_sum + probs
    return (prob_sum / len(views)).clamp_min(1e-12).log()
