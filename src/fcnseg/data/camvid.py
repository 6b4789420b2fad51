"""CamVid, the 11-class 360x480 version of the SegNet tutorial (367 / 101 / 233 images).

Layout (as in ``shared/data/camvid``, see its README)::

    root/classes.txt                       11 names, index order
    root/{train,val,test}/images/NAME.png  RGB 480x360
    root/{train,val,test}/masks/NAME.png   mode "L", 0..10 classes, 11 = Unlabelled

Index 11 (Unlabelled / void) becomes 255 (ignore). Colours: the SegNet tutorial's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fcnseg.data.folder import FolderSegmentation
from fcnseg.data.palettes import CAMVID_PALETTE

__all__ = ["CAMVID_VOID", "CamVidSegmentation"]

CAMVID_VOID = 11


class CamVidSegmentation(FolderSegmentation):
    """CamVid 11 classes; ``root`` is required (no default location is assumed).

    Args:
        root: the folder holding ``classes.txt`` and ``{train,val,test}/``.
        split: ``train``, ``val`` or ``test``.
        transforms: ``callable(image, mask)`` applied to each sample.
        strict: see :class:`~fcnseg.data.FolderSegmentation` (``False``: collect images
            without masks in ``unpaired`` instead of raising).
    """

    dataset_name = "camvid"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
        *,
        strict: bool = True,
        limit: int | None = None,
    ) -> None:
        super().__init__(
            root,
            split,
            transforms,
            void_values=(CAMVID_VOID,),
            palette=CAMVID_PALETTE,
            strict=strict,
            limit=limit,
        )
