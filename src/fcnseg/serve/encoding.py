"""Label maps -> response bodies: index PNG, overlay PNG, per-class shares and masks.

- index PNG: palette ("P" mode) PNG, pixel value = class index, the palette colours it (what
  ``fcnseg predict`` writes and ``fcnseg.data.load_index_png`` reads back);
- overlay: the class colours blended over the image, RGB PNG;
- per-class masks: Hugging Face's image-segmentation answer, a list of
  ``{"label", "score", "mask"}`` with the mask a base64 PNG ("L" mode, 255 = the class);
  ``score`` is the class's share of the image's pixels (a semantic model has no per-segment
  confidence), ``index`` the class index.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from fcnseg.data.palettes import colorize

__all__ = ["class_masks", "class_shares", "index_png", "overlay_png"]


def _png(img: Image.Image, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def index_png(labels: torch.Tensor, palette: Sequence[Sequence[int]]) -> bytes:
    """``(H, W)`` int labels (0..255) -> palette PNG bytes of the same size."""
    m = labels.numpy().astype(np.uint8)
    img = Image.fromarray(m, mode="P")
    pal = np.zeros((256, 3), dtype=np.uint8)
    src = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    pal[: len(src)] = src
    img.putpalette(pal.reshape(-1).tolist())
    return _png(img)


def overlay_png(
    image: torch.Tensor, labels: torch.Tensor, palette: Sequence[Sequence[int]], alpha: float
) -> bytes:
    """``alpha * colours + (1 - alpha) * image`` as RGB PNG bytes.

    Args:
        image: ``uint8 (3, H, W)``.
        labels: ``(H, W)`` class indices.
        palette: colour of class ``i`` at entry ``i``.
        alpha: weight of the colours, in ``[0, 1]``.
    """
    colours = colorize(labels, palette).astype(np.float32)
    rgb = image.permute(1, 2, 0).numpy().astype(np.float32)
    mixed = np.clip(np.round(alpha * colours + (1.0 - alpha) * rgb), 0, 255).astype(np.uint8)
    return _png(Image.fromarray(mixed, mode="RGB"), compress_level=1)  # photos barely compress


def class_shares(labels: torch.Tensor, class_names: Sequence[str]) -> list[dict]:
    """The classes present: ``[{"index", "label", "score"}]``, ``score`` = pixel share.

    Ordered by class index; shares of the present classes sum to 1.
    """
    counts = torch.bincount(labels.reshape(-1), minlength=len(class_names))
    total = int(labels.numel())
    return [
        {"index": i, "label": _name(class_names, i), "score": int(c) / total}
        for i, c in enumerate(counts.tolist())
        if c > 0
    ]


def class_masks(labels: torch.Tensor, class_names: Sequence[str]) -> list[dict]:
    """:func:`class_shares` plus ``"mask"``: base64 PNG, 255 where the class is, else 0."""
    out = []
    for entry in class_shares(labels, class_names):
        mask = (labels == entry["index"]).numpy().astype(np.uint8) * 255
        png = _png(Image.fromarray(mask, mode="L"))
        out.append({**entry, "mask": base64.b64encode(png).decode("ascii")})
    return out


def _name(class_names: Sequence[str], i: int) -> str:
    return str(class_names[i]) if i < len(class_names) else str(i)
