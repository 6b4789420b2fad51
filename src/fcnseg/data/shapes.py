"""``shapes``: the embedded synthetic segmentation set (generated on the fly, no files).

Every sample is a deterministic function of ``(seed, split, index)``; ``train``, ``val``
and ``test`` draw from disjoint random streams (``numpy.random.SeedSequence([seed,
split_code, index])``), so no image is shared between splits.

Classes (index: name, palette colour)::

    0 background  (0, 0, 0)
    1 disk        (230, 25, 75)     filled circle
    2 square      (60, 180, 75)     filled square, any rotation
    3 triangle    (255, 225, 25)    filled equilateral triangle, any rotation
    4 ring        (0, 130, 200)     annulus, from thick to thin (>= 1.5 px wide)
    5 cross       (245, 130, 48)    plus sign with thin arms, any rotation
    6 bar         (145, 30, 180)    long thin rectangle (aspect >= 4), any rotation

The design makes the task need what FCNs are about:

- **Shape is the only class cue.** Every object's colour and texture (flat, gradient,
  stripes or speckle) come from one distribution shared by all classes, so a pixel's
  colour says nothing about its class: the network must look at the context (the
  shape) around it: large receptive fields.
- **Boundaries need fine strides.** Sizes vary log-uniformly from a few pixels to a
  quarter of the image; rings, crosses and bars have parts 2-6 px thin; 3-8 objects
  per image overlap and later objects occlude earlier ones (the mask follows the
  painting order), so the labels have detailed, non-convex boundaries.
- **Background is not flat.** A random colour gradient, smooth low-frequency colour
  noise, sometimes a faint grating, pixel noise, soft-edged blobs, and crisp "star"
  distractors with 5-7 lobes (labelled background: they share the objects' colour and
  texture distribution but no class shape, and 5+ lobes never read as a cross).

Generation is vectorised numpy on each object's bounding box only (roughly 1-2 ms per
128x128 image on one core).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fcnseg.data.base import SegmentationDataset

__all__ = ["SHAPES_CLASSES", "SHAPES_PALETTE", "ShapesSegmentation", "generate_shapes_sample"]

SHAPES_CLASSES = ["background", "disk", "square", "triangle", "ring", "cross", "bar"]
SHAPES_PALETTE = [
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
]
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTHS = {"train": 512, "val": 64, "test": 64}

_DISK, _SQUARE, _TRIANGLE, _RING, _CROSS, _BAR = range(1, 7)
_STAR = -1  # distractor, labelled background


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


@lru_cache(maxsize=16)
def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    return ys, xs


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    ys, xs = _coords(h, w)
    c0, c1 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
    a = rng.uniform(0, 2 * math.pi)
    t = (xs * math.cos(a) + ys * math.sin(a)) / float(h + w)
    t = t - t.min()
    t = t / max(float(t.max()), 1e-6)
    # Smooth low-frequency colour noise: a coarse random grid, bilinearly upsampled.
    gh, gw = int(rng.integers(3, 8)), int(rng.integers(3, 8))
    grid = rng.normal(0.0, 0.12, size=(gh, gw * 3)).astype(np.float32)
    low = _interp_matrix(h, gh) @ grid  # (h, gw*3)
    low = low.reshape(h, gw, 3).transpose(0, 2, 1) @ _interp_matrix(w, gw).T  # (h, 3, w)
    img = low.transpose(0, 2, 1) + c0
    img += t[..., None] * (c1 - c0)
    if rng.random() < 0.35:  # a faint grating: texture, never a crisp edge
        f = rng.uniform(0.05, 0.4)
        b = rng.uniform(0, 2 * math.pi)
        g = np.sin(f * (xs * math.cos(b) + ys * math.sin(b)) + rng.uniform(0, 6.3))
        img = img + (rng.uniform(0.03, 0.1) * g)[..., None] * rng.choice([-1.0, 1.0], 3)
    return img.astype(np.float32, copy=False)


def _soft_blob(rng: np.random.Generator, img: np.ndarray, base: int) -> None:
    """Blend a soft-edged (Gaussian alpha) coloured blob into the background."""
    h, w = img.shape[:2]
    sigma = rng.uniform(0.05, 0.18) * base
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    r = int(3 * sigma) + 1
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    alpha = rng.uniform(0.3, 0.7) * np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    colour = rng.random(3, dtype=np.float32)
    patch = img[y0:y1, x0:x1]
    patch += alpha[..., None] * (colour - patch)


def _shape_mask(kind: int, rng: np.random.Generator, r: float, dy: np.ndarray, dx: np.ndarray):
    """Boolean mask of a shape of size ``r`` centred at 0 on the offset grids ``dy, dx``."""
    th = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(th), math.sin(th)
    u = dx * c + dy * s
    v = dy * c - dx * s
    if kind == _DISK:
        return dx * dx + dy * dy <= r * r
    if kind == _RING:
        width = rng.uniform(max(1.5, 0.12 * r), max(1.5, 0.55 * r))
        inner = max(r - width, 2.0)
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= inner * inner)
    if kind == _SQUARE:
        a = 0.85 * r
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    if kind == _TRIANGLE:
        m = np.ones(np.broadcast_shapes(dy.shape, dx.shape), dtype=bool)
        for k in range(3):  # three half-planes at distance inradius = r / 2
            phi = th + k * 2 * math.pi / 3
            m &= dx * math.cos(phi) + dy * math.sin(phi) <= 0.5 * r
        return m
    if kind == _CROSS:
        half_w = rng.uniform(max(1.0, 0.1 * r), max(1.0, 0.28 * r))
        au, av = np.abs(u), np.abs(v)
        return ((au <= r) & (av <= half_w)) | ((av <= r) & (au <= half_w))
    if kind == _BAR:
        length = r * rng.uniform(1.1, 1.7)
        half_w = rng.uniform(0.8, max(0.8, length / 8))
        return (np.abs(u) <= length) & (np.abs(v) <= half_w)
    if kind == _STAR:
        lobes = int(rng.integers(5, 8))
        amp = rng.uniform(0.2, 0.35)
        rho = np.sqrt(dx * dx + dy * dy)
        ang = np.arctan2(dy, dx)
        return rho <= r * (1 - amp + amp * np.cos(lobes * (ang - th)))
    raise ValueError(f"unknown shape {kind}")


def _extent(kind: int, r: float) -> float:
    """Radius of a circle surely holding the shape."""
    return r * {_BAR: 1.75, _SQUARE: 1.25}.get(kind, 1.0) + 2.0


def _texture(rng: np.random.Generator, colour: np.ndarray, dy: np.ndarray, dx: np.ndarray):
    """An object's appearance on its box: flat, gradient, stripes or speckle (any class)."""
    kind = int(rng.integers(0, 4))
    shape = (dy.shape[0], dx.shape[1], 3)
    if kind == 0:
        return np.broadcast_to(colour, shape)
    if kind == 1:
        other = np.clip(colour + rng.uniform(-0.35, 0.35, 3).astype(np.float32), 0, 1)
        a = rng.uniform(0, 2 * math.pi)
        t = dx * math.cos(a) + dy * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return colour + (other - colour) * t[..., None]
    if kind == 2:
        a = rng.uniform(0, 2 * math.pi)
        f = rng.uniform(0.3, 1.2)
        g = np.sin(f * (dx * math.cos(a) + dy * math.sin(a)))
        return colour + (rng.uniform(0.08, 0.2) * g)[..., None]
    return colour + rng.uniform(-0.12, 0.12, shape).astype(np.float32)


