"""The per-pixel multinomial logistic loss (Long et al., Sec. 3: "a sum over the spatial
dimensions of the final layer"), with the ignore label and optional class weights.

Two reductions:

- ``"sum"``: the paper's and the Caffe reference's unnormalised loss (``SoftmaxWithLoss``
  with ``loss_param { normalize: false }`` in ``voc-fcn*/net.py``, which Caffe maps to
  normalisation by the batch size): the per-pixel losses summed over the image, averaged over
  the images of the batch. Its gradients grow with the image area, hence the reference's tiny
  learning rates (1e-10 for FCN-32s with momentum 0.99).
- ``"mean"``: the average over the non-ignored pixels (torchvision's reference ``criterion``:
  ``cross_entropy(..., ignore_index=255)``); with class weights, the weighted average
  ``sum_i w[y_i] l_i / sum_i w[y_i]``.

Online hard example mining (``ohem_thresh``; Shrivastava et al., CVPR 2016, per pixel as in
mmsegmentation's ``OHEMPixelSampler``): only the pixels whose predicted probability of their
true class is below ``ohem_thresh`` count, and at least the ``ohem_min_kept`` hardest of the
batch, so the loss is not spent on the road and sky the net already labels right; the thin
classes' pixels are the ones that stay.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.engine.distributed import all_reduce_sum

__all__ = ["SegmentationLoss", "build_loss", "global_batch_loss", "median_frequency_weights"]


class SegmentationLoss(nn.Module):
    """``loss(logits (N, C, H, W), target (N, H, W) int64) -> scalar``.

    Args:
        reduction: ``"mean"`` or ``"sum"`` (see the module docstring).
        weight: optional per-class weights, length C.
        ignore_index: target value whose pixels do not count (255).
        ohem_thresh: hard-pixel mining: count only pixels whose softmax probability of the
            true class is below this (``None``: every pixel counts).
        ohem_min_kept: with ``ohem_thresh``, at least this many of the batch's hardest pixels
            count (all of them where fewer are labelled).
    """

    def __init__(
        self,
        reduction: str = "mean",
        weight: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = 255,
        ohem_thresh: float | None = None,
        ohem_min_kept: int = 0,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"loss reduction must be 'mean' or 'sum', got {reduction!r}")
        if ohem_thresh is not None and not 0.0 < ohem_thresh <= 1.0:
            raise ValueError(f"ohem_thresh must be in (0, 1], got {ohem_thresh}")
        if ohem_min_kept < 0:
            raise ValueError(f"ohem_min_kept must be >= 0, got {ohem_min_kept}")
        self.reduction = reduction
        self.ignore_index = int(ignore_index)
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = int(ohem_min_kept)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
            if weight.dim() != 1 or bool((weight < 0).any()):
                raise ValueError("class weights must be a 1-D list of non-negative numbers")
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weight is not None and self.weight.numel() != logits.shape[1]:
            raise ValueError(
                f"{self.weight.numel()} class weights for logits with {logits.shape[1]} classes"
            )
        # float32 for the log-softmax even under autocast: a sum over ~1e5 pixels in fp16
        # overflows.
        logits = logits.float()
        target = self.hard_pixels(logits, target)
        if self.reduction == "mean":
            return F.cross_entropy(
                logits, target, weight=self.weight, ignore_index=self.ignore_index
            )
        total = F.cross_entropy(
            logits, target, weight=self.weight, ignore_index=self.ignore_index, reduction="sum"
        )
        return total / logits.shape[0]

    def hard_pixels(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``target`` with the pixels OHEM leaves out set to ``ignore_index`` (``target``
        itself without OHEM). Chosen without gradient, from the probabilities as they are."""
        if self.ohem_thresh is None:
            return target
        with torch.no_grad():
            valid = target != self.ignore_index
            true_class = target.masked_fill(~valid, 0).unsqueeze(1)
            prob = logits.float().softmax(1).gather(1, true_class).squeeze(1)
            prob = prob.masked_fill(~valid, float("inf"))  # never kept
            threshold = torch.tensor(self.ohem_thresh, dtype=prob.dtype, device=prob.device)
            kept = min(self.ohem_min_kept, int(valid.sum()))
            if kept > 0:  # the kept-th smallest probability: at least that many pixels stay
                kth = prob.flatten().kthvalue(kept).values
                threshold = torch.maximum(threshold, torch.nextafter(kth, kth + 1))
            return target.masked_fill(valid & (prob >= threshold), self.ignore_index)

    def extra_repr(self) -> str:
        ohem = "" if self.ohem_thresh is None else (
            f", ohem_thresh={self.ohem_thresh}, ohem_min_kept={self.ohem_min_kept}"
        )  # fmt: skip
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}{ohem}"


# recipe name -> the power applied to the median-frequency weights
FREQUENCY_WEIGHTINGS = {"median_freq": 1.0, "sqrt_median_freq": 0.5}


