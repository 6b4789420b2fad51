"""Datasets, joint transforms, palettes and batching for semantic segmentation.

``build_dataset(name, root, split, transforms, **kwargs)`` makes any of
``voc``, ``sbd``, ``cityscapes``, ``camvid``, ``folder`` (files) and ``shapes``
(generated). A sample is ``(image, mask)``: ``tv_tensors.Image`` uint8 ``(3, H, W)``
and ``tv_tensors.Mask`` int64 ``(H, W)`` (255 = ignore), or whatever ``transforms``
returns (:func:`build_transforms`: normalised float image, int64 mask).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from fcnseg.data import palettes, transforms
from fcnseg.data.base import SegmentationDataset
from fcnseg.data.camvid import CamVidSegmentation
from fcnseg.data.cityscapes import CityscapesSegmentation
from fcnseg.data.collate import pad_collate
from fcnseg.data.folder import FolderSegmentation
from fcnseg.data.palettes import (
    CAMVID_PALETTE,
    CITYSCAPES_PALETTE,
    colorize,
    load_index_png,
    palette_for,
    save_index_png,
    voc_palette,
)
from fcnseg.data.sbd import SBDSegmentation
from fcnseg.data.shapes import SHAPES_CLASSES, SHAPES_PALETTE, ShapesSegmentation
from fcnseg.data.transforms import (
    CAFFE_PREPROCESS,
    DEFAULT_PREPROCESS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    build_transforms,
    denormalize,
)
from fcnseg.data.voc import VOC_CLASSES, VOCSegmentation

__all__ = [
    "CAFFE_PREPROCESS",
    "CAMVID_PALETTE",
    "CITYSCAPES_PALETTE",
    "DEFAULT_PREPROCESS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPES_CLASSES",
    "SHAPES_PALETTE",
    "VOC_CLASSES",
    "CamVidSegmentation",
    "CityscapesSegmentation",
    "FolderSegmentation",
    "Normalize",
    "SBDSegmentation",
    "SegmentationDataset",
    "ShapesSegmentation",
    "VOCSegmentation",
    "build_dataset",
    "build_transforms",
    "colorize",
    "denormalize",
    "list_datasets",
    "load_index_png",
    "pad_collate",
    "palette_for",
    "palettes",
    "save_index_png",
    "transforms",
    "voc_palette",
]

_DATASETS: dict[str, type[SegmentationDataset]] = {
    "voc": VOCSegmentation,
    "sbd": SBDSegmentation,
    "cityscapes": CityscapesSegmentation,
    "camvid": CamVidSegmentation,
    "folder": FolderSegmentation,
    "shapes": ShapesSegmentation,
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return list(_DATASETS)


def build_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    transforms: Callable | None = None,
    **kwargs,
) -> SegmentationDataset:
    """Make a dataset by name.

    Args:
        name: one of :func:`list_datasets` (case-insensitive).
        root: the dataset folder (required by every file-based set; unused by ``shapes``).
        split: ``train``, ``val``, ... (``sbd`` also ``seg11valid``).
        transforms: ``callable(image, mask)`` applied to each sample.
        **kwargs: dataset options: ``voc``: ``year``, ``download``; ``sbd``:
            ``voc_root``; ``folder``: ``void_values``, ``palette``; ``shapes``: ``size``,
            ``length``, ``seed``, ``max_objects``, ``distractors``.

    Raises:
        ValueError: an unknown name (the message lists the known ones), an option the dataset
            does not take (the message lists those it does), or a missing root.
        FileNotFoundError: the data is not where ``root`` says.
    """
    key = str(name).lower()
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(_DATASETS)}")
    cls = _DATASETS[key]
    accepted = [
        p.name
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    accepted = [p for p in accepted if p not in ("root", "split", "transforms")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {key!r} takes no option {', '.join(map(repr, unknown))} "
            f"(its options: {', '.join(accepted) or 'none'}); data.options is passed to it as is"
        )
    if key != "shapes" and root is None:
        raise ValueError(f"dataset {key!r} needs root= (the folder holding the data)")
    return cls(root, split=split, transforms=transforms, **kwargs)
