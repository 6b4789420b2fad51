"""Segmentation metrics: the FCN paper's four scores and Boundary IoU.

``ConfusionMatrix`` accumulates a (num_classes, num_classes) histogram of
(ground truth, prediction) pairs over a dataset and derives from it, exactly as the
Caffe reference ``score.py`` (shelhamer/fcn.berkeleyvision.org, ``fast_hist`` and
``compute_hist``/``seg_tests``) does:

- pixel accuracy      sum_i n_ii / sum_ij n_ij
- mean accuracy       (1/n_cl) sum_i n_ii / t_i
- mean IU             (1/n_cl) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
- frequency-weighted IU  (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

(Long, Shelhamer, Darrell, CVPR 2015, Sec. 5), where n_ij counts pixels of class i
predicted as class j and t_i = sum_j n_ij. Classes whose ratio is 0/0 are NaN and are
skipped by the means (the reference's ``np.nanmean``).

``BoundaryIoU`` implements Boundary IoU (Cheng, Girshick, Dollar, Berg, Kirillov,
"Boundary IoU: Improving Object-Centric Image Segmentation Evaluation", CVPR 2021)
for semantic segmentation, accumulated over a dataset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["BoundaryIoU", "ConfusionMatrix", "class_labels", "format_table"]


def class_labels(scores: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The predicted class of every pixel: the index of the largest score along ``dim``
    (the first one on a tie), as ``scores.argmax(dim)``, int64.

    ``max(dim).indices``, not ``argmax``: on the CPU torch's ``argmax`` over a short class
    dimension with a large stride (``(N, C, H, W)`` logits, ``C`` ~ 10-20) runs an order of
    magnitude slower than ``max``, for the same indices (``benchmarks/README.md``)."""
    return scores.max(dim).indices


# Above this many bins the single-bincount trick in ``ConfusionMatrix.update`` would
# allocate too much; we then fall back to an explicit mask.
_MAX_TRICK_BINS = 1 << 22


