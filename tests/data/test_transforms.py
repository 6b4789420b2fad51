"""Joint transforms, normalisation and batching (fcnseg.data.transforms / collate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import tv_tensors

from fcnseg.data import (
    CAFFE_PREPROCESS,
    DEFAULT_PREPROCESS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    build_transforms,
    denormalize,
    pad_collate,
)

# Output value = input uint8 value, so transformed pixels can be read back exactly.
IDENTITY = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "value_scale": 255.0}


def label_encoded_pair(rng: np.random.Generator, h: int, w: int, block: int, n_labels: int = 10):
    """Blocky random labels; image R = 20 * label + 10, G = 128, B = 200 (never 0)."""
    grid = rng.integers(0, n_labels, size=(-(-h // block), -(-w // block)))
    labels = np.kron(grid, np.ones((block, block), dtype=np.int64))[:h, :w]
    img = np.empty((3, h, w), dtype=np.uint8)
    img[0] = 20 * labels + 10
    img[1] = 128
    img[2] = 200
    return tv_tensors.Image(torch.from_numpy(img)), tv_tensors.Mask(torch.from_numpy(labels))


def coordinate_pair(h: int, w: int):
    """Image R / G = linear ramps of x / y (bilinear resampling keeps ramps exact), B = 200;
    mask = 256 + y * w + x (the pixel's own coordinates, never 255)."""
    kx, ky = 255.0 / (w - 1), 255.0 / (h - 1)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([(xs * kx).round(), (ys * ky).round(), torch.full_like(xs, 200)])
    image = tv_tensors.Image(img.to(torch.uint8))
    return image, tv_tensors.Mask(256 + ys * w + xs), (kx, ky)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.integers(12, 48),
    w=st.integers(12, 48),
    crop=st.tuples(st.integers(8, 64), st.integers(8, 64)),
    lo=st.floats(0.5, 2.0),
    span=st.floats(0.0, 0.5),
)
def test_train_transforms_keep_image_and_mask_aligned(seed, h, w, crop, lo, span):
    torch.manual_seed(seed)
    image, mask, (kx, ky) = coordinate_pair(h, w)
    t = build_transforms(
        True, crop_size=crop, scale_range=(lo, lo + span), color_jitter=0.0, preprocess=IDENTITY
    )
    x, m = t(image, mask)

    assert type(x) is torch.Tensor and type(m) is torch.Tensor
    assert x.dtype == torch.float32 and m.dtype == torch.int64
    assert x.shape == (3, *crop) and m.shape == crop
    # nearest resampling: only source values (or the padding label) appear in the mask
    assert set(m.unique().tolist()) <= set(mask.unique().tolist()) | {255}

    x = x.round()
    # Padding: image 0 exactly where the mask is 255 (B is 200 everywhere in the input).
    pad = m == 255
    assert torch.equal(x[2] == 0, pad)
    # Away from the crop / padding edges (where antialiasing filters are cut), the image's
    # coordinate ramps, sampled bilinearly, agree with the mask's nearest source pixel to
    # within half a source pixel plus rounding: same scale, crop and flip for both.
    inner = nnf.max_pool2d(pad.double()[None, None], 3, stride=1, padding=1)[0, 0] == 0
    inner[0] = inner[-1] = False
    inner[:, 0] = inner[:, -1] = False
    my, mx = (m[inner] - 256) // w, (m[inner] - 256) % w
    assert torch.all((x[0][inner] / kx - mx).abs() <= 0.5 + 1.0 / kx + 1e-3)
    assert torch.all((x[1][inner] / ky - my).abs() <= 0.5 + 1.0 / ky + 1e-3)