def _pick_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A uniform random colour, redrawn a few times if too close to what lies under it."""
    colour = rng.random(3, dtype=np.float32)
    for _ in range(4):
        if float(np.abs(colour - under).sum()) >= 0.45:
            break
        colour = rng.random(3, dtype=np.float32)
    return colour


def _paint(rng, img, mask, kind, r, cy, cx) -> None:
    h, w = mask.shape
    e = _extent(kind, r)
    y0, y1 = max(int(cy - e), 0), min(int(math.ceil(cy + e)) + 1, h)
    x0, x1 = max(int(cx - e), 0), min(int(math.ceil(cx + e)) + 1, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cx
    m = _shape_mask(kind, rng, r, dy, dx)
    if not m.any():
        return
    under = img[min(max(int(cy), 0), h - 1), min(max(int(cx), 0), w - 1)]
    tex = _texture(rng, _pick_colour(rng, under), dy, dx)
    img[y0:y1, x0:x1][m] = tex[m]
    mask[y0:y1, x0:x1][m] = 0 if kind == _STAR else kind


def generate_shapes_sample(
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 128),
    max_objects: int = 8,
    distractors: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one sample with ``rng``.

    Returns:
        ``(image uint8 (H, W, 3), mask uint8 (H, W))`` with mask values in ``0..6``.
    """
    h, w = int(size[0]), int(size[1])
    base = min(h, w)
    img = _background(rng, h, w)
    mask = np.zeros((h, w), dtype=np.uint8)
    if distractors:
        for _ in range(int(rng.integers(0, 3))):
            _soft_blob(rng, img, base)
        for _ in range(int(rng.integers(0, 3))):
            r = rng.uniform(0.08, 0.18) * base
            _paint(rng, img, mask, _STAR, max(r, 7.0), rng.uniform(0, h), rng.uniform(0, w))
    r_min, r_max = max(4.0, 0.03 * base), max(6.0, 0.25 * base)
    for _ in range(int(rng.integers(min(3, max_objects), max(1, max_objects) + 1))):
        kind = int(rng.integers(1, len(SHAPES_CLASSES)))
        r = math.exp(rng.uniform(math.log(r_min), math.log(r_max)))
        if kind == _RING:
            r = max(r, 6.0)  # leave room for a visible hole
        # Centres may sit near the border: objects can be cut by the image frame.
        cy, cx = rng.uniform(0.05 * h, 0.95 * h), rng.uniform(0.05 * w, 0.95 * w)
        _paint(rng, img, mask, kind, r, cy, cx)
    # Pixel noise, then quantise: img in [0, 1] -> uint8 (in place, float32 throughout).
    noise = rng.random((h, w, 3), dtype=np.float32)
    amp = np.float32(rng.uniform(0.02, 0.12))
    noise *= amp
    img += noise
    img *= np.float32(255.0)
    img -= np.float32(255.0) * amp / 2 - np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8), mask


class ShapesSegmentation(SegmentationDataset):
    """The synthetic ``shapes`` set: 7 classes that differ by shape only (see module doc).

    Args:
        root: unused (no files); accepted so every dataset builds the same way.
        split: ``train``, ``val`` or ``test`` (disjoint random streams).
        transforms: ``callable(image, mask)`` applied to each sample.
        size: ``(H, W)`` of every image, default ``(128, 128)``.
        length: number of samples (default 512 for train, 64 for val / test).
        seed: base seed; sample ``i`` is a pure function of ``(seed, split, i)``.
        max_objects: at most this many objects per image (at least 3 unless smaller).
        distractors: add background blobs and star-shaped distractors.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transforms: Callable | None = None,
        size: tuple[int, int] | int = (128, 128),
        length: int | None = None,
        seed: int = 0,
        max_objects: int = 8,
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
