"""Tests for fcnseg.metrics: the FCN paper's four metrics and Boundary IoU."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fcnseg.metrics import BoundaryIoU, ConfusionMatrix, class_labels, format_table

IGNORE = 255
FAST = settings(max_examples=40, deadline=None)


def reference_scores(hist: np.ndarray) -> dict:
    """The four metrics exactly as the Caffe reference score.py writes them."""
    hist = hist.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        freq = hist.sum(1) / hist.sum()
        return {
            "pixel_acc": np.diag(hist).sum() / hist.sum(),
            "mean_acc": np.nanmean(acc),
            "mean_iou": np.nanmean(iu),
            "fw_iou": (freq[freq > 0] * iu[freq > 0]).sum(),
            "iou": iu,
            "acc": acc,
        }


def assert_scores_close(got: dict, want: dict) -> None:
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert got[key] == pytest.approx(float(want[key]), abs=1e-12), key
    for key in ("iou", "acc"):
        np.testing.assert_allclose(np.array(got[key]), want[key], atol=1e-12, equal_nan=True)


def assert_same(got: dict, want: dict) -> None:
    """Exact equality of two score dicts, NaN == NaN."""
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(np.array(got[key]), np.array(want[key]), err_msg=key)


def scores_of(pred, target, num_classes, **kw) -> dict:
    cm = ConfusionMatrix(num_classes, **kw)
    cm.update(torch.as_tensor(pred), torch.as_tensor(target))
    return cm.compute()


# --------------------------------------------------------------------------- ConfusionMatrix


def test_hand_computed_three_classes():
    target = torch.tensor([[0, 1, 2, IGNORE], [1, 1, 2, 0]])
    pred = torch.tensor([[0, 2, 2, 1], [1, 0, 2, 0]])
    # Ignored pixel (0, 3) is dropped; 7 pixels remain. Rows = GT, cols = prediction:
    #   GT 0: predicted 0, 0            -> [2, 0, 0]
    #   GT 1: predicted 2, 1, 0         -> [1, 1, 1]
    #   GT 2: predicted 2, 2            -> [0, 0, 2]
    # pixel_acc = (2 + 1 + 2) / 7 = 5/7
    # acc       = [2/2, 1/3, 2/2]                 mean_acc = (1 + 1/3 + 1) / 3 = 7/9
    # iou_0 = 2 / (2 + 3 - 2) = 2/3;  iou_1 = 1 / (3 + 1 - 1) = 1/3;  iou_2 = 2 / (2 + 3 - 2) = 2/3
    # mean_iou  = (2/3 + 1/3 + 2/3) / 3 = 5/9
    # freq = [2/7, 3/7, 2/7];  fw_iou = 2/7 * 2/3 + 3/7 * 1/3 + 2/7 * 2/3 = 11/21
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.mat.tolist() == [[2, 0, 0], [1, 1, 1], [0, 0, 2]]
    assert cm.mat.dtype == torch.int64
    s = cm.compute()
    assert s["pixel_acc"] == pytest.approx(5 / 7)
    assert s["mean_acc"] == pytest.approx(7 / 9)
    assert s["mean_iou"] == pytest.approx(5 / 9)
    assert s["fw_iou"] == pytest.approx(11 / 21)
    assert s["iou"] == pytest.approx([2 / 3, 1 / 3, 2 / 3])
    assert s["acc"] == pytest.approx([1.0, 1 / 3, 1.0])
    assert all(isinstance(s[k], float) for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"))


def test_compute_matches_numpy_reference_on_random_matrices():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(2, 12))
        hist = rng.integers(0, 50, size=(n, n)) * (rng.random((n, n)) < 0.6)
        if trial % 3 == 0:  # a class absent from GT but predicted: acc NaN, iou 0
            hist[0, :] = 0
            hist[1, 0] = 5
        if trial % 3 == 1:  # a class absent from GT and from predictions: NaN both
            hist[-1, :] = 0
            hist[:, -1] = 0
        if hist.sum() == 0:
            hist[0, 0] = 1
        cm = ConfusionMatrix(n)
        cm.mat = torch.from_numpy(hist).long()
        got, want = cm.compute(), reference_scores(hist)
        assert_scores_close(got, want)
        if trial % 3 == 0:
            assert math.isnan(got["acc"][0]) and got["iou"][0] == 0.0
        if trial % 3 == 1:
            assert math.isnan(got["acc"][-1]) and math.isnan(got["iou"][-1])


def test_update_matches_numpy_histogram():
    rng = np.random.default_rng(1)
    n = 7
    target = rng.integers(0, n, size=(3, 20, 30))
    target[rng.random(target.shape) < 0.2] = IGNORE
    pred = rng.integers(0, n, size=target.shape)
    keep = target != IGNORE
    want = np.bincount(n * target[keep] + pred[keep], minlength=n * n).reshape(n, n)
    for dtype in (torch.int64, torch.int32, torch.uint8):
        cm = ConfusionMatrix(n)
        cm.update(torch.from_numpy(pred).to(dtype), torch.from_numpy(target).to(dtype))
        np.testing.assert_array_equal(cm.mat.numpy(), want)


def test_ignore_pixels_are_not_counted():
    target = torch.full((4, 4), IGNORE)
    target[0, 0] = 1
    pred = torch.full((4, 4), 2)  # wrong everywhere, but only one pixel is scored
    pred[0, 0] = 1
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.mat.sum() == 1 and cm.mat[1, 1] == 1
    assert cm.compute()["pixel_acc"] == 1.0


@pytest.mark.parametrize("bad", [3, 7, 254, -2])
def test_out_of_range_target_raises_naming_values(bad):
    target = torch.tensor([[0, 1, bad], [2, IGNORE, 1]])
    with pytest.raises(ValueError, match=str(bad)):
        ConfusionMatrix(3).update(torch.zeros_like(target), target)


def test_out_of_range_prediction_raises_but_not_at_ignored_pixels():
    target = torch.tensor([[0, 1, IGNORE]])
    with pytest.raises(ValueError, match="9"):
        ConfusionMatrix(3).update(torch.tensor([[0, 9, 1]]), target)
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1, IGNORE]]), target)  # pred copies the ignore value: fine
    assert cm.mat.trace() == 2 and cm.mat.sum() == 2


def test_negative_and_far_away_ignore_index():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 4, size=(2, 9, 9))
    pred = rng.integers(0, 4, size=target.shape)
    holes = rng.random(target.shape) < 0.3
    want = scores_of(pred, np.where(holes, IGNORE, target), 4)
    # ignore_index=-1 shifts the bincount keys; 65535 takes the masked fallback path
    for ignore in (-1, 65535):
        t = torch.from_numpy(np.where(holes, ignore, target)).int()
        assert_same(scores_of(pred, t, 4, ignore_index=ignore), want)
    with pytest.raises(ValueError, match="1000"):
        ConfusionMatrix(4, ignore_index=65535).update(
            torch.zeros(1, 3, dtype=torch.long), torch.tensor([[0, 65535, 1000]])
        )


def test_logits_equal_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, 7, generator=g)
    target = torch.randint(0, 5, (2, 6, 7), generator=g)
    target[:, 0] = IGNORE
    assert_same(scores_of(logits, target, 5), scores_of(logits.argmax(1), target, 5))
    # unbatched: (C, H, W) logits with an (H, W) target
    assert_same(scores_of(logits[0], target[0], 5), scores_of(logits[0].argmax(0), target[0], 5))


def test_shape_and_type_errors():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        cm.update(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        cm.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError):
        cm.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4))


def test_accumulating_batches_equals_one_update():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 6, (6, 10, 12), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = IGNORE
    pred = torch.randint(0, 6, target.shape, generator=g)
    whole, parts = ConfusionMatrix(6), ConfusionMatrix(6)
    whole.update(pred, target)
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):
        parts.update(pred[sl], target[sl])
    parts.update(pred[:0], target[:0])  # an empty batch adds nothing
    assert torch.equal(whole.mat, parts.mat)
    a, b = ConfusionMatrix(6), ConfusionMatrix(6)
    a.update(pred[:2], target[:2])
    b.update(pred[2:], target[2:])
    assert torch.equal(a.merge(b).mat, whole.mat)
    whole.reset()
    assert whole.mat.sum() == 0
    assert all(math.isnan(v) for v in (whole.compute()["pixel_acc"], whole.compute()["mean_iou"]))


def test_all_reduce_is_a_noop_without_distributed():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    before = cm.mat.clone()
    cm.all_reduce()
    assert torch.equal(cm.mat, before)


def labels(n: int) -> st.SearchStrategy:
    return st.integers(0, n - 1)


labels_2d = st.integers(2, 6).flatmap(
    lambda n: st.tuples(
        st.just(n),
        hnp.arrays(
            np.int64,
            st.tuples(st.integers(1, 8), st.integers(1, 8)),
            elements=st.integers(0, n - 1),
        ),
    )
)


@FAST
@given(data=st.data(), case=labels_2d)
def test_permuting_class_ids_permutes_iou(data, case):
    n, target = case
    pred = data.draw(hnp.arrays(np.int64, target.shape, elements=st.integers(0, n - 1)))
    perm = np.array(data.draw(st.permutations(range(n))))
    base = scores_of(pred, target, n)
    moved = scores_of(perm[pred], perm[target], n)
    # class c is now called perm[c]
    np.testing.assert_allclose(np.array(moved["iou"])[perm], base["iou"], equal_nan=True)
    np.testing.assert_allclose(np.array(moved["acc"])[perm], base["acc"], equal_nan=True)
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert moved[key] == pytest.approx(base[key], abs=1e-12)


@FAST
@given(data=st.data(), case=labels_2d)
def test_inserting_ignore_pixels_changes_nothing(data, case):
    n, target = case
    pred = data.draw(hnp.arrays(np.int64, target.shape, elements=st.integers(0, n - 1)))
    base = scores_of(pred, target, n)
    flat_t, flat_p = target.reshape(-1), pred.reshape(-1)
    where = data.draw(st.lists(st.integers(0, flat_t.size), min_size=1, max_size=10))
    junk = data.draw(st.lists(st.integers(0, 255), min_size=len(where), max_size=len(where)))
    t2 = np.insert(flat_t, where, IGNORE)[None]
    p2 = np.insert(flat_p, where, junk)[None]  # whatever is predicted there
    assert_same(scores_of(p2, t2, n), base)


@FAST
@given(case=labels_2d)
def test_perfect_prediction_scores_one(case):
    n, target = case
    s = scores_of(target, target, n)
    assert s["pixel_acc"] == s["mean_acc"] == s["mean_iou"] == s["fw_iou"] == 1.0
    present = set(np.unique(target).tolist())
    for c in range(n):
        if c in present:
            assert s["iou"][c] == s["acc"][c] == 1.0
        else:
            assert math.isnan(s["iou"][c]) and math.isnan(s["acc"][c])


# ------------------------------------------------------------------------------ BoundaryIoU


def square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.long)
    m[top : top + side, left : left + side] = 1
    return m


def test_boundary_band_of_a_square_by_hand():
    gt = square(12, 3, 3, 6)  # rows/cols 3..8
    # d = 1: the foreground band is the square's 6*4 - 4 = 20 contour pixels; the background
    # band is the 8x8 ring just outside it (3x3 neighbourhood): 8*4 - 4 = 28 pixels.
    b = BoundaryIoU(2, dilation=1)
    b.update(gt, gt)
    assert b.intersection.tolist() == [28, 20] and b.union.tolist() == [28, 20]
    assert b.compute() == {"boundary_iou": 1.0, "boundary_iou_per_class": [1.0, 1.0]}

    # Shift the prediction one column right (cols 4..9). Foreground rings share their top
    # and bottom rows on cols 4..8: 2 * 5 = 10 pixels, union 20 + 20 - 10 = 30 -> 1/3.
    # Background rings (cols 2..9 vs 3..10) share rows 2 and 9 on cols 3..9: 14 pixels,
    # union 28 + 28 - 14 = 42 -> 1/3.
    b = BoundaryIoU(2, dilation=1)
    b.update(square(12, 3, 4, 6), gt)
    assert b.intersection.tolist() == [14, 10] and b.union.tolist() == [42, 30]
    assert b.compute()["boundary_iou"] == pytest.approx(1 / 3)

    # The boundary-iou-api convention: the image frame (44 pixels, all background, matched)
    # joins the background band.
    b = BoundaryIoU(2, dilation=1, border_is_contour=True)
    b.update(square(12, 3, 4, 6), gt)
    assert b.intersection.tolist() == [14 + 44, 10] and b.union.tolist() == [42 + 44, 30]


def test_shifted_prediction_is_punished_more_than_mask_iou():
    gt = square(64, 10, 10, 40)
    pred = square(64, 13, 13, 40)  # shifted 3 px diagonally
    cm, b = ConfusionMatrix(2), BoundaryIoU(2)  # default d = round(0.02 * 90.5) = 2
    cm.update(pred, gt)
    b.update(pred, gt)
    mask_iou, boundary_iou = cm.compute()["mean_iou"], b.compute()["boundary_iou"]
    assert mask_iou > 0.7
    assert boundary_iou < 0.3
    assert boundary_iou < mask_iou - 0.4


def test_boundary_dilation_from_ratio():
    assert BoundaryIoU(2)._band_width(512, 512) == 14  # round(0.02 * 724.1)
    assert BoundaryIoU(2)._band_width(10, 10) == 1  # never below one pixel
    assert BoundaryIoU(2, dilation=3)._band_width(512, 512) == 3
    with pytest.raises(ValueError):
        BoundaryIoU(2, dilation=0)


def test_boundary_ignores_predictions_at_ignored_pixels():
    # VOC-style: the object is surrounded by a 1-pixel ignore band.
    gt = square(16, 4, 4, 8)
    gt[3:13, 3:13][square(10, 0, 0, 10).bool() & ~square(10, 1, 1, 8).bool()] = IGNORE
    pred = square(16, 3, 3, 10)  # spills over the ignore band
    b = BoundaryIoU(2, dilation=1)
    b.update(pred, gt)
    assert b.compute()["boundary_iou"] == 1.0
    assert b.union.sum() > 0
    with pytest.raises(ValueError, match="7"):
        b.update(pred, torch.full_like(gt, 7))


@FAST
@given(data=st.data(), case=labels_2d, d=st.integers(1, 3), border=st.booleans())
def test_boundary_properties(data, case, d, border):
    n, target = case
    target = target.copy()
    holes = data.draw(hnp.arrays(np.bool_, target.shape))
    target[holes] = IGNORE
    pred = data.draw(hnp.arrays(np.int64, target.shape, elements=st.integers(0, n - 1)))

    def run(p, t):
        b = BoundaryIoU(n, dilation=d, border_is_contour=border)
        b.update(torch.from_numpy(p), torch.from_numpy(t))
        return b.compute()

    base = run(pred, target)
    # perfect prediction (on the scored pixels) gives 1.0 wherever a band exists
    perfect = run(np.where(holes, 0, target), target)
    assert all(v == 1.0 or math.isnan(v) for v in perfect["boundary_iou_per_class"])
    # renaming classes renames the per-class scores
    perm = np.array(data.draw(st.permutations(range(n))))
    lut = np.arange(256)
    lut[:n] = perm
    moved = run(perm[pred], lut[target])
    np.testing.assert_allclose(
        np.array(moved["boundary_iou_per_class"])[perm], base["boundary_iou_per_class"]
    )
    # what is predicted at ignored pixels does not matter
    other = data.draw(hnp.arrays(np.int64, target.shape, elements=st.integers(0, n - 1)))
    assert_same(run(np.where(holes, other, pred), target), base)


def test_boundary_accumulation_and_logits():
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 3, (4, 6, 6), generator=g).repeat_interleave(3, 1)
    target = target.repeat_interleave(3, 2)  # blocky 18x18 labels
    logits = torch.randn(4, 3, 18, 18, generator=g) + 3 * torch.nn.functional.one_hot(
        target, 3
    ).permute(0, 3, 1, 2)
    whole, parts = BoundaryIoU(3), BoundaryIoU(3)
    whole.update(logits, target)
    parts.update(logits[:1], target[:1])
    parts.update(logits[1:].argmax(1), target[1:])
    assert torch.equal(whole.intersection, parts.intersection)
    assert torch.equal(whole.union, parts.union)
    whole.reset()
    assert whole.union.sum() == 0


# ------------------------------------------------------------------------------ format_table


def test_format_table():
    s = scores_of(torch.tensor([[0, 2, 2, 1], [1, 0, 2, 0]]), torch.tensor([[0, 1, 2, 255]] * 2), 4)
    s["boundary_iou"] = 0.25
    table = format_table(s, ["background", "cat", "dog", "unicorn"])
    assert "mean IoU" in table and f"{100 * s['mean_iou']:.1f}" in table
    assert "boundary IoU" in table and "25.0" in table
    lines = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.strip()}
    assert lines["cat"] == [f"{100 * s['iou'][1]:.1f}", f"{100 * s['acc'][1]:.1f}"]
    assert lines["unicorn"] == ["-", "-"]  # never in GT, never predicted
    assert "class 0" in format_table(s)
    with pytest.raises(ValueError):
        format_table(s, ["too", "few"])


@pytest.mark.parametrize("shape, dim", [((2, 11, 9, 13), 1), ((11, 9, 13), -3), ((3, 5), 1)])
def test_class_labels_are_the_argmax_first_on_ties(shape, dim):
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, shape, generator=g).float()  # many ties
    labels = class_labels(scores, dim=dim)
    assert labels.dtype == torch.int64 and torch.equal(labels, scores.argmax(dim))
    # on a tie, the first of the tied classes (argmax's documented rule)
    tie = torch.zeros(1, 4, 1, 1)
    tie[0, 1] = tie[0, 3] = 1.0
    assert class_labels(tie).item() == 1