@pytest.mark.parametrize("scale", [0.75, 0.9, 1.0, 1.25])
def test_scale_then_crop_on_the_window_matches_scaling_the_whole_image(scale):
    # RandomScaleCrop resizes only the window under the crop; what it returns must be what
    # RandomScale + RandomCrop return: the source sampled every 1/scale pixels from an
    # offset that is an integer crop offset on the scaled image, in range, uniformly placed.
    h, w, crop = 360, 480, (176, 240)
    image, mask, _ = coordinate_pair(h, w)
    t = build_transforms(
        True, crop_size=crop, scale_range=(scale, scale), hflip=False, color_jitter=0.0
    )
    starts = []
    for seed in range(40):
        torch.manual_seed(seed)
        _, m = t(image, mask)
        assert m.shape == crop and not (m == 255).any()  # fits: no padding
        ys, xs = (m - 256) // w, (m - 256) % w
        for src, n, full, axis in ((ys[:, 0], crop[0], h, "y"), (xs[0], crop[1], w, "x")):
            # the position (start + i + 0.5) / scale - 0.5 of output i on the scaled grid
            ideal = (torch.arange(n) + 0.5) / scale - 0.5
            start = round(float((src - ideal).median()) * scale)
            # nearest sampling (half a source pixel) plus the window's rounding (half a scaled
            # pixel at each end of the window, over the crop: 1/scale)
            assert (src - (ideal + start / scale)).abs().max() <= 0.5 + 1.0 / scale + 1e-6
            assert 0 <= start <= round(full * scale) - n
            starts.append((axis, start / (round(full * scale) - n)))
    for axis in "yx":  # offsets spread over their range (40 uniform draws)
        spread = [f for a, f in starts if a == axis]
        assert min(spread) < 0.2 and max(spread) > 0.8


