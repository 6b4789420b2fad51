"""The embedded synthetic ``shapes`` dataset."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from fcnseg.data import SHAPES_CLASSES, build_dataset, build_transforms

N_CLASSES = len(SHAPES_CLASSES)


def test_metadata_and_default_lengths():
    train = build_dataset("shapes")
    assert len(train) == 512 and len(build_dataset("shapes", split="val")) == 64
    assert train.num_classes == N_CLASSES == 7 and train.files == []
    assert train.classes == ["background", "disk", "square", "triangle", "ring", "cross", "bar"]
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


def test_every_class_appears_and_colour_does_not_tell_the_class():
    ds = build_dataset("shapes", split="train", length=96)
    counts = np.zeros(N_CLASSES, dtype=np.int64)
    per_image_means: list[list[np.ndarray]] = [[] for _ in range(N_CLASSES)]
    for i in range(len(ds)):
        image, mask = ds[i]
        m = mask.numpy().ravel()
        counts += np.bincount(m, minlength=N_CLASSES)
        pixels = image.numpy().reshape(3, -1).T.astype(np.float64)
        for c in np.unique(m):
            per_image_means[c].append(pixels[m == c].mean(0))
    assert (counts > 0).all(), counts
    assert counts[1:].min() > 200  # every object class has real support, thin ones included
    assert min(len(v) for v in per_image_means) >= 24  # each class in many images
    # All classes draw colour and texture from one distribution: the average colour of
    # each object class is the same mid-grey (uniform colours), not a class signature.
    mean = np.array([np.mean(v, axis=0) for v in per_image_means[1:]])
    assert np.all(np.abs(mean - 127.5) < 35), mean
    assert np.ptp(mean, axis=0).max() < 50, mean


def test_transforms_apply_to_generated_samples():
    t = build_transforms(True, crop_size=(64, 64), color_jitter=0.0)
    image, mask = build_dataset("shapes", split="val", length=2, transforms=t)[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (64, 64) and set(mask.unique().tolist()) <= set(range(7)) | {255}