def _as_device(device: torch.device | str | None) -> torch.device | None:
    return None if device is None else torch.device(device)


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Check shapes and turn logits into labels.

    Args:
        pred: (N, H, W) or (H, W) integer labels, or logits with one more dimension,
            (N, C, H, W) or (C, H, W), where C == num_classes.
        target: (N, H, W) or (H, W) integer labels.

    Returns:
        (pred_labels, target, pred_known_in_range); the flag is True when the labels
        come from an argmax and so cannot be out of range.

    Raises:
        TypeError: when inputs are not tensors, or the target is not integer.
        ValueError: on shape or device mismatch.
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("pred and target must be torch.Tensor")
    if target.dim() not in (2, 3):
        raise ValueError(f"target must be (N, H, W) or (H, W), got shape {tuple(target.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}")
    from_logits = pred.dim() == target.dim() + 1
    if from_logits:
        # The class dimension is the third from the end: (N, C, H, W) or (C, H, W).
        if pred.shape[-3] != num_classes:
            raise ValueError(
                f"logits have {pred.shape[-3]} channels (dim -3) but num_classes={num_classes}"
            )
        pred = class_labels(pred, dim=-3)
    elif pred.is_floating_point():
        raise ValueError(
            "pred is floating point with the same number of dims as target: pass integer "
            f"labels or logits (N, C, H, W); got pred {tuple(pred.shape)}, "
            f"target {tuple(target.shape)}"
        )
    elif pred.dtype == torch.bool:
        pred = pred.to(torch.uint8)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred labels {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    return pred, target, from_logits


def _check_pred_range(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """Raise on predicted labels outside [0, num_classes) at non-ignored pixels.

    One min/max pass in the common case. Out-of-range predictions at ignored pixels are
    harmless (they are never counted) and are zeroed so they cannot spill into bins.
    """
    lo, hi = (int(v) for v in pred.aminmax()) if pred.numel() else (0, 0)
    if lo >= 0 and hi < num_classes:
        return pred
    bad = ((pred < 0) | (pred >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        values = torch.unique(pred[bad]).tolist()
        raise ValueError(
            f"pred has labels outside [0, {num_classes}) at non-ignored pixels: {values[:20]}"
        )
    return torch.where(target == ignore_index, torch.zeros_like(pred), pred)


def _check_target_range(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise ValueError naming target values outside [0, num_classes) other than ignore."""
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()
        raise ValueError(
            f"target has labels outside [0, {num_classes}) that are not "
            f"ignore_index={ignore_index}: {values[:20]}"
        )


def _nan_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den in float64 with NaN where den == 0 (the reference's 0/0 -> nan)."""
    num, den = num.double(), den.double()
    out = num / den
    return torch.where(den > 0, out, torch.full_like(out, math.nan))


def _all_reduce_sum(t: torch.Tensor) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)


class ConfusionMatrix:
    """Confusion matrix over a dataset and the FCN paper's four metrics.

    Args:
        num_classes: number of classes C; labels are 0..C-1.
        ignore_index: target value whose pixels are skipped (VOC's 255 boundary band).
        device: where ``mat`` lives. ``None``: ``mat`` follows the inputs' device, so
            accumulation happens where the predictions are (no host copies on GPU).

    Attributes:
        mat: (C, C) int64; ``mat[i, j]`` counts pixels of ground-truth class i predicted
            as class j (rows = ground truth, columns = prediction).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._device = _as_device(device)
        self.mat = torch.zeros(
            (self.num_classes, self.num_classes), dtype=torch.int64, device=self._device
        )

    def reset(self) -> None:
        """Zero the matrix (keeps its device)."""
        self.mat.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch to the matrix.

        Args:
            pred: (N, H, W) or (H, W) integer labels, or logits (N, C, H, W) / (C, H, W)
                (argmax over the class dimension when ``pred.dim() == target.dim() + 1``).
            target: (N, H, W) or (H, W) integer labels; ``ignore_index`` pixels are skipped.

        Raises:
            ValueError: shape/device mismatch; target values outside [0, C) that are not
                ``ignore_index`` (the message names them); predicted labels outside [0, C)
                at non-ignored pixels.
        """
        pred, target, in_range = _prepare(pred, target, self.num_classes)
        if not in_range:
            pred = _check_pred_range(pred, target, self.num_classes, self.ignore_index)
        hist = self._histogram(pred, target)
        if self._device is None:
            if self.mat.device != hist.device:
                self.mat = self.mat.to(hist.device)
        else:
            hist = hist.to(self._device)
        self.mat += hist

    def _histogram(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(C, C) int64 histogram of one batch; pred already known to be in [0, C)."""
        n = self.num_classes
        if target.numel() == 0:
            return torch.zeros((n, n), dtype=torch.int64, device=target.device)
        lo, hi = (int(v) for v in target.aminmax())
        lo, hi = min(lo, 0), max(hi, n - 1)
        rows = hi - lo + 1
        if rows * n > _MAX_TRICK_BINS:
            return self._histogram_masked(pred, target)
        # One bincount over *every* target value present, ignore included: the key
        # n * target + pred needs no boolean mask (masked indexing compacts the tensor
        # and is ~10x slower), and the rows of the result outside [0, n) tell us for free
        # whether the target held bad values. Keys are int32 (they fit: rows * n is small),
        # which makes bincount cheaper; int32/int64 inputs are added in their own (wide)
        # type, narrower ones are widened first so that n * target cannot overflow.
        if torch.promote_types(pred.dtype, target.dtype) in (torch.int32, torch.int64):
            key = torch.empty(target.shape, dtype=torch.int32, device=target.device)
            torch.add(pred, target, alpha=n, out=key)
        else:
            key = pred.to(torch.int32)
            key.add_(target, alpha=n)
        if lo < 0:
            key.sub_(lo * n)
        counts = torch.bincount(key.reshape(-1), minlength=rows * n).view(rows, n)
        self._raise_on_bad_rows(counts, lo)
        return counts[-lo : n - lo]

    def _raise_on_bad_rows(self, counts: torch.Tensor, lo: int) -> None:
        """Rows of ``counts`` are target values lo..hi; any non-ignore row outside [0, n)
        with pixels in it is a bad label."""
        n = self.num_classes
        if lo == 0 and counts.shape[0] == n:
            return
        values = torch.arange(lo, lo + counts.shape[0], device=counts.device)
        candidates = ((values < 0) | (values >= n)) & (values != self.ignore_index)
        bad = candidates & (counts.sum(1) > 0)
        if bool(bad.any()):
            raise ValueError(
                f"target has labels outside [0, {n}) that are not "
                f"ignore_index={self.ignore_index}: {values[bad].tolist()[:20]}"
            )

    def _histogram_masked(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Fallback for very spread-out target values (e.g. ignore_index=65535)."""
        n = self.num_classes
        _check_target_range(target, n, self.ignore_index)
        valid = target != self.ignore_index
        key = torch.add(pred[valid].long(), target[valid].long(), alpha=n)
        return torch.bincount(key, minlength=n * n).view(n, n)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (e.g. from another worker); returns self."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self) -> None:
        """Sum ``mat`` over torch.distributed ranks; no-op when not initialised.

        With NCCL the matrix must be on this rank's GPU (it is, when updated with GPU tensors).
        """
        _all_reduce_sum(self.mat)

    def compute(self) -> dict:
        """The reference score.py metrics from the accumulated matrix.

        Returns:
            dict with python floats in [0, 1]: ``pixel_acc``, ``mean_acc``, ``mean_iou``,
            ``fw_iou``; and per-class lists ``iou``, ``acc`` (length C). ``acc[c]`` is NaN
            when class c never occurs in the ground truth; ``iou[c]`` is NaN when it neither
            occurs nor is predicted. NaN classes are skipped in the means; all values are NaN
            when nothing was accumulated.
        """
        hist = self.mat.detach().to("cpu", torch.float64)
        diag = hist.diagonal()
        gt = hist.sum(1)  # t_i
        predicted = hist.sum(0)
        total = hist.sum()
        acc = _nan_div(diag, gt)
        iou = _nan_div(diag, gt + predicted - diag)
        seen = gt > 0
        return {
            "pixel_acc": float(diag.sum() / total) if total > 0 else math.nan,
            "mean_acc": float(torch.nanmean(acc)),
            "mean_iou": float(torch.nanmean(iou)),
            # The reference's sum(freq * iu) with freq = t_i / total, dividing once at the
            # end so that a perfect prediction scores exactly 1.0.
            "fw_iou": float((gt[seen] * iou[seen]).sum() / total) if total > 0 else math.nan,
            "iou": iou.tolist(),
            "acc": acc.tolist(),
        }

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.mat.sum())})"
        )


def _window_is_mixed(x: torch.Tensor, d: int, border_is_contour: bool) -> torch.Tensor:
    """Whether each pixel's (2d+1)x(2d+1) window holds more than one label.

    Args:
        x: (N, 1, H, W) float labels.
        d: half-width of the window.
        border_is_contour: treat pixels outside the image as a label of their own.

    Returns:
        (N, H, W) bool.
    """
    k = 2 * d + 1
    if border_is_contour:
        # A -inf frame is "another label" for every pixel within d of the border.
        x = F.pad(x, (d, d, d, d), value=-math.inf)
        row_pad, col_pad = (0, 0), (0, 0)
    else:
        # max_pool2d pads with -inf, i.e. outside pixels are simply not in the window:
        # the mask is extended with its own values and the border is no contour.
        row_pad, col_pad = (0, d), (d, 0)

    def max_filter(t: torch.Tensor) -> torch.Tensor:
        # A square max filter is separable: a row pass then a column pass, O(k), not O(k^2).
        t = F.max_pool2d(t, (1, k), stride=1, padding=row_pad)
        return F.max_pool2d(t, (k, 1), stride=1, padding=col_pad)

    return (max_filter(x) != -max_filter(-x)).squeeze(1)


class BoundaryIoU:
    """Boundary IoU (Cheng et al., CVPR 2021) for semantic segmentation, over a dataset.

    For each class c let G be the ground-truth mask of c and P the predicted one. G_d ∩ G is
    the set of pixels of G within distance d of G's contour (the inner boundary band), P_d ∩ P
    likewise. Per class,

        boundary IoU_c = sum |(G_d ∩ G) ∩ (P_d ∩ P)| / sum |(G_d ∩ G) ∪ (P_d ∩ P)|

    with both sums over all images; ``boundary_iou`` is the mean over classes whose union is
    non-empty (NaN classes skipped, like mean IU). Unlike mask IoU, it does not let the large
    interior of a region hide a sloppy contour.

    Distance is the chessboard distance used by the paper's implementation (d iterations of
    a 3x3 erosion == one (2d+1)x(2d+1) erosion). Because a pixel of class c is in c's band
    exactly when its window holds another label, the band of every class is found at once
    with one max- and one min-filter over the label map (no one-hot), with torch ops, so it
    runs on GPU too.

    Ignore pixels (``target == ignore_index``) count as "not c" when finding contours, in the
    ground truth and in the prediction alike (VOC surrounds objects by a 255 band; the
    object's contour is still its contour), and are then removed from both band sets. So
    whatever is predicted at ignored pixels does not change the score.

    Args:
        num_classes: number of classes C.
        ignore_index: ignored target value.
        dilation: band width d in pixels; ``None`` -> d = max(1, round(dilation_ratio *
            image diagonal)), the paper's choice (ratio 0.02).
        dilation_ratio: see ``dilation``.
        border_is_contour: ``False`` (default): the image border is not a contour (the mask
            is extended with its own value), so a region cut by the frame, such as sky or
            road, is not scored on the frame. ``True`` reproduces the boundary-iou-api's
            ``mask_to_boundary`` (bowenc0221/boundary-iou-api, ``boundary_utils.py``), which
            pads with zeros "so mask truncated by the image border is also considered as
            boundary".
        device: where the accumulators live; ``None``: they follow the inputs.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        dilation: int | None = None,
        dilation_ratio: float = 0.02,
        device: torch.device | str | None = None,
        *,
        border_is_contour: bool = False,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if dilation is not None and dilation < 1:
            raise ValueError(f"dilation must be >= 1 pixel, got {dilation}")
        if dilation is None and not dilation_ratio > 0:
            raise ValueError(f"dilation_ratio must be > 0, got {dilation_ratio}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.dilation = dilation
        self.dilation_ratio = float(dilation_ratio)
        self.border_is_contour = bool(border_is_contour)
        self._device = _as_device(device)
        self.intersection = torch.zeros(self.num_classes, dtype=torch.int64, device=self._device)
        self.union = torch.zeros(self.num_classes, dtype=torch.int64, device=self._device)

    def _band_width(self, h: int, w: int) -> int:
        if self.dilation is not None:
            return int(self.dilation)
        return max(1, round(self.dilation_ratio * math.hypot(h, w)))

    def reset(self) -> None:
        """Zero the accumulators."""
        self.intersection.zero_()
        self.union.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch; same input conventions and errors as ``ConfusionMatrix.update``.

        Args:
            pred: (N, H, W) / (H, W) integer labels or logits (N, C, H, W) / (C, H, W).
            target: (N, H, W) / (H, W) integer labels.
        """
        n = self.num_classes
        pred, target, in_range = _prepare(pred, target, n)
        if not in_range:
            pred = _check_pred_range(pred, target, n, self.ignore_index)
        _check_target_range(target, n, self.ignore_index)
        if target.dim() == 2:
            pred, target = pred.unsqueeze(0), target.unsqueeze(0)
        d = self._band_width(target.shape[-2], target.shape[-1])

        valid = target != self.ignore_index
        # The prediction gets the ground truth's ignore pixels too, so both masks see the
        # same "unknown" regions: what is predicted at ignored pixels cannot change the score
        # (otherwise a prediction running into VOC's ignore band would lose its contour).
        pred_seen = torch.where(valid, pred.float(), float(self.ignore_index))
        g_band = _window_is_mixed(target.unsqueeze(1).float(), d, self.border_is_contour)
        p_band = _window_is_mixed(pred_seen.unsqueeze(1), d, self.border_is_contour)
        g_band &= valid
        p_band &= valid
        both = g_band & p_band & (pred == target)

        # Per-class counts by bincount; pixels outside a set go to the spare bin n.
        def count(mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            key = torch.where(mask, labels.long(), n)
            return torch.bincount(key.reshape(-1), minlength=n + 1)[:n]

        inter = count(both, target)
        union = count(g_band, target) + count(p_band, pred) - inter
        if self._device is None:
            if self.intersection.device != inter.device:
                self.intersection = self.intersection.to(inter.device)
                self.union = self.union.to(inter.device)
        else:
            inter, union = inter.to(self._device), union.to(self._device)
        self.intersection += inter
        self.union += union

    def all_reduce(self) -> None:
        """Sum the accumulators over torch.distributed ranks; no-op when not initialised."""
        _all_reduce_sum(self.intersection)
        _all_reduce_sum(self.union)

    def compute(self) -> dict:
        """Returns ``{"boundary_iou": float, "boundary_iou_per_class": list[float]}``
        (NaN for classes with an empty union; the mean skips them)."""
        per_class = _nan_div(self.intersection.cpu(), self.union.cpu())
        return {
            "boundary_iou": float(torch.nanmean(per_class)),
            "boundary_iou_per_class": per_class.tolist(),
        }

    def __repr__(self) -> str:
        return (
            f"BoundaryIoU(num_classes={self.num_classes}, dilation={self.dilation}, "
            f"dilation_ratio={self.dilation_ratio}, border_is_contour={self.border_is_contour})"
        )


def _pct(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{100.0 * x:.1f}"


def format_table(scores: dict, class_names: list[str] | None = None) -> str:
    """Plain-text table of ``ConfusionMatrix.compute()`` (optionally merged with
    ``BoundaryIoU.compute()``) results, in percent with one decimal.

    Args:
        scores: dict with ``pixel_acc``, ``mean_acc``, ``mean_iou``, ``fw_iou`` and
            optionally ``boundary_iou``, ``iou``, ``acc``, ``boundary_iou_per_class``.
        class_names: names for the per-class rows; default ``class 0``, ``class 1``, ...

    Returns:
        The table; NaN entries print as ``-``.

    Raises:
        ValueError: when ``class_names`` has a different length than the per-class lists.
    """
    lines = []
    summary = [
        ("pixel acc", "pixel_acc"),
        ("mean acc", "mean_acc"),
        ("mean IoU", "mean_iou"),
        ("fw IoU", "fw_iou"),
        ("boundary IoU", "boundary_iou"),
    ]
    for label, key in summary:
        if key in scores:
            lines.append(f"{label:<14}{_pct(scores[key]):>7}")

    columns = [
        (head, scores[key])
        for head, key in (("IoU", "iou"), ("acc", "acc"), ("bIoU", "boundary_iou_per_class"))
        if scores.get(key) is not None
    ]
    if columns:
        num = len(columns[0][1])
        if any(len(values) != num for _, values in columns):
            raise ValueError("per-class lists in scores have different lengths")
        if class_names is None:
            class_names = [f"class {i}" for i in range(num)]
        if len(class_names) != num:
            raise ValueError(f"{len(class_names)} class names for {num} classes")
        width = max(5, *(len(name) for name in class_names))
        lines.append("")
        lines.append(f"{'class':<{width}}" + "".join(f"{head:>8}" for head, _ in columns))
        lines.append("-" * (width + 8 * len(columns)))
        for i, name in enumerate(class_names):
            lines.append(
                f"{name:<{width}}" + "".join(f"{_pct(values[i]):>8}" for _, values in columns)
            )
    return "\n".join(lines)