@pytest.mark.parametrize("seed", range(5))
def test_crop_and_flip_without_scaling_are_pixel_exact(seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    image, mask = label_encoded_pair(rng, 30, 40, block=3)
    t = build_transforms(
        True, crop_size=(36, 36), scale_range=(1.0, 1.0), color_jitter=0.0, preprocess=IDENTITY
    )
    x, m = t(image, mask)
    x = x.round().long()
    valid = m != 255
    assert valid.sum() == 30 * 36  # 40 wide cropped to 36; 30 high padded to 36
    assert torch.equal(x[0][valid], 20 * m[valid] + 10)
    assert torch.all(x[:, ~valid] == 0)


def test_scale_resizes_mask_with_nearest_and_image_jointly():
    image, mask = label_encoded_pair(np.random.default_rng(0), 20, 30, block=5)
    t = build_transforms(True, scale_range=(2.0, 2.0), hflip=False, color_jitter=0.0)
    x, m = t(image, mask)
    assert x.shape == (3, 40, 60) and m.shape == (40, 60)
    # nearest x2 of a 5-px block image = every pixel duplicated
    assert torch.equal(m, mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_photometric_jitter_leaves_mask_untouched():
    torch.manual_seed(0)
    image, mask = label_encoded_pair(np.random.default_rng(1), 24, 24, block=4)
    t = build_transforms(
        True, scale_range=(1.0, 1.0), hflip=False, color_jitter=0.8, preprocess=IDENTITY
    )
    x, m = t(image, mask)
    assert torch.equal(m, mask.as_subclass(torch.Tensor))
    assert not torch.equal(x.round().to(torch.uint8), image.as_subclass(torch.Tensor))


@pytest.mark.parametrize("size", [(17, 23), (64, 48), (5, 90)])
def test_eval_transforms_keep_size_and_labels(size):
    image, mask = label_encoded_pair(np.random.default_rng(2), *size, block=2)
    mask[0, 0] = 255
    x, m = build_transforms(False)(image, mask)
    assert x.shape == (3, *size) and x.dtype == torch.float32
    assert torch.equal(m, mask.as_subclass(torch.Tensor)) and m.dtype == torch.int64
    expected = Normalize(DEFAULT_PREPROCESS)(image)
    torch.testing.assert_close(x, expected)


def test_eval_base_size_resizes_shorter_side_and_mask_nearest():
    image, mask = label_encoded_pair(np.random.default_rng(3), 20, 40, block=4)
    x, m = build_transforms(False, base_size=10)(image, mask)
    assert x.shape == (3, 10, 20) and m.shape == (10, 20)
    assert set(m.unique().tolist()) <= set(mask.unique().tolist())


def test_transforms_accept_pil_and_numpy_inputs():
    rgb = np.random.default_rng(4).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    labels = np.random.default_rng(5).integers(0, 3, (9, 11)).astype(np.uint8)
    t = build_transforms(False)
    x1, m1 = t(Image.fromarray(rgb), Image.fromarray(labels))
    x2, m2 = t(rgb, labels)
    torch.testing.assert_close(x1, x2)
    assert torch.equal(m1, m2) and m1.dtype == torch.int64 and m1.shape == (9, 11)


def test_default_preprocess_is_imagenet():
    assert DEFAULT_PREPROCESS == {
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "value_scale": 1.0,
        "channel_order": "RGB",
    }
    img = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    out = Normalize(DEFAULT_PREPROCESS)(img)
    for c in range(3):
        assert out[c].allclose(torch.tensor((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))


def test_caffe_preprocess_matches_reference_convention():
    # voc_layers.py: in_ = array(im, float32); in_ = in_[:, :, ::-1]; in_ -= mean (BGR)
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    caffe = rgb.astype(np.float32)[:, :, ::-1] - np.array(CAFFE_PREPROCESS["mean"], np.float32)
    caffe = torch.from_numpy(caffe.transpose(2, 0, 1).copy())
    ours_u8 = Normalize(CAFFE_PREPROCESS)(torch.from_numpy(rgb.transpose(2, 0, 1).copy()))
    ours_float = Normalize(CAFFE_PREPROCESS)(torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0))
    torch.testing.assert_close(ours_u8, caffe, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_float.float(), caffe, atol=1e-3, rtol=0)


@pytest.mark.parametrize("preprocess", [DEFAULT_PREPROCESS, CAFFE_PREPROCESS])
def test_normalize_denormalize_round_trip(preprocess):
    img = torch.randint(0, 256, (2, 3, 6, 5), dtype=torch.uint8)  # batched input works too
    norm = Normalize(preprocess)(img)
    assert norm.shape == img.shape and norm.is_floating_point()
    assert torch.equal(denormalize(norm, preprocess), img)


def test_preprocess_validation():
    with pytest.raises(ValueError, match="channel_order"):
        Normalize({"channel_order": "GBR"})
    with pytest.raises(ValueError, match="unknown"):
        Normalize({"means": [0, 0, 0]})
    with pytest.raises(ValueError):
        Normalize(DEFAULT_PREPROCESS)(torch.zeros(4, 5, 5))


def test_pad_collate_pads_images_with_zero_and_masks_with_ignore():
    a = (torch.ones(3, 4, 6), torch.zeros(4, 6, dtype=torch.int64))
    b = (torch.full((3, 7, 3), 2.0), torch.ones(7, 3, dtype=torch.int64))
    images, masks = pad_collate([a, b])
    assert images.shape == (2, 3, 7, 6) and masks.shape == (2, 7, 6)
    assert masks.dtype == torch.int64
    assert torch.all(images[0, :, :4, :6] == 1) and torch.all(images[0, :, 4:] == 0)
    assert torch.all(masks[0, :4, :6] == 0) and torch.all(masks[0, 4:] == 255)
    assert torch.all(images[1, :, :, 3:] == 0) and torch.all(masks[1, :, 3:] == 255)
    images, masks = pad_collate([a, b], ignore_index=-1, size_divisor=4)
    assert images.shape == (2, 3, 8, 8) and torch.all(masks[0, :, 6:] == -1)


def test_pad_collate_rejects_mismatched_sample():
    with pytest.raises(ValueError, match="sample 0"):
        pad_collate([(torch.zeros(3, 4, 4), torch.zeros(4, 5, dtype=torch.int64))])
