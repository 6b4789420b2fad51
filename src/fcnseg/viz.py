"""Label pictures with PIL only: the paper's Figure 4 layout, class legends, a confusion matrix.

``comparison_figure`` lays out one row per image: input | model 1 | ... | model k | ground
truth, label maps coloured with the dataset palette (:func:`fcnseg.data.palettes.colorize`),
a title above each column: how Long et al. show FCN-32s -> 16s -> 8s refining the output.
Given the class names it adds a legend (a colour swatch and the name of every class present
in the picture). :func:`with_legend` adds the same legend below any picture (``predict
--overlay``). Charts (learning curves, per-class IoU) are :mod:`fcnseg.plots` (matplotlib).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from fcnseg.data.palettes import colorize

__all__ = [
    "classes_present",
    "colormap",
    "heatmap_figure",
    "comparison_figure",
    "confusion_matrix_image",
    "legend_image",
    "with_legend",
]

_GAP = 4
_TITLE_H = 18
_WHITE = (255, 255, 255)
_TEXT = (20, 20, 20)
_SWATCH = 12
_LEGEND_ROW = 18


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


def classes_present(
    masks: Sequence, num_classes: int | None = None, ignore_index: int = 255
) -> list[int]:
    """Sorted class indices that occur in any of ``masks`` (label maps (H, W), tensors or
    arrays); ``ignore_index`` is left out, and so is any index >= ``num_classes`` when given."""
    seen: set[int] = set()
    for m in masks:
        values = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        seen.update(int(v) for v in np.unique(values))
    seen.discard(int(ignore_index))
    return sorted(c for c in seen if c >= 0 and (num_classes is None or c < num_classes))


def legend_image(
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    classes: Sequence[int],
    width: int,
) -> Image.Image:
    """A legend strip ``width`` pixels wide: a colour swatch and the name of each class.

    Args:
        class_names: name of every class (index = label value).
        palette: colour of every class.
        classes: the indices to show, in order (e.g. :func:`classes_present`).
        width: strip width; entries wrap onto as many rows as they need.

    Returns:
        An RGB ``PIL.Image`` of size ``(width, rows * 18 + 4)``; ``image.info["legend"]`` is
        the list of names shown.

    Raises:
        ValueError: a class index without a name or a colour.
    """
    font = _font()
    entries = []
    for c in classes:
        if not 0 <= c < min(len(class_names), len(palette)):
            raise ValueError(f"class {c} has no name or colour ({len(class_names)} names)")
        name = str(class_names[c])
        text_w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(name, font=font))
        entries.append((name, tuple(int(v) for v in palette[c]), _SWATCH + 4 + text_w + 10))
    # flow layout: as many entries per row as fit
    rows: list[list[tuple]] = [[]]
    x = _GAP
    for entry in entries:
        if rows[-1] and x + entry[2] > width:
            rows.append([])
            x = _GAP
        rows[-1].append(entry)
        x += entry[2]
    canvas = Image.new("RGB", (max(int(width), 1), len(rows) * _LEGEND_ROW + 4), _WHITE)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        x, y = _GAP, 2 + r * _LEGEND_ROW
        for name, colour, w in row:
            draw.rectangle((x, y + 2, x + _SWATCH - 1, y + 1 + _SWATCH), fill=colour, outline=_TEXT)
            draw.text((x + _SWATCH + 4, y + 1), name, fill=_TEXT, font=font)
            x += w
    canvas.info["legend"] = [e[0] for e in entries]
    return canvas


def with_legend(
    image,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    classes: Sequence[int],
) -> Image.Image:
    """``image`` (PIL image or uint8 (H, W, 3) array) with :func:`legend_image` below it.

    Returns:
        An RGB ``PIL.Image`` as wide as ``image``; its top rows are ``image`` unchanged;
        ``info["legend"]`` lists the names shown.
    """
    top = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(image)
    strip = legend_image(class_names, palette, classes, top.width)
    canvas = Image.new("RGB", (top.width, top.height + strip.height), _WHITE)
    canvas.paste(top, (0, 0))
    canvas.paste(strip, (0, top.height))
    canvas.info["legend"] = strip.info["legend"]
    return canvas


def comparison_figure(
    images: Sequence,
    predictions: Mapping[str, Sequence],
    targets: Sequence | None,
    palette: Sequence[Sequence[int]],
    *,
    ignore_index: int = 255,
    scale: int = 1,
    class_names: Sequence[str] | None = None,
) -> Image.Image:
    """The Figure-4 grid: ``input | <each model> | ground truth``, one row per image.

    Args:
        images: RGB images, each uint8 (3, H, W) tensor, (H, W, 3) array or PIL image.
        predictions: column title -> one label map (H, W) per image (in model order).
        targets: ground-truth label maps (H, W), or ``None`` to leave the column out.
        palette: class colours (ignore pixels are drawn black).
        scale: integer enlargement (nearest neighbour), for small images.
        class_names: when given, a legend below the grid names every class present in the
            predictions or the targets (:func:`legend_image`).

    Returns:
        An RGB ``PIL.Image`` (with a legend: ``info["legend"]`` lists the names shown).
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
    if class_names is None:
        return canvas
    labels = [m for _, masks in predictions.items() for m in masks] + list(targets or [])
    present = classes_present(labels, min(len(class_names), len(palette)), ignore_index)
    return with_legend(canvas, class_names, palette, present)


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


