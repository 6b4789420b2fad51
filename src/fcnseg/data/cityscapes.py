"""Cityscapes (fine annotations), 19 training classes.

Layout (``leftImg8bit_trainvaltest.zip`` + ``gtFine_trainvaltest.zip``)::

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

The ``labelIds`` PNGs hold the 34 Cityscapes label ids; training and evaluation use the
19 "train ids" (everything else -> 255, ignored). The id -> train id table is
``torchvision.datasets.Cityscapes.classes`` (the official ``labels.py``), turned into a
256-entry lookup table here instead of being typed again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fcnseg.data.base import SegmentationDataset
from fcnseg.data.palettes import CITYSCAPES_PALETTE, load_index_png

__all__ = ["CITYSCAPES_CLASSES", "CityscapesSegmentation", "cityscapes_id_to_train_id"]


def cityscapes_id_to_train_id(ignore_index: int = 255) -> np.ndarray:
    """Lookup table ``lut[label_id] = train_id`` (``int64``, 256 entries; others -> ignore)."""
    from torchvision.datasets import Cityscapes

    lut = np.full(256, ignore_index, dtype=np.int64)
    for c in Cityscapes.classes:
        if 0 <= c.id < 256 and 0 <= c.train_id < 255:
            lut[c.id] = c.train_id
    return lut


def _train_class_names() -> list[str]:
    from torchvision.datasets import Cityscapes

    names = {c.train_id: c.name for c in Cityscapes.classes if 0 <= c.train_id < 255}
    return [names[t] for t in range(len(names))]


CITYSCAPES_CLASSES = _train_class_names()


class CityscapesSegmentation(SegmentationDataset):
    """Cityscapes fine segmentation with the 19 train-id classes and the official palette.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test`` (test labels are all "ignore").
        transforms: ``callable(image, mask)`` applied to each sample.

    Raises:
        FileNotFoundError: the split folder is missing or empty, or an image has no
            ``*_gtFine_labelIds.png``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
    ) -> None:
        if root is None:
            raise ValueError("cityscapes: root is required (the folder with leftImg8bit/)")
        super().__init__(root, split, transforms)
        self._set_classes(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
        self._lut = cityscapes_id_to_train_id(self.ignore_index)
        image_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"cityscapes: no image folder {image_dir}")
        suffix = "_leftImg8bit.png"
        pairs = []
        for image in sorted(image_dir.glob(f"*/*{suffix}")):
            stem = image.name[: -len(suffix)]
            mask = label_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"
            if not mask.is_file():
                raise FileNotFoundError(f"cityscapes: no label {mask} for image {image}")
            pairs.append((image, mask))
        if not pairs:
            raise FileNotFoundError(f"cityscapes: no *{suffix} images under {image_dir}")
        self.files = pairs

    def load_mask(self, path: str | Path) -> torch.Tensor:
        """``labelIds`` PNG -> train ids (0..18), every other id -> 255."""
        return self._apply_lut(load_index_png(path), self._lut, path)
