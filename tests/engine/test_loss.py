import pytest
import torch

from fcnseg.data import build_dataset
from fcnseg.engine import build_loss, median_frequency_weights


def _batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    target[0, :2] = 255
    return logits, target


def test_sum_is_mean_times_pixels_per_image():
    logits, target = _batch()
    mean = build_loss("mean")(logits, target)
    total = build_loss("sum")(logits, target)
    valid = int((target != 255).sum())
    # "sum": summed over pixels, averaged over the batch (Caffe's normalize: false)
    assert total.item() == pytest.approx(mean.item() * valid / 2, rel=1e-5)


def test_ignore_pixels_do_not_count():
    logits, target = _batch()
    changed = logits.clone()
    changed[0, :, :2] = 100.0  # only at ignored pixels
    loss = build_loss("mean")
    assert loss(changed, target).item() == pytest.approx(loss(logits, target).item())


def test_class_weights_change_the_loss():
    logits, target = _batch()
    plain = build_loss("mean")(logits, target)
    weighted = build_loss("mean", [1.0, 5.0, 1.0, 1.0], num_classes=4)(logits, target)
    assert weighted.item() != pytest.approx(plain.item())
    with pytest.raises(ValueError, match="4 classes"):
        build_loss("mean", [1.0, 2.0], num_classes=4)


def test_median_frequency_weights():
    ds = build_dataset("shapes", split="train", size=(48, 48), length=6)
    w = median_frequency_weights(ds, ds.num_classes)
    assert len(w) == ds.num_classes
    assert w[0] < 1.0  # background is the most frequent class: weighted down
    assert max(w) > 1.0 and min(w) >= 0.0  # rarer classes weighted up
    loss = build_loss("mean", "median_freq", num_classes=ds.num_classes, dataset=ds)
    assert loss.weight.tolist() == pytest.approx(w)


def test_sqrt_median_frequency_is_the_square_root_of_the_full_balance():
    ds = build_dataset("shapes", split="train", size=(48, 48), length=6)
    full = median_frequency_weights(ds, ds.num_classes)
    soft = build_loss("mean", "sqrt_median_freq", num_classes=ds.num_classes, dataset=ds).weight
    assert soft.tolist() == pytest.approx([w**0.5 for w in full])
    # softer: every weight moves toward 1, the order of the classes stays
    assert all(abs(s - 1) <= abs(w - 1) for s, w in zip(soft.tolist(), full, strict=True))
    with pytest.raises(ValueError, match="sqrt_median_freq"):
        build_loss("mean", "median", num_classes=ds.num_classes, dataset=ds)


def _confident(n_right: int, n_wrong: int, margin: float = 10.0):
    """Logits (1, 3, 1, n) whose first ``n_right`` pixels put ``margin`` on their true class
    (probability ~1) and the next ``n_wrong`` put it on another class (probability ~0)."""
    n = n_right + n_wrong
    target = torch.arange(n).remainder(3).reshape(1, 1, n)
    guess = target.clone()
    guess[..., n_right:] = (guess[..., n_right:] + 1) % 3
    logits = margin * torch.nn.functional.one_hot(guess, 3).permute(0, 3, 1, 2).float()
    return logits.requires_grad_(), target


def test_ohem_counts_only_the_pixels_not_yet_right():
    logits, target = _confident(6, 4)
    plain = torch.nn.functional.cross_entropy(
        logits[..., 6:], target[..., 6:], reduction="mean"
    )  # the four wrong pixels alone
    mined = build_loss("mean", ohem_thresh=0.7)(logits, target)
    assert torch.allclose(mined, plain)
    mined.backward()
    assert logits.grad[..., :6].abs().max() == 0 and logits.grad[..., 6:].abs().min() > 0


def test_ohem_keeps_at_least_min_kept_of_the_hardest_pixels():
    logits, target = _confident(10, 0)  # every pixel right: none below the threshold
    with torch.no_grad():
        logits[0, :, 0, :3] *= torch.tensor([0.1, 0.2, 0.3]).reshape(1, 3)  # 3 less sure
    loss = build_loss("mean", ohem_thresh=0.5, ohem_min_kept=3)
    kept = loss.hard_pixels(logits, target)
    assert (kept != 255).sum() == 3 and torch.equal(kept[0, 0, :3], target[0, 0, :3])
    # more than are labelled: all labelled pixels, never an ignored one
    target[0, 0, 5:] = 255
    kept = build_loss("mean", ohem_thresh=0.5, ohem_min_kept=100).hard_pixels(logits, target)
    assert torch.equal(kept, target)


def test_ohem_threshold_one_is_the_plain_loss_and_bad_settings_are_refused():
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, 0] = 255
    plain = build_loss("mean", [1.0, 2.0, 0.5, 1.0], num_classes=4)(logits, target)
    mined = build_loss("mean", [1.0, 2.0, 0.5, 1.0], num_classes=4, ohem_thresh=1.0)
    assert torch.allclose(mined(logits, target), plain)
    with pytest.raises(ValueError, match="ohem_thresh"):
        build_loss("mean", ohem_thresh=0.0)
    with pytest.raises(ValueError, match="ohem_min_kept"):
        build_loss("mean", ohem_thresh=0.7, ohem_min_kept=-1)
