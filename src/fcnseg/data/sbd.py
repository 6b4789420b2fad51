"""The Semantic Boundaries Dataset (SBD, Hariharan et al. 2011), as the FCN paper uses it.

The paper trains on the 8,498 images of SBD ``train`` and validates on ``seg11valid``:
the 736 images of VOC2011 segmentation ``val`` that are *not* in SBD train (VOC2011 val
and SBD train intersect, so plain VOC2011 val would be contaminated). See the reference
``data/pascal/README.md`` and ``voc_layers.py`` (``SBDDSegDataLayer``) of
shelhamer/fcn.berkeleyvision.org; the list shipped here as ``lists/seg11valid.txt`` is
the reference's ``data/pascal/seg11valid.txt`` (736 ids).

Layout (the ``dataset`` folder of the SBD tarball)::

    root/img/NAME.jpg
    root/cls/NAME.mat       MATLAB struct GTcls with field Segmentation (H x W, 0..20)
    root/train.txt          8,498 ids
    root/val.txt            2,857 ids

Split ``"seg11valid"`` reads its images and labels from PASCAL VOC (``voc_root=``: the
folder holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012``; default: ``root``'s
sibling ``VOCdevkit``, or ``root`` when it holds ``VOC2012``). VOC2012 contains every
VOC2011 segmentation image with the same labels, so either devkit works (as in the
reference and torchfcn's ``VOC2011ClassSeg``).

Reading ``.mat`` files needs scipy (a dev / optional dependency), imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from fcnseg.data.base import SegmentationDataset, read_lines
from fcnseg.data.palettes import load_index_png, voc_palette
from fcnseg.data.voc import VOC_CLASSES, find_voc_dir, voc_pairs

__all__ = ["SBDSegmentation", "load_sbd_mat", "seg11valid_ids"]

SEG11VALID_COUNT = 736


def seg11valid_ids() -> list[str]:
    """The 736 image ids of the reference ``seg11valid`` list (shipped as package data).

    Raises:
        FileNotFoundError: the list is missing from the installation.
    """
    try:
        text = resources.files("fcnseg.data").joinpath("lists/seg11valid.txt").read_text()
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(
            "fcnseg/data/lists/seg11valid.txt is missing from this installation; it is the "
            "reference list data/pascal/seg11valid.txt of shelhamer/fcn.berkeleyvision.org"
        ) from e
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(ids) != SEG11VALID_COUNT:
        raise ValueError(f"seg11valid.txt has {len(ids)} ids, expected {SEG11VALID_COUNT}")
    return ids


def load_sbd_mat(path: str | Path) -> np.ndarray:
    """The ``GTcls.Segmentation`` class map of an SBD ``cls/*.mat`` file, ``int64`` (H, W).

    Same field as the reference ``SBDDSegDataLayer.load_label``:
    ``loadmat(path)['GTcls'][0]['Segmentation'][0]``.

    Raises:
        ImportError: scipy is not installed.
        KeyError: the file has no ``GTcls.Segmentation``.
    """
    try:
        from scipy.io import loadmat
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading SBD .mat labels needs scipy: pip install scipy (or fcnseg[dev])"
        ) from e
    mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    if "GTcls" not in mat:
        raise KeyError(f"{path}: no 'GTcls' struct (keys: {sorted(mat)})")
    gt = mat["GTcls"]
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise KeyError(f"{path}: GTcls has no 'Segmentation' field")
    return np.asarray(seg).astype(np.int64)


def _find_sbd_dir(root: Path) -> Path:
    for c in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (c / "img").is_dir() and (c / "cls").is_dir():
            return c
    raise FileNotFoundError(f"sbd: no SBD 'dataset' folder (with img/ and cls/) under {root}")


def _find_voc_for_seg11valid(root: Path, voc_root: str | Path | None) -> Path:
    years = ("2012", "2011")
    if voc_root is not None:
        return find_voc_dir(voc_root, years)
    for c in (root.parent / "VOCdevkit", root / "VOCdevkit", root, root.parent):
        try:
            return find_voc_dir(c, years)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(
        f"sbd split 'seg11valid' reads PASCAL VOC images; none found near {root}. "
        "Pass voc_root= (the folder holding VOCdevkit/, or VOC2012/ itself)."
    )


class SBDSegmentation(SegmentationDataset):
    """SBD semantic segmentation: the 21 VOC classes, VOC palette.

    Args:
        root: the SBD ``dataset`` folder (``img/``, ``cls/``, ``train.txt``, ``val.txt``);
            its parent or ``benchmark_RELEASE`` are accepted too.
        split: ``"train"`` / ``"val"`` (SBD lists) or ``"seg11valid"`` (VOC images).
        transforms: ``callable(image, mask)`` applied to each sample.
        voc_root: where the VOC devkit is, for ``split="seg11valid"``.

    Raises:
        FileNotFoundError: a folder, list or listed file is missing.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
        voc_root: str | Path | None = None,
    ) -> None:
        if root is None:
            raise ValueError("sbd: root is required (the SBD 'dataset' folder)")
        super().__init__(root, split, transforms)
        self._set_classes(VOC_CLASSES, voc_palette())
        if split == "seg11valid":
            self.voc_dir = _find_voc_for_seg11valid(self.root, voc_root)
            self.files = voc_pairs(self.voc_dir, split, seg11valid_ids())
            return
        self.sbd_dir = _find_sbd_dir(self.root)
        list_file = self.sbd_dir / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(
                f"sbd: no split list {list_file}; splits are 'train', 'val', 'seg11valid'"
            )
        pairs = [
            (self.sbd_dir / "img" / f"{i}.jpg", self.sbd_dir / "cls" / f"{i}.mat")
            for i in read_lines(list_file)
        ]
        for image, mask in pairs:
            for p in (image, mask):
                if not p.is_file():
                    raise FileNotFoundError(f"sbd: {p} is listed in {list_file} but missing")
        self.files = pairs

    def load_mask(self, path: str | Path) -> torch.Tensor:
        """``.mat`` -> ``GTcls.Segmentation``; ``.png`` (seg11valid, from VOC) -> indices."""
        if Path(path).suffix.lower() == ".mat":
            return torch.from_numpy(load_sbd_mat(path))
        return torch.from_numpy(load_index_png(path))
