"""``shapes``: the embedded synthetic segmentation set (generated on the fly, no files).

Every sample is a deterministic function of ``(seed, split, index)``; ``train``, ``val``
and ``test`` draw from disjoint random streams (``numpy.random.SeedSequence([seed,
split_code, index])``), so no image is shared between splits.

Classes (index: name, palette colour; the object's own colour is drawn around the hue)::

    0 background  (0, 0, 0)         grey, low-saturation textured clutter
    1 red         (230, 25, 75)     hue   0 deg
    2 yellow      (255, 225, 25)    hue  60 deg
    3 green       (60, 180, 75)     hue 120 deg
    4 cyan        (70, 240, 240)    hue 180 deg
    5 blue        (0, 90, 200)      hue 240 deg
    6 magenta     (240, 50, 230)    hue 300 deg

The design makes a small network learn the classes quickly and leaves the FCN strides
to decide the score:

- **Local evidence names the class.** An object's class is its hue family (hue within
  +-20 deg of the class hue, saturation 0.5-1, brightness 0.45-1), so a few pixels of it
  tell its class; its outline (disk, ellipse, rotated rectangle or triangle) and its
  texture (flat, shading gradient, stripes or speckle in brightness) are drawn at random
  for every class and carry no class information. Background is grey with a faint tint
  (saturation <= 0.2), smooth low-frequency shading, grain and soft grey blobs.
- **Objects of three sizes make the strides matter.** Every image holds 1-3 large
  (radius 15-28 % of the side), 2-4 medium (6-12 %) and 3-5 small (2.5-5 %) objects:
  on a 128x128 image a small one is 6-13 px across, less than a stride-16 cell, so
  FCN-32s (a 4x4 score map) blurs it away, FCN-16s finds it roughly and FCN-8s outlines
  it. Later objects occlude earlier ones (the mask follows the painting order).
- **Noise so it is not a lookup.** Per-pixel colour noise, brightness texture and hue
  jitter overlap the classes' colour ranges near their borders.

Generation is vectorised numpy on each object's bounding box only (about 1 ms per
128x128 image on one core).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fcnseg.data.base import SegmentationDataset

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_HUES",
    "SHAPES_PALETTE",
    "SIZE_BANDS",
    "ShapesSegmentation",
    "generate_shapes_sample",
]

SHAPES_CLASSES = ["background", "red", "yellow", "green", "cyan", "blue", "magenta"]
SHAPES_PALETTE = [
    (0, 0, 0),
    (230, 25, 75),
    (255, 225, 25),
    (60, 180, 75),
    (70, 240, 240),
    (0, 90, 200),
    (240, 50, 230),
]
#: hue (degrees) of each object class, index 1..6
SHAPES_HUES = (0.0, 60.0, 120.0, 180.0, 240.0, 300.0)
#: (name, radius range as a fraction of the image side, objects per image)
SIZE_BANDS = (
    ("large", (0.15, 0.28), (1, 3)),
    ("medium", (0.06, 0.12), (2, 4)),
    ("small", (0.025, 0.05), (3, 5)),
)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTHS = {"train": 512, "val": 64, "test": 64}

_HUE_JITTER = 20.0  # degrees either side of the class hue (classes are 60 deg apart)
_OUTLINES = ("disk", "ellipse", "rectangle", "triangle")


@lru_cache(maxsize=64)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights: upsample a coarse grid to n_out samples."""
    pos = np.linspace(0.0, n_in - 1.0, n_out, dtype=np.float64)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, max(n_in - 2, 0))
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    if n_in > 1:
        m[np.arange(n_out), lo + 1] += frac
    return m


def _smooth_field(rng: np.random.Generator, h: int, w: int, amp: float) -> np.ndarray:
    """(h, w) smooth noise: a coarse random grid, bilinearly upsampled."""
    gh, gw = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    grid = rng.normal(0.0, amp, size=(gh, gw)).astype(np.float32)
    return _interp_matrix(h, gh) @ grid @ _interp_matrix(w, gw).T


