"""Pictures with PIL only: the paper's Figure 4 layout and a confusion-matrix image.

``comparison_figure`` lays out one row per image: input | model 1 | ... | model k | ground
truth, label maps coloured with the dataset palette (:func:`fcnseg.data.palettes.colorize`),
a title above each column: how Long et al. show FCN-32s -> 16s -> 8s refining the output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fcnseg.data.palettes import colorize

__all__ = ["comparison_figure", "confusion_matrix_image"]

_GAP = 4
_TITLE_H = 18
_WHITE = (255, 255, 255)
_TEXT = (20, 20, 20)


def _rgb(image) -> np.ndarray:
    """uint8 (H, W, 3) from a uint8 tensor (3, H, W), an array (H, W, 3) or a PIL image."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu().as_subclass(torch.Tensor)
        if t.dtype != torch.uint8:
            raise ValueError("images must be uint8 (use fcnseg.data.denormalize first)")
        return t.permute(1, 2, 0).numpy() if t.shape[0] == 3 else t.numpy()
    return np.asarray(image, dtype=np.uint8)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def comparison_figure(
    images: Sequence,
    predictions: Mapping[str, Sequence],
    targets: Sequence | None,
    palette: Sequence[Sequence[int]],
    *,
    ignore_index: int = 255,
    scale: int = 1,
) -> Image.Image:
    """The Figure-4 grid: ``input | <each model> | ground truth``, one row per image.

    Args:
        images: RGB images, each uint8 (3, H, W) tensor, (H, W, 3) array or PIL image.
        predictions: column title -> one label map (H, W) per image (in model order).
        targets: ground-truth label maps (H, W), or ``None`` to leave the column out.
        palette: class colours (ignore pixels are drawn black).
        scale: integer enlargement (nearest neighbour), for small images.

    Returns:
        An RGB ``PIL.Image``.
    """
    columns: list[tuple[str, list[np.ndarray]]] = [("input", [_rgb(im) for im in images])]
    for title, masks in predictions.items():
        if len(masks) != len(images):
            raise ValueError(f"{title}: {len(masks)} predictions for {len(images)} images")
        columns.append((title, [colorize(m, palette, ignore_index) for m in masks]))
    if targets is not None:
        columns.append(("ground truth", [colorize(m, palette, ignore_index) for m in targets]))
    if not images:
        raise ValueError("comparison_figure needs at least one image")
    cell_h = max(im.shape[0] for im in columns[0][1]) * scale
    cell_w = max(im.shape[1] for im in columns[0][1]) * scale
    width = len(columns) * cell_w + (len(columns) + 1) * _GAP
    height = _TITLE_H + len(images) * (cell_h + _GAP) + _GAP
    canvas = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for c, (title, cells) in enumerate(columns):
        x = _GAP + c * (cell_w + _GAP)
        draw.text((x + 2, 3), title, fill=_TEXT, font=font)
        for r, cell in enumerate(cells):
            tile = Image.fromarray(np.ascontiguousarray(cell))
            if scale != 1:
                tile = tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)
            canvas.paste(tile, (x, _TITLE_H + r * (cell_h + _GAP)))
    return canvas


def confusion_matrix_image(
    matrix,
    class_names: Sequence[str] | None = None,
    *,
    cell: int = 28,
    normalize: bool = True,
) -> Image.Image:
    """A confusion matrix as a heat map: rows = ground truth, columns = prediction.

    Args:
        matrix: (C, C) counts (tensor or array), ``matrix[i, j]`` = pixels of class i
            predicted as j (:attr:`fcnseg.metrics.ConfusionMatrix.mat`).
        class_names: row/column labels (default ``0..C-1``).
        cell: cell size in pixels.
        normalize: shade by the row-normalised value (recall per class); each cell prints
            its percentage of the row.

    Returns:
        An RGB ``PIL.Image``.
    """
    mat = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {mat.shape}")
    n = mat.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} matrix")
    rows = mat.sum(1, keepdims=True)
    frac = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0)
    shade = frac if normalize else mat / max(mat.max(), 1.0)
    font = _font(10)
    label_w = 8 + 6 * max(len(s) for s in names)
    top = 16 + label_w  # column labels are written vertically
    size = (label_w + n * cell + 8, top + n * cell + 24)
    canvas = Image.new("RGB", size, _WHITE)
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(names):  # vertical column labels
        text = Image.new("RGB", (label_w, 14), _WHITE)
        ImageDraw.Draw(text).text((2, 1), name, fill=_TEXT, font=font)
        text = text.rotate(90, expand=True)
        canvas.paste(text, (label_w + j * cell + (cell - 14) // 2, 14))
    draw.text((label_w, 1), "predicted ->", fill=_TEXT, font=font)
    for i, name in enumerate(names):
        y = top + i * cell
        draw.text((4, y + cell // 2 - 6), name, fill=_TEXT, font=font)
        for j in range(n):
            x = label_w + j * cell
            v = float(shade[i, j])
            colour = tuple(int(255 - v * (255 - c)) for c in (8, 48, 107))  # white -> dark blue
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(220, 220, 220))
            if rows[i, 0] > 0 and cell >= 20:
                pct = f"{100 * frac[i, j]:.0f}"
                draw.text(
                    (x + 3, y + cell // 2 - 6), pct, fill=_WHITE if v > 0.5 else _TEXT, font=font
                )
    draw.text((4, top + n * cell + 6), "rows: ground truth (% of row)", fill=_TEXT, font=font)
    return canvas
