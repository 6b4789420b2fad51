import numpy as np
import pytest
import torch

from fcnseg.data import SHAPES_PALETTE
from fcnseg.viz import (
    classes_present,
    comparison_figure,
    confusion_matrix_image,
    legend_image,
    with_legend,
)


def test_comparison_figure_layout():
    images = [torch.zeros(3, 20, 30, dtype=torch.uint8)] * 2
    masks = [torch.ones(20, 30, dtype=torch.int64)] * 2
    fig = comparison_figure(images, {"a": masks, "b": masks}, masks, SHAPES_PALETTE)
    assert fig.mode == "RGB"
    assert fig.width >= 4 * 30 and fig.height >= 2 * 20
    pixels = np.asarray(fig)
    assert (pixels == np.array(SHAPES_PALETTE[1], dtype=np.uint8)).all(-1).sum() == 3 * 2 * 600


def test_confusion_matrix_image():
    img = confusion_matrix_image(torch.tensor([[5, 1], [0, 4]]), ["bg", "fg"])
    assert img.mode == "RGB" and img.width > 56


def _strip_colours(strip: np.ndarray, palette) -> set[int]:
    """Palette indices whose colour fills a swatch somewhere in ``strip``."""
    flat = strip.reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(flat, axis=0)}
    return {i for i, c in enumerate(palette) if tuple(c) in colours}


def test_comparison_figure_legend_names_exactly_the_classes_present():
    palette = SHAPES_PALETTE
    names = ["background", "red", "yellow", "green", "cyan", "blue", "magenta"]
    images = [torch.zeros(3, 24, 32, dtype=torch.uint8) + 200] * 2
    pred = [torch.zeros(24, 32, dtype=torch.int64), torch.full((24, 32), 2)]
    target = [torch.full((24, 32), 5), torch.zeros(24, 32, dtype=torch.int64)]
    target[0][:4] = 255  # ignore pixels are not a class
    plain = comparison_figure(images, {"m": pred}, target, palette)
    fig = comparison_figure(images, {"m": pred}, target, palette, class_names=names)
    assert fig.info["legend"] == ["background", "yellow", "blue"]
    assert fig.width == plain.width and fig.height > plain.height  # the legend is below
    top, strip = np.asarray(fig)[: plain.height], np.asarray(fig)[plain.height :]
    assert np.array_equal(top, np.asarray(plain))
    assert _strip_colours(strip, palette) == {0, 2, 5}  # a swatch per class shown, no other


def test_legend_wraps_to_the_width_and_refuses_unknown_classes():
    names = [f"class number {i}" for i in range(6)]
    palette = [(10 * i, 200, 30) for i in range(6)]
    one_row = legend_image(names, palette, [0, 1], width=600)
    wrapped = legend_image(names, palette, list(range(6)), width=120)
    assert one_row.size == (600, 22) and wrapped.width == 120
    assert wrapped.height >= 6 * 18  # one entry per row at this width
    assert wrapped.info["legend"] == names
    with pytest.raises(ValueError, match="no name"):
        legend_image(names, palette, [6], width=100)


def test_with_legend_keeps_the_picture_and_classes_present_skips_ignore():
    masks = [np.array([[0, 3], [255, 3]]), torch.tensor([[9, 1]])]
    assert classes_present(masks) == [0, 1, 3, 9]
    assert classes_present(masks, num_classes=4) == [0, 1, 3]
    picture = np.full((10, 40, 3), 77, dtype=np.uint8)
    out = with_legend(picture, ["a", "b"], [(1, 2, 3), (4, 5, 6)], [1])
    assert out.width == 40 and out.info["legend"] == ["b"]
    assert np.array_equal(np.asarray(out)[:10], picture)
