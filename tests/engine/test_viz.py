import numpy as np
import torch

from fcnseg.data import SHAPES_PALETTE
from fcnseg.viz import comparison_figure, confusion_matrix_image


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