def colormap(values: np.ndarray) -> np.ndarray:
    """The 'jet' colour ramp (blue -> cyan -> yellow -> red) for values in [0, 1]: uint8 (..., 3).

    Piecewise-linear channels: red ``1.5 - |4v - 3|``, green ``1.5 - |4v - 2|``,
    blue ``1.5 - |4v - 1|``, each clipped to [0, 1].
    """
    v = np.clip(values.astype(np.float32), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    rgb = np.clip(1.5 - np.abs(4.0 * v - centres), 0.0, 1.0)
    return np.round(rgb * 255).astype(np.uint8)


_BAR_W = 14


def heatmap_figure(
    image, panels: Sequence[tuple[str, np.ndarray]], alpha: float = 0.5
) -> Image.Image:
    """input | one heatmap per ``(title, probability map (H, W))`` | a colour bar.

    Each map is drawn relative to its own peak (the title gives the peak), blended over the
    image with opacity ``alpha``; the bar reads from 0 to that peak.
    """
    image = _rgb(image)
    height, width = image.shape[:2]
    cells = [("input", image)]
    for title, prob in panels:
        peak = float(prob.max())
        norm = prob / peak if peak > 0 else prob
        blended = alpha * colormap(norm).astype(np.float32) + (1 - alpha) * image
        cells.append((title, np.round(blended).astype(np.uint8)))
    bar_x = _GAP + len(cells) * (width + _GAP)
    canvas = Image.new("RGB", (bar_x + _BAR_W + 40, height + _TITLE_H + _GAP), _WHITE)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i, (title, cell) in enumerate(cells):
        x = _GAP + i * (width + _GAP)
        draw.text((x + 2, 3), _fit(draw, title, font, width - 4), fill=_TEXT, font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(cell)), (x, _TITLE_H))
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(_BAR_W, 1)
    canvas.paste(Image.fromarray(colormap(ramp)), (bar_x, _TITLE_H))
    draw.text((bar_x, 3), "p/peak", fill=_TEXT, font=font)
    for frac, label in ((1.0, "1"), (0.5, "0.5"), (0.0, "0")):
        y = _TITLE_H + round((1 - frac) * (height - 1))
        draw.line([(bar_x + _BAR_W, y), (bar_x + _BAR_W + 3, y)], fill=_TEXT)
        label_y = min(max(y - 6, _TITLE_H), _TITLE_H + height - 12)
        draw.text((bar_x + _BAR_W + 5, label_y), label, fill=_TEXT, font=font)
    return canvas


def _fit(draw, text: str, font, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
