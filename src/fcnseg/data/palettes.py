"""Colour maps for label images, and reading / writing index PNGs.

A *palette* is a list of ``(r, g, b)`` tuples; entry ``i`` is the colour of class ``i``.
Index ``255`` is the ignore label everywhere in fcnseg and is drawn black by
:func:`colorize`.

- :func:`voc_palette` is the PASCAL VOC colour map (the "bit-shuffle" map of the VOC
  devkit's ``VOClabelcolormap.m``): class ``i`` gets its colour by spreading the bits of
  ``i`` over the high bits of r, g and b. The VOC ``SegmentationClass`` PNGs are palette
  ("P" mode) images with exactly this palette, so their pixel values *are* the indices.
- :data:`CAMVID_PALETTE` is the 11-class colour map of the SegNet CamVid tutorial.
- :data:`CITYSCAPES_PALETTE` is the 19 train-id colours of the Cityscapes scripts,
  taken from ``torchvision.datasets.Cityscapes.classes`` rather than typed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcnseg.io.images import read_image

__all__ = [
    "CAMVID_PALETTE",
    "CITYSCAPES_PALETTE",
    "Palette",
    "colorize",
    "index_array",
    "load_index_png",
    "palette_for",
    "rgb_to_index",
    "save_index_png",
    "voc_palette",
]

Palette = list[tuple[int, int, int]]


def _bit_shuffle_colour(i: int) -> tuple[int, int, int]:
    # VOCdevkit VOClabelcolormap.m: for each group of 3 bits of the label (lowest first),
    # bit 0 -> red, bit 1 -> green, bit 2 -> blue, written from the top bit down.
    r = g = b = 0
    shift = 7
    while i and shift >= 0:
        r |= (i & 1) << shift
        g |= ((i >> 1) & 1) << shift
        b |= ((i >> 2) & 1) << shift
        i >>= 3
        shift -= 1
    return r, g, b


def voc_palette(n: int = 256) -> Palette:
    """The PASCAL VOC colour map: ``n`` (default 256) distinct ``(r, g, b)`` colours.

    Entry 0 is black (background), 1 is (128, 0, 0) (aeroplane), ..., 255 is
    (224, 224, 192) (the "void" border colour of the VOC ground truth).
    """
    if not 0 < n <= 256:
        raise ValueError(f"voc_palette has 256 entries, asked for {n}")
    return [_bit_shuffle_colour(i) for i in range(n)]


def palette_for(num_classes: int) -> Palette:
    """A generic palette of ``num_classes`` distinct colours (the VOC map, extended).

    Up to 256 classes this is :func:`voc_palette`; beyond, the same bit-shuffle is
    continued over 24 bits so every class keeps a distinct colour.
    """
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if num_classes <= 256:
        return voc_palette(num_classes)
    if num_classes > 2**24:
        raise ValueError(f"at most 2**24 distinct colours, asked for {num_classes}")
    out = voc_palette(256)
    for i in range(256, num_classes):
        r = g = b = 0
        for bit in range(8):  # 8 groups of 3 bits cover 24-bit labels
            r |= ((i >> (3 * bit)) & 1) << (7 - bit)
            g |= ((i >> (3 * bit + 1)) & 1) << (7 - bit)
            b |= ((i >> (3 * bit + 2)) & 1) << (7 - bit)
        out.append((r, g, b))
    return out


# SegNet-Tutorial (alexgkendall/SegNet-Tutorial) colour code for the 11 CamVid classes:
# Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist.
CAMVID_PALETTE: Palette = [
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
]


def _cityscapes_train_palette() -> Palette:
    from torchvision.datasets import Cityscapes

    by_train_id = {c.train_id: tuple(c.color) for c in Cityscapes.classes if 0 <= c.train_id < 255}
    return [by_train_id[t] for t in range(len(by_train_id))]


CITYSCAPES_PALETTE: Palette = _cityscapes_train_palette()


def _as_numpy_mask(mask) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) label map, got shape {tuple(mask.shape)}")
    if not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"expected an integer label map, got dtype {mask.dtype}")
    return mask


def colorize(mask, palette: Sequence[Sequence[int]], ignore_index: int = 255) -> np.ndarray:
    """Colour a label map.

    Args:
        mask: ``(H, W)`` (or ``(1, H, W)``) integer tensor or array of class indices.
        palette: colours, entry ``i`` for class ``i``.
        ignore_index: drawn black (as is any index the palette does not cover).

    Returns:
        ``uint8`` numpy array ``(H, W, 3)``.
    """
    m = _as_numpy_mask(mask).astype(np.int64)
    if m.size and m.min() < 0:
        raise ValueError("label map has negative values")
    size = max(256, int(m.max()) + 1 if m.size else 0)
    lut = np.zeros((size, 3), dtype=np.uint8)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:size]
    lut[: len(pal)] = pal
    if 0 <= ignore_index < size:
        lut[ignore_index] = 0
    return lut[m]


def save_index_png(mask, path: str | Path, palette: Sequence[Sequence[int]] | None = None) -> None:
    """Write a label map as a palette ("P" mode) PNG, pixel value = class index.

    Viewers show the colours of ``palette`` (default :func:`voc_palette`); readers that
    take the raw values (:func:`load_index_png`, the VOC tools) get the indices back.

    Raises:
        ValueError: values outside ``0..255`` (a PNG palette holds 256 entries).
    """
    m = _as_numpy_mask(mask)
    if m.size and (m.min() < 0 or m.max() > 255):
        raise ValueError("index PNGs hold values 0..255")
    img = Image.fromarray(m.astype(np.uint8), mode="P")
    pal = np.zeros((256, 3), dtype=np.uint8)
    src = np.asarray(palette if palette is not None else voc_palette(), dtype=np.uint8)
    src = src.reshape(-1, 3)[:256]
    pal[: len(src)] = src
    img.putpalette(pal.reshape(-1).tolist())
    img.save(str(path), format="PNG")


def index_array(img: Image.Image) -> np.ndarray | None:
    """The label values of a single-channel image (``P`` as palette indices, ``L``, ``LA``'s
    ``L``, ``I``, ``I;16*``) as ``np.int64`` ``(H, W)``; ``None`` for colour images."""
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int64)
    if img.mode == "LA":
        return np.asarray(img.getchannel("L")).astype(np.int64)
    return None


def load_index_png(path: str | Path) -> np.ndarray:
    """Read a single-channel label PNG (mode "P", "L", "I" or "I;16") as indices.

    A palette image is read as its palette *indices*, not its colours (this is how the
    VOC ``SegmentationClass`` PNGs store labels).

    Returns:
        ``np.int64`` array ``(H, W)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an RGB(A) image (use :func:`rgb_to_index` with a palette), or a file
            that is not a readable image (truncated, corrupt, over the pixel limit).
    """
    img = read_image(path, "mask")
    labels = index_array(img)
    if labels is not None:
        return labels
    raise ValueError(
        f"{path}: mask has mode {img.mode!r}; expected a single-channel index PNG "
        f"(mode 'L') or a palette PNG (mode 'P')"
    )


def rgb_to_index(
    rgb: np.ndarray, palette: Sequence[Sequence[int]], source: str = "mask"
) -> np.ndarray:
    """Map an ``(H, W, 3)`` colour mask to class indices through ``palette``.

    Raises:
        ValueError: a colour that is not in the palette (``source`` names the file).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"{source}: expected an (H, W, 3) colour mask, got {rgb.shape}")
    rgb = rgb[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal_code, kind="stable")
    sorted_codes = pal_code[order]
    pos = np.clip(np.searchsorted(sorted_codes, code), 0, len(sorted_codes) - 1)
    found = sorted_codes[pos] == code
    if not found.all():
        bad = np.unique(code[~found])[:5].tolist()  # plain ints: "(1, 2, 3)", not np.int64
        colours = ", ".join(str(((c >> 16) & 255, (c >> 8) & 255, c & 255)) for c in bad)
        raise ValueError(f"{source}: colours not in the palette: {colours}")
    return order[pos].astype(np.int64)
