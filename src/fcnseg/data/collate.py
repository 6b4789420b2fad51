"""Batching variable-size samples (whole-image evaluation, unequal crops)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["pad_collate"]


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]],
    ignore_index: int = 255,
    size_divisor: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image (C, H, W), mask (H, W))`` samples of different sizes.

    Each sample is placed at the top-left of a canvas as large as the largest sample
    (rounded up to a multiple of ``size_divisor``); images are padded with 0, masks with
    ``ignore_index`` so the padding never counts in the loss or the metrics. Use
    ``functools.partial(pad_collate, ignore_index=..., size_divisor=32)`` as a
    ``DataLoader`` ``collate_fn``.

    Returns:
        ``(images (N, C, H, W), masks (N, H, W) int64)``, plain tensors.

    Raises:
        ValueError: an empty batch, a sample whose image and mask sizes differ, or
            images with different channel counts.
    """
    if len(batch) == 0:
        raise ValueError("pad_collate: empty batch")
    if size_divisor < 1:
        raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
    images = [torch.as_tensor(s[0]).as_subclass(torch.Tensor) for s in batch]
    masks = [torch.as_tensor(s[1]).as_subclass(torch.Tensor) for s in batch]
    masks = [m[0] if m.ndim == 3 and m.shape[0] == 1 else m for m in masks]
    for i, (img, m) in enumerate(zip(images, masks, strict=True)):
        if img.ndim != 3 or m.ndim != 2 or img.shape[-2:] != m.shape:
            raise ValueError(
                f"pad_collate: sample {i} has image {tuple(img.shape)} and mask {tuple(m.shape)}"
            )
    channels = {img.shape[0] for img in images}
    if len(channels) != 1:
        raise ValueError(f"pad_collate: images have different channel counts {sorted(channels)}")
    h = max(img.shape[1] for img in images)
    w = max(img.shape[2] for img in images)
    h = -(-h // size_divisor) * size_divisor
    w = -(-w // size_divisor) * size_divisor
    out_images = images[0].new_zeros((len(images), images[0].shape[0], h, w))
    out_masks = torch.full((len(masks), h, w), ignore_index, dtype=torch.int64)
    for i, (img, m) in enumerate(zip(images, masks, strict=True)):
        out_images[i, :, : img.shape[1], : img.shape[2]] = img
        out_masks[i, : m.shape[0], : m.shape[1]] = m
    return out_images, out_masks