def _rgb(hue_deg: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, sat, val), dtype=np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float image in about [0, 1]: tinted grey shading, grain, grey blobs."""
    grey = rng.uniform(0.25, 0.75) + _smooth_field(rng, h, w, 0.12)
    ys = np.arange(h, dtype=np.float32)[:, None] / h - 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] / w - 0.5
    a = rng.uniform(0, 2 * math.pi)
    grey = grey + rng.uniform(0.0, 0.3) * (xs * math.cos(a) + ys * math.sin(a))
    for _ in range(int(rng.integers(0, 4))):  # soft grey blobs: clutter of the background class
        sigma = rng.uniform(0.04, 0.15) * min(h, w)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        d2 = ((ys + 0.5) * h - cy) ** 2 + ((xs + 0.5) * w - cx) ** 2
        grey = grey + rng.uniform(-0.3, 0.3) * np.exp(-d2 / (2 * sigma * sigma))
    tint = _rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.2), 1.0)
    return grey[..., None] * tint


def _outline_mask(
    outline: str, rng: np.random.Generator, r: float, dy: np.ndarray, dx: np.ndarray
) -> np.ndarray:
    """Boolean mask of an outline of radius ``r`` centred at 0 on the offset grids."""
    th = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(th), math.sin(th)
    u = dx * c + dy * s
    v = dy * c - dx * s
    if outline == "disk":
        return dx * dx + dy * dy <= r * r
    if outline == "ellipse":
        q = rng.uniform(0.5, 0.85)
        return (u / r) ** 2 + (v / (q * r)) ** 2 <= 1.0
    if outline == "rectangle":
        q = rng.uniform(0.55, 1.0)
        return (np.abs(u) <= 0.85 * r) & (np.abs(v) <= 0.85 * q * r)
    if outline == "triangle":
        m = np.ones(np.broadcast_shapes(dy.shape, dx.shape), dtype=bool)
        for k in range(3):  # three half-planes at distance inradius = r / 2
            phi = th + k * 2 * math.pi / 3
            m &= dx * math.cos(phi) + dy * math.sin(phi) <= 0.5 * r
        return m
    raise ValueError(f"unknown outline {outline!r}")


def _texture(rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """(h, w) brightness multiplier of an object: flat, gradient, stripes or speckle."""
    kind = int(rng.integers(0, 4))
    shape = (dy.shape[0], dx.shape[1])
    if kind == 0:
        return np.ones(shape, dtype=np.float32)
    a = rng.uniform(0, 2 * math.pi)
    t = dx * math.cos(a) + dy * math.sin(a)
    if kind == 1:
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return 1.0 - rng.uniform(0.2, 0.4) * t
    if kind == 2:
        return 1.0 - rng.uniform(0.1, 0.25) * (0.5 + 0.5 * np.sin(rng.uniform(0.6, 1.6) * t))
    return 1.0 - rng.uniform(0.0, 0.25, shape).astype(np.float32)


def _paint(rng, img, mask, cls: int, r: float, cy: float, cx: float) -> None:
    """Paint one object of class ``cls`` (1..6) into ``img`` and ``mask`` (in place)."""
    h, w = mask.shape
    e = r + 2.0
    y0, y1 = max(int(cy - e), 0), min(int(math.ceil(cy + e)) + 1, h)
    x0, x1 = max(int(cx - e), 0), min(int(math.ceil(cx + e)) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    m = _outline_mask(_OUTLINES[int(rng.integers(len(_OUTLINES)))], rng, r, dy, dx)
    if not m.any():
        return
    hue = SHAPES_HUES[cls - 1] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
    colour = _rgb(hue, rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))
    tex = _texture(rng, dy, dx)[..., None] * colour
    img[y0:y1, x0:x1][m] = tex[m]
    mask[y0:y1, x0:x1][m] = cls


def generate_shapes_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 128),
    max_objects: int = 12,
    distractors: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one sample with ``rng``.

    Args:
        rng: the sample's generator (the only source of randomness).
        size: ``(H, W)``.
        max_objects: keep at most this many objects (the small ones are dropped first).
        distractors: grey blobs in the background (else a plain shaded background).

    Returns:
        ``(image uint8 (H, W, 3), mask uint8 (H, W))`` with mask values in ``0..6``.
    """
    h, w = int(size[0]), int(size[1])
    base = min(h, w)
    img = _background(rng, h, w) if distractors else np.full((h, w, 3), 0.5, np.float32)
    mask = np.zeros((h, w), dtype=np.uint8)
    objects: list[tuple[int, float]] = []
    for _, (lo, hi), (n_lo, n_hi) in SIZE_BANDS:
        for _ in range(int(rng.integers(n_lo, n_hi + 1))):
            r = max(rng.uniform(lo, hi) * base, 2.0)
            objects.append((int(rng.integers(1, len(SHAPES_CLASSES))), r))
    # Large first, so small objects sit on top and are never fully hidden.
    for cls, r in objects[: max(int(max_objects), 0)]:
        cy, cx = rng.uniform(0.05 * h, 0.95 * h), rng.uniform(0.05 * w, 0.95 * w)
        _paint(rng, img, mask, cls, r, cy, cx)
    noise = rng.normal(0.0, rng.uniform(0.015, 0.05), (h, w, 3)).astype(np.float32)
    img += noise
    img *= np.float32(255.0)
    np.clip(img + np.float32(0.5), 0.0, 255.0, out=img)
    return img.astype(np.uint8), mask


