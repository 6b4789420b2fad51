"""Whole-image evaluation: the paper's four metrics and Boundary IoU over a dataset, with
optional test-time augmentation (horizontal flip, multiple scales).

One dataset-level :class:`~fcnseg.metrics.ConfusionMatrix` accumulates every pixel of every
image, as the Caffe reference ``score.py`` (``compute_hist`` summed over the val list) does,
so the scores are dataset-level, not an average of per-image scores.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from fcnseg.accel.onednn import for_inference
from fcnseg.data import pad_collate
from fcnseg.data.transforms import Normalize
from fcnseg.engine.distributed import get_world_size, is_dist, is_main_process, shard_indices
from fcnseg.metrics import BoundaryIoU, ConfusionMatrix

__all__ = ["evaluate", "parse_tta", "tta_logits"]


def parse_tta(tta: Sequence | str | None) -> tuple[tuple[float, ...], bool]:
    """``["flip", 0.75, 1.0, 1.25]`` or ``"flip,0.75,1.0,1.25"`` -> ``((0.75, 1.0, 1.25), True)``.

    No scale given means ``(1.0,)``. Raises ValueError on an unknown item or a scale <= 0.
    """
    if tta is None:
        return (1.0,), False
    items = [s.strip() for s in tta.split(",") if s.strip()] if isinstance(tta, str) else tta
    flip, scales = False, []
    for item in items:
        if isinstance(item, str) and item.lower() == "flip":
            flip = True
            continue
        try:
            scale = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"tta: {item!r} is neither 'flip' nor a scale") from None
        if not scale > 0:
            raise ValueError(f"tta: scales must be > 0, got {scale}")
        scales.append(scale)
    return tuple(scales) or (1.0,), flip


def tta_logits(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Class scores of ``images`` (N, 3, H, W), averaged over scales and flips.

    Each view is the input resized (bilinear) by a scale and optionally mirrored; its logits
    are mirrored back and resized (bilinear) to (H, W), turned into softmax probabilities and
    averaged. Returns ``(N, C, H, W)``: the plain logits when there is a single view (scale 1,
    no flip), else the log of the averaged probabilities (so ``softmax`` of the result is the
    average probability and ``argmax`` the TTA prediction).
    """
    height, width = images.shape[-2:]
    views = [(s, f) for s in scales for f in ((False, True) if flip else (False,))]
    if views == [(1.0, False)]:
        return model(images)
    prob_sum = None
    for scale, mirrored in views:
        x = images
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if mirrored:
            x = x.flip(-1)
        logits = model(x).float()
        if mirrored:
            logits = logits.flip(-1)
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        probs = logits.softmax(1)
        prob_sum = probs if prob_sum is None else prob_sum + probs
    return (prob_sum / len(views)).clamp_min(1e-12).log()


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate_with_matrix(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    tta: Sequence | str | None = None,
    boundary_dilation: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
    ignore_index: int | None = None,
    distributed: bool | None = None,
    fast: bool = True,
) -> tuple[dict, ConfusionMatrix]:
    """:func:`evaluate`, also returning the accumulated :class:`ConfusionMatrix` (summed over
    ranks when distributed)."""
    model = getattr(model, "module", model)  # a DDP wrapper: its forward would synchronise
    num_classes = getattr(model, "num_classes", None) or dataset.num_classes
    if ignore_index is None:
        ignore_index = getattr(dataset, "ignore_index", 255)
    if len(dataset) == 0:
        raise ValueError("evaluate: the dataset is empty")
    device = torch.device(device) if device is not None else _model_device(model)
    scales, flip = parse_tta(tta)
    preprocess = getattr(model, "config", {}).get("preprocess")
    normalize = Normalize(preprocess)

    if distributed is None:
        distributed = is_dist() and get_world_size() > 1
    if distributed and not is_dist():
        raise ValueError("evaluate(distributed=True) needs an initialised process group")
    if distributed:
        # Every rank scores images rank, rank + W, ...: each image exactly once, none padded
        # (DistributedSampler would repeat images to even out the shards).
        dataset = Subset(dataset, shard_indices(len(dataset)))

    was_training = model.training
    model.to(device).eval()
    net = for_inference(model, device) if fast else model  # oneDNN kernels on the CPU
    # images in the model's precision (float32, or float64 for reproducibility checks)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
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
            if images.dtype == torch.uint8:  # a dataset without transforms: normalise here
                images = normalize(images)
            images, masks = images.to(device, dtype=dtype), masks.to(device)
            logits = tta_logits(net, images, scales, flip)
            pred = logits.argmax(1)
            cm.update(pred, masks)
            biou.update(pred, masks)
    finally:
        model.train(was_training)
    if distributed:
        cm.all_reduce()
        biou.all_reduce()
    return {**cm.compute(), **biou.compute()}, cm


def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    tta: Sequence | str | None = None,
    boundary_dilation: int | None = None,
    progress: bool = True,
    num_workers: int = 0,
    distributed: bool | None = None,
    fast: bool = True,
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
        device: where to run (default: the model's device).
        tta: ``None`` or ``["flip", 0.75, 1.0, 1.25]`` (see :func:`tta_logits`).
        boundary_dilation: Boundary IoU band width in pixels (None: 2% of the diagonal).
        progress: show a tqdm bar (on rank 0 only).
        distributed: shard ``dataset`` over the ranks of the process group (rank ``r`` scores
            images ``r, r + W, ...``) and sum the confusion matrix and Boundary IoU counts over
            ranks, so every rank returns the scores of the whole dataset, equal to a
            single-process evaluation (integer counts: exactly; with ``batch_size`` > 1, images
            of unequal sizes and ``boundary_dilation=None`` the padded batches differ, and so
            may the Boundary IoU band). ``None``: when a process
            group of more than one rank is initialised. Every rank must call it.
        fast: on the CPU in float32, run the model through
            :func:`fcnseg.accel.onednn.for_inference` (oneDNN kernels chosen per layer, the
            same logits within 1e-5 relative); ``False``: the model exactly as it is.

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
        device=device,
        tta=tta,
        boundary_dilation=boundary_dilation,
        progress=progress,
        num_workers=num_workers,
        distributed=distributed,
        fast=fast,
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
