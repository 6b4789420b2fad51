"""Whole-image evaluation: the paper's four metrics and Boundary IoU over a dataset, the model
run through the inference core (:class:`fcnseg.inference.core.Predictor`: precision, fast path,
test-time augmentation).

One dataset-level :class:`~fcnseg.metrics.ConfusionMatrix` accumulates every pixel of every
image, as the Caffe reference ``score.py`` (``compute_hist`` summed over the val list) does,
so the scores are dataset-level, not an average of per-image scores.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from fcnseg.data import pad_collate
from fcnseg.engine.distributed import get_world_size, is_dist, is_main_process, shard_indices
from fcnseg.inference.core import Predictor
from fcnseg.metrics import BoundaryIoU, ConfusionMatrix

__all__ = ["evaluate", "evaluate_with_matrix"]


@torch.no_grad()
def evaluate_with_matrix(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 1,
    boundary_dilation: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
    ignore_index: int | None = None,
    distributed: bool | None = None,
    **options,
) -> tuple[dict, ConfusionMatrix]:
    """:func:`evaluate`, also returning the accumulated :class:`ConfusionMatrix` (summed over
    ranks when distributed)."""
    model = getattr(model, "module", model)  # a DDP wrapper: its forward would synchronise
    num_classes = getattr(model, "num_classes", None) or dataset.num_classes
    if ignore_index is None:
        ignore_index = getattr(dataset, "ignore_index", 255)
    if len(dataset) == 0:
        raise ValueError("evaluate: the dataset is empty")
    if distributed is None:
        distributed = is_dist() and get_world_size() > 1
    if distributed and not is_dist():
        raise ValueError("evaluate(distributed=True) needs an initialised process group")
    if distributed:
        # Every rank scores images rank, rank + W, ...: each image exactly once, none padded
        # (DistributedSampler would repeat images to even out the shards).
        dataset = Subset(dataset, shard_indices(len(dataset)))

    predictor = Predictor(model, **options)
    device = predictor.device
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    biou = BoundaryIoU(
        num_classes, ignore_index=ignore_index, dilation=boundary_dilation, device=device
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index),
    )
    try:
        bar = tqdm(loader, desc="eval", disable=not (progress and is_main_process()), leave=False)
        for images, masks in bar:
            # a dataset without transforms gives uint8 images: the predictor normalises them
            pred = predictor.labels(images, normalized=images.dtype != torch.uint8)
            masks = masks.to(device)
            cm.update(pred, masks)
            biou.update(pred, masks)
    finally:
        predictor.close()
    if distributed:
        cm.all_reduce()
        biou.all_reduce()
    return {**cm.compute(), **biou.compute()}, cm


def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 1,
    boundary_dilation: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
    distributed: bool | None = None,
    **options,
) -> dict:
    """Score ``model`` on every image of ``dataset``, whole images.

    Args:
        model: maps (N, 3, H, W) to (N, C, H, W) logits (an fcnseg ``FCN``).
        dataset: ``dataset[i] -> (image, mask)``; images normalised float (3, H, W) (e.g. with
            ``build_transforms(train=False, preprocess=model.preprocess)``) or raw uint8, then
            normalised here with ``model.preprocess``. Masks int64 (H, W), 255 = ignore.
        batch_size: images per forward pass; batches of unequal sizes are padded with
            :func:`~fcnseg.data.pad_collate` (padded pixels are ignore, so they never count;
            with ``boundary_dilation=None`` the band width follows the padded size).
        boundary_dilation: Boundary IoU band width in pixels (None: 2% of the diagonal).
        progress: show a tqdm bar (on rank 0 only).
        distributed: shard ``dataset`` over the ranks of the process group (rank ``r`` scores
            images ``r, r + W, ...``) and sum the confusion matrix and Boundary IoU counts over
            ranks, so every rank returns the scores of the whole dataset, equal to a
            single-process evaluation (integer counts: exactly; with ``batch_size`` > 1, images
            of unequal sizes and ``boundary_dilation=None`` the padded batches differ, and so
            may the Boundary IoU band). ``None``: when a process
            group of more than one rank is initialised. Every rank must call it.
        **options: the :class:`~fcnseg.inference.core.Predictor`'s: ``device`` (default: the
            model's), ``precision``, ``tta`` (``["flip", 0.75, 1.0, 1.25]``), ``window`` /
            ``overlap``, ``fast``.

    Returns:
        ``ConfusionMatrix.compute()`` merged with ``BoundaryIoU.compute()``: ``pixel_acc``,
        ``mean_acc``, ``mean_iou``, ``fw_iou``, ``iou``, ``acc``, ``boundary_iou``,
        ``boundary_iou_per_class`` (fractions in [0, 1], NaN for absent classes).

    Raises:
        ValueError: an empty dataset, a bad ``tta``, or labels outside the model's classes.
    """
    scores, _ = evaluate_with_matrix(
        model,
        dataset,
        batch_size=batch_size,
        boundary_dilation=boundary_dilation,
        progress=progress,
        num_workers=num_workers,
        distributed=distributed,
        **options,
    )
    return scores


def json_safe(obj):
    """Replace NaN/inf floats (not valid JSON) by ``None``, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
