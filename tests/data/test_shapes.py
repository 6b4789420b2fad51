"""The embedded synthetic ``shapes`` dataset."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from fcnseg.data import SHAPES_CLASSES, build_dataset, build_transforms
from fcnseg.data.shapes import SHAPES_HUES

N_CLASSES = len(SHAPES_CLASSES)


def test_metadata_and_default_lengths():
    train = build_dataset("shapes")
    assert len(train) == 512 and len(build_dataset("shapes", split="val")) == 64
    assert train.num_classes == N_CLASSES == 7 and train.files == []
    assert train.classes == ["background", "red", "yellow", "green", "cyan", "blue", "magenta"]
    assert len(train.palette) >= N_CLASSES and len(set(train.palette)) == N_CLASSES
    assert len(build_dataset("shapes", length=5)) == 5
    with pytest.raises(ValueError, match="split"):
        build_dataset("shapes", split="holdout")


def test_samples_have_the_dataset_contract():
    ds = build_dataset("shapes", split="val", size=(96, 128), length=8)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
        assert image.dtype == torch.uint8 and image.shape == (3, 96, 128)
        assert mask.dtype == torch.int64 and mask.shape == (96, 128)
        assert int(mask.min()) >= 0 and int(mask.max()) < N_CLASSES
        assert (mask > 0).any() and (mask == 0).any()  # objects and background
        assert image.float().std() > 10  # textured, not blank


def test_deterministic_from_seed_split_and_index():
    a = build_dataset("shapes", split="train", seed=3, length=4)
    b = build_dataset("shapes", split="train", seed=3, length=4)
    np.random.seed(123)  # global random state must not matter
    torch.manual_seed(123)
    for i in range(4):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert torch.equal(a[2][0], a[-2][0])
    assert not torch.equal(a[0][0], a[1][0])
    other_seed = build_dataset("shapes", split="train", seed=4, length=4)
    assert not torch.equal(a[0][0], other_seed[0][0])
    b2 = pickle.loads(pickle.dumps(b))  # DataLoader workers get a copy
    assert torch.equal(b2[1][1], a[1][1])


def test_train_and_val_differ():
    train = build_dataset("shapes", split="train", length=16)
    val = build_dataset("shapes", split="val", length=16)
    train_images = {train[i][0].numpy().tobytes() for i in range(16)}
    assert not any(val[i][0].numpy().tobytes() in train_images for i in range(16))


def _hue(pixels: np.ndarray) -> np.ndarray:
    """Hue in degrees of uint8 RGB rows (N, 3)."""
    rgb = pixels.astype(np.float64) / 255.0
    mx, mn = rgb.max(1), rgb.min(1)
    d = np.maximum(mx - mn, 1e-9)
    r, g, b = rgb.T
    h = np.where(mx == r, (g - b) / d % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return 60.0 * h


def test_every_class_appears_and_local_colour_tells_the_class():
    ds = build_dataset("shapes", split="train", length=64)
    counts = np.zeros(N_CLASSES, dtype=np.int64)
    hits = np.zeros(N_CLASSES, dtype=np.int64)
    sat = {0: [], 1: []}
    for i in range(len(ds)):
        image, mask = ds[i]
        m = mask.numpy().ravel()
        counts += np.bincount(m, minlength=N_CLASSES)
        pixels = image.numpy().reshape(3, -1).T
        rgb = pixels.astype(np.float64)
        s = (rgb.max(1) - rgb.min(1)) / np.maximum(rgb.max(1), 1.0)
        sat[0].append(s[m == 0])
        sat[1].append(s[m > 0])
        hue = _hue(pixels)
        for c in range(1, N_CLASSES):
            # the class hue: nearest of the six hues, as a small net can read it
            diff = np.abs((hue[m == c] - SHAPES_HUES[c - 1] + 180) % 360 - 180)
            hits[c] += int((diff < 30).sum())
    assert (counts > 0).all(), counts
    assert counts[1:].min() > 0.02 * counts.sum()  # every object class has real support
    assert counts[0] < 0.85 * counts.sum()  # objects are not a speck on the background
    # Local evidence: most pixels of a class carry its hue; background is grey, objects not.
    assert (hits[1:] > 0.9 * counts[1:]).all(), hits[1:] / counts[1:]
    assert np.median(np.concatenate(sat[0])) < 0.25 < np.median(np.concatenate(sat[1]))


def test_objects_come_in_three_sizes():
    """Small objects (finer than a stride-16 cell), medium ones and large ones, every class."""
    from scipy import ndimage

    ds = build_dataset("shapes", split="val", length=32)
    diameters = {c: [] for c in range(1, N_CLASSES)}
    for i in range(len(ds)):
        mask = ds[i][1].numpy()
        for c in range(1, N_CLASSES):
            labels, n = ndimage.label(mask == c)
            areas = np.bincount(labels.ravel())[1:]
            diameters[c] += list(2 * np.sqrt(areas / np.pi))  # equivalent disk diameter
    every = np.concatenate([np.asarray(v) for v in diameters.values()])
    assert (every < 12).sum() > 50  # small: under a stride-16 cell
    assert ((every > 16) & (every < 32)).sum() > 30  # medium
    assert (every > 40).sum() > 20  # large
    for c, d in diameters.items():  # sizes do not tell the class either
        assert min(d) < 14 and max(d) > 30, (SHAPES_CLASSES[c], min(d), max(d))


def test_transforms_apply_to_generated_samples():
    t = build_transforms(True, crop_size=(64, 64), color_jitter=0.0)
    image, mask = build_dataset("shapes", split="val", length=2, transforms=t)[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (64, 64) and set(mask.unique().tolist()) <= set(range(7)) | {255}
