"""Sliding-window inference: logits of a large image computed tile by tile and blended.

The tiling follows mmsegmentation's ``EncoderDecoder.slide_inference``
(``mmseg/models/segmentors/encoder_decoder.py``): a regular grid of tiles whose last
row/column is shifted back inside the image, and each pixel's logits divided by the sum of the
weights that covered it. fcnseg adds two things: tile origins on the model's output-stride grid
(so every tile samples the image exactly as whole-image inference does), and a weight ramp
across each overlap that is *zero* within a margin of a tile's inner edges. A pixel therefore
only ever takes logits from tiles where it lies at least ``margin`` pixels from a cut, which
makes the result equal to whole-image inference for any model whose receptive field radius is
at most ``margin`` (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["output_stride", "sliding_window_logits"]


def output_stride(model: nn.Module) -> int:
    """The stride of the model's coarsest map (32 for an FCN), or 1 if unknown.

    A model may declare it as an ``output_stride`` attribute; an fcnseg ``FCN`` is read from its
    backbone's taps.
    """
    stride = getattr(model, "output_stride", None)
    if stride:
        return int(stride)
    taps = getattr(getattr(model, "backbone", None), "taps", None)
    if isinstance(taps, dict) and taps:
        return int(max(taps))
    return 1


def _pair(window: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(window, int):
        return window, window
    h, w = (int(v) for v in window)
    return h, w


def _tile_layout(length: int, window: int, overlap: float, align: int) -> tuple[list[int], int]:
    """Tile starts along one axis, and the nominal overlap in pixels.

    The step is ``window * (1 - overlap)`` rounded down to a multiple of ``align`` (the model's
    output stride, when the step is at least that); the last tile is shifted back so that it
    ends at the image border, as in mmseg's ``slide_inference``.
    """
    if window >= length:
        return [0], 0
    step = max(1, int(window * (1.0 - overlap)))
    if align > 1 and step >= align:
        step = step // align * align
    starts = list(range(0, length - window, step)) + [length - window]
    return starts, window - step


def _ramp(window: int, overlap_px: int, rise_at_start: bool, rise_at_end: bool) -> torch.Tensor:
    """Blending weight along one tile axis.

    Zero within ``margin = overlap_px // 4`` of an inner edge (where the tile's logits suffer
    from the cut), then a linear rise to 1 at ``overlap_px - margin``. Edges on the image
    border keep weight 1 (no neighbour to blend with, and whole-image inference sees the same
    border).
    """
    w = torch.ones(window, dtype=torch.float64)
    if overlap_px <= 0:
        return w
    margin = overlap_px // 4
    d = torch.arange(window, dtype=torch.float64)
    rise = ((d - margin + 1) / (overlap_px - 2 * margin + 1)).clamp(0.0, 1.0)
    if rise_at_start:
        w = torch.minimum(w, rise)
    if rise_at_end:
        w = torch.minimum(w, rise.flip(0))
    return w


def sliding_window_logits(
    model: nn.Module,
    images: torch.Tensor,
    window: int | Sequence[int],
    overlap: float = 0.33,
    *,
    blend: str = "ramp",
    align: int | None = None,
) -> torch.Tensor:
    """Logits of ``images`` computed tile by tile and blended.

    Args:
        model: maps ``(N, 3, h, w)`` normalised images to ``(N, C, h, w)`` logits.
        images: ``(N, 3, H, W)`` normalised images (N = 1 in the usual case).
        window: tile size, an int or ``(h, w)``; clipped to the image (a window at least as
            large as the image means one whole-image pass).
        overlap: fraction of the window shared by neighbouring tiles, in ``[0, 1)``.
        blend: ``"ramp"`` (default): per-pixel weights that are zero within a quarter of the
            overlap from a tile's inner edge and rise linearly to 1 across the middle half of
            the overlap; ``"mean"``: plain averaging of every tile covering a pixel (mmseg's
            ``count_mat``).
        align: tile origins are multiples of this (default: :func:`output_stride` of the model,
            32 for an FCN) so each tile sees the stride-32 grid whole-image inference sees; the
            last row/column of tiles is shifted to the image border and may be off the grid.

    Returns:
        ``(N, C, H, W)`` float32 logits. With ``blend="ramp"``, a model whose receptive field
        radius is at most a quarter of the overlap (in pixels) and tile origins on its stride
        grid, the result equals whole-image inference (up to float rounding).

    Raises:
        ValueError: a bad window, overlap or blend mode.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(images.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if blend not in ("ramp", "mean"):
        raise ValueError(f"blend must be 'ramp' or 'mean', got {blend!r}")
    win_h, win_w = _pair(window)
    if win_h < 1 or win_w < 1:
        raise ValueError(f"window must be positive, got {window}")
    height, width = images.shape[-2:]
    win_h, win_w = min(win_h, height), min(win_w, width)
    align = output_stride(model) if align is None else int(align)
    ys, overlap_h = _tile_layout(height, win_h, overlap, align)
    xs, overlap_w = _tile_layout(width, win_w, overlap, align)
    if len(ys) == 1 and len(xs) == 1:
        return model(images).float()

    logits = weights = None
    for y in ys:
        for x in xs:
            tile = model(images[:, :, y : y + win_h, x : x + win_w]).float()
            if logits is None:
                logits = tile.new_zeros(images.shape[0], tile.shape[1], height, width)
                weights = tile.new_zeros(1, 1, height, width)
            if blend == "ramp":
                wy = _ramp(win_h, overlap_h, y > 0, y + win_h < height)
                wx = _ramp(win_w, overlap_w, x > 0, x + win_w < width)
                w = (wy[:, None] * wx[None, :]).to(tile)
            else:
                w = tile.new_ones(win_h, win_w)
            logits[:, :, y : y + win_h, x : x + win_w] += tile * w
            weights[:, :, y : y + win_h, x : x + win_w] += w
    # Every pixel has a positive total weight: the tile whose inner edges are farthest from it
    # always gives it a positive weight (see _ramp).
    return logits / weights


class _Tiled(nn.Module):
    """A model whose forward runs tiled (so test-time augmentation can wrap tiling)."""

    def __init__(self, model: nn.Module, window, overlap: float) -> None:
        super().__init__()
        self.model, self.window, self.overlap = model, window, overlap
        self.output_stride = output_stride(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sliding_window_logits(self.model, x, self.window, self.overlap)


# --------------------------------------------------------------------------- predict