class ShapesSegmentation(SegmentationDataset):
    """The synthetic ``shapes`` set: background + 6 colour classes (see the module doc).

    Args:
        root: unused (no files); accepted so every dataset builds the same way.
        split: ``train``, ``val`` or ``test`` (disjoint random streams).
        transforms: ``callable(image, mask)`` applied to each sample.
        size: ``(H, W)`` of every image, default ``(128, 128)``.
        length: number of samples (default 512 for train, 64 for val / test).
        seed: base seed; sample ``i`` is a pure function of ``(seed, split, i)``.
        max_objects: at most this many objects per image (default 12, all of them).
        distractors: grey blobs and shading in the background.

    Raises:
        ValueError: an unknown split, a size under 16x16, a negative length or seed.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transforms: Callable | None = None,
        size: tuple[int, int] | int = (128, 128),
        length: int | None = None,
        seed: int = 0,
        max_objects: int = 12,
        distractors: bool = True,
    ) -> None:
        if split not in SPLIT_CODES:
            raise ValueError(f"shapes: split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
        super().__init__(None, split, transforms)
        if isinstance(size, int):
            size = (size, size)
        self.size = (int(size[0]), int(size[1]))
        if min(self.size) < 16:
            raise ValueError(f"shapes: size must be at least 16x16, got {self.size}")
        self.length = int(DEFAULT_LENGTHS[split] if length is None else length)
        if self.length < 0:
            raise ValueError(f"shapes: length must be >= 0, got {self.length}")
        if int(seed) < 0:
            raise ValueError(f"shapes: seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.max_objects = int(max_objects)
        self.distractors = bool(distractors)
        self._set_classes(SHAPES_CLASSES, SHAPES_PALETTE)

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` (independent of any global random state)."""
        return np.random.default_rng(
            np.random.SeedSequence([self.seed, SPLIT_CODES[self.split], int(index)])
        )

    def load_sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        img, mask = generate_shapes_sample(
            self.rng(index), self.size, self.max_objects, self.distractors
        )
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return image, torch.from_numpy(mask).to(torch.int64), f"shapes[{self.split}][{index}]"

    def load_mask(self, path: str | Path) -> torch.Tensor:
        raise NotImplementedError("shapes has no mask files; index the dataset instead")
