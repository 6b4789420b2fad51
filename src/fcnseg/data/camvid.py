"""CamVid, the 11-class 360x480 version of the SegNet tutorial (367 / 101 / 233 images).

Layout (as in ``shared/data/camvid``, see its README)::

    root/classes.txt                       11 names, index order
    root/{train,val,test}/images/NAME.png  RGB 480x360
    root/{train,val,test}/masks/NAME.png   mode "L", 0..10 classes, 11 = Unlabelled

Index 11 (Unlabelled / void) becomes 255 (ignore). Colours: the SegNet tutorial's.

Each file name starts with its video sequence (``0001TP_006690.png``: sequence ``0001TP``).
Train and val share sequence ``0016E5``, so val flatters a model; ``sequences`` /
``exclude_sequences`` hold one of train's sequences out, for an estimate val does not give
(train with ``exclude_sequences: [0001TP]``, score ``split=train, sequences: [0001TP]``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fcnseg.data.folder import FolderSegmentation
from fcnseg.data.palettes import CAMVID_PALETTE

__all__ = ["CAMVID_VOID", "CamVidSegmentation", "sequence_of"]

CAMVID_VOID = 11


def sequence_of(path: str | Path) -> str:
    """The video sequence of a CamVid file: the name up to the first ``_``."""
    return Path(path).name.split("_", 1)[0]


class CamVidSegmentation(FolderSegmentation):
    """CamVid 11 classes; ``root`` is required (no default location is assumed).

    Args:
        root: the folder holding ``classes.txt`` and ``{train,val,test}/``.
        split: ``train``, ``val`` or ``test``, or several joined with ``+`` (``train+val``).
        transforms: ``callable(image, mask)`` applied to each sample.
        strict: see :class:`~fcnseg.data.FolderSegmentation` (``False``: collect images
            without masks in ``unpaired`` instead of raising).
        limit: keep only the first ``limit`` pairs (after the sequence filter).
        sequences: keep only these video sequences (``["0001TP"]``); ``None``: all.
        exclude_sequences: drop these video sequences.

    Raises:
        ValueError: the sequence filter leaves no image (the message lists the sequences
            the split has).
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
        sequences: list[str] | None = None,
        exclude_sequences: list[str] | None = None,
    ) -> None:
        super().__init__(
            root,
            split,
            transforms,
            void_values=(CAMVID_VOID,),
            palette=CAMVID_PALETTE,
            strict=strict,
        )
        if sequences is not None or exclude_sequences:
            keep, drop = set(sequences or []), set(exclude_sequences or [])
            have = sorted({sequence_of(image) for image, _ in self.files})
            self.files = [
                pair
                for pair in self.files
                if (sequences is None or sequence_of(pair[0]) in keep)
                and sequence_of(pair[0]) not in drop
            ]
            if not self.files:
                raise ValueError(
                    f"camvid {split}: no image of sequences {sorted(keep) or 'any'} "
                    f"without {sorted(drop)} (this split has {', '.join(have)})"
                )
        if limit is not None:
            if isinstance(limit, bool) or int(limit) < 1:
                raise ValueError(f"camvid: limit must be a positive int or None, got {limit!r}")
            self.files = self.files[: int(limit)]