def median_frequency_weights(
    dataset,
    num_classes: int,
    ignore_index: int = 255,
    max_samples: int = 500,
    seed: int = 0,
    power: float = 1.0,
) -> list[float]:
    """Median frequency balancing (Eigen & Fergus 2015, as SegNet uses it for CamVid).

    ``freq(c) = pixels of c / pixels of the images where c is present`` and
    ``w(c) = median(freq) / freq(c)``, counted over the masks of ``dataset`` (``dataset[i]``
    returns ``(image, mask)``), or over ``max_samples`` of them drawn with ``seed`` when it is
    larger. A class never seen gets weight 0 (it cannot occur in the loss anyway). Nothing is
    cached on disk. ``power`` softens the balance: ``w(c) ** power`` (0.5 for the recipe key
    ``sqrt_median_freq``: rare classes still count more, without being painted over common ones).

    Returns:
        ``num_classes`` floats.
    """
    n = len(dataset)
    if n == 0:
        raise ValueError("median_freq class weights: the training set is empty")
    indices = range(n)
    if n > max_samples:
        indices = np.random.default_rng(seed).choice(n, size=max_samples, replace=False)
    pixels = np.zeros(num_classes, dtype=np.float64)
    present_in = np.zeros(num_classes, dtype=np.float64)  # pixels of images holding class c
    for i in indices:
        mask = torch.as_tensor(dataset[int(i)][1]).as_subclass(torch.Tensor).reshape(-1)
        mask = mask[mask != ignore_index].long()
        if mask.numel() == 0:
            continue
        counts = torch.bincount(mask, minlength=num_classes)[:num_classes].double().numpy()
        pixels += counts
        present_in += (counts > 0) * float(mask.numel())
    seen = pixels > 0
    if not seen.any():
        raise ValueError("median_freq class weights: no labelled pixels in the training set")
    freq = np.zeros(num_classes)
    freq[seen] = pixels[seen] / present_in[seen]
    median = float(np.median(freq[seen]))
    weights = np.zeros(num_classes)
    weights[seen] = (median / freq[seen]) ** power
    return [float(w) for w in weights]


def build_loss(
    reduction: str = "mean",
    class_weights: Sequence[float] | str | None = None,
    *,
    num_classes: int | None = None,
    dataset=None,
    ignore_index: int = 255,
    seed: int = 0,
    ohem_thresh: float | None = None,
    ohem_min_kept: int = 0,
) -> SegmentationLoss:
    """The training criterion from the recipe keys ``train.loss_reduction`` and
    ``train.class_weights``.

    Args:
        reduction: ``"mean"`` or ``"sum"``.
        class_weights: ``None``, a list of C weights, ``"median_freq"`` or its square root
            ``"sqrt_median_freq"`` (computed from ``dataset``'s masks, see
            :func:`median_frequency_weights`).
        num_classes: C, to check a weight list against (and required for ``median_freq``).
        dataset: the training set (only for ``median_freq``).
        ohem_thresh, ohem_min_kept: hard-pixel mining (``train.ohem_thresh``,
            ``train.ohem_min_kept``; see :class:`SegmentationLoss`).

    Raises:
        ValueError: an unknown reduction, a weight list of the wrong length, or
            ``median_freq`` without a dataset.
    """
    weight = None
    if isinstance(class_weights, str):
        if class_weights not in FREQUENCY_WEIGHTINGS:
            raise ValueError(
                f"class_weights: expected a list or one of {sorted(FREQUENCY_WEIGHTINGS)}, "
                f"got {class_weights!r}"
            )
        if dataset is None or num_classes is None:
            raise ValueError(f"class_weights {class_weights!r} needs the training dataset")
        power = FREQUENCY_WEIGHTINGS[class_weights]
        weight = median_frequency_weights(
            dataset, num_classes, ignore_index, seed=seed, power=power
        )
    elif class_weights is not None:
        weight = [float(w) for w in class_weights]
        if num_classes is not None and len(weight) != num_classes:
            raise ValueError(f"class_weights has {len(weight)} values for {num_classes} classes")
    return SegmentationLoss(reduction, weight, ignore_index, ohem_thresh, ohem_min_kept)


def global_batch_loss(
    criterion: nn.Module, logits: torch.Tensor, masks: torch.Tensor, world_size: int
) -> torch.Tensor:
    """This rank's share of the loss of the global batch under data parallelism: the loss
    whose gradient, averaged over ``world_size`` ranks as DDP does, is the gradient of the
    single-process loss of the whole batch (``criterion`` itself for one process).

    ``"mean"`` divides the sum of this rank's (weighted) pixel losses by the all-reduced
    global count of valid pixels, times ``world_size``: averaging per-rank means would weight
    pixels unequally when ranks hold different numbers of ignore pixels. ``"sum"`` is already
    exact (divided by the local images, equal on every rank).
    """
    if world_size == 1 or not isinstance(criterion, SegmentationLoss):
        return criterion(logits, masks)
    if criterion.reduction == "sum":
        return criterion(logits, masks)
    masks = criterion.hard_pixels(logits, masks)  # each rank mines its own shard (as mmseg)
    total = F.cross_entropy(
        logits.float(), masks, weight=criterion.weight, ignore_index=criterion.ignore_index,
        reduction="sum",
    )  # fmt: skip
    valid = masks != criterion.ignore_index
    weight = criterion.weight
    count = valid.sum() if weight is None else weight[masks[valid]].sum()
    count = all_reduce_sum(count.to(torch.float64).reshape(1))
    return total * (world_size / count).to(total.dtype).squeeze(0)
