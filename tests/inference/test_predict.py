"""fcnseg.inference: predict / predict_logits, TTA, sliding window, image loading, inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image, features
from torch import nn

from fcnseg.data.palettes import load_index_png, save_index_png
from fcnseg.data.transforms import Normalize
from fcnseg.inference import (
    expand_inputs,
    model_palette,
    output_stride,
    predict,
    predict_logits,
    sliding_window_logits,
)
from fcnseg.inference.sliding import _tile_layout
from fcnseg.io.images import load_image

from . import random_image, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("fcn8s")


def _reference_labels(model, image: torch.Tensor) -> torch.Tensor:
    x = Normalize(model.preprocess)(image)[None]
    with torch.no_grad():
        return model(x).argmax(1)[0]


# --------------------------------------------------------------------------- predict


def test_predict_mixed_inputs_sizes_and_order(model, tmp_path):
    a, b, c = random_image(64, 96, 1), random_image(67, 101, 2), random_image(64, 96, 3)
    path = tmp_path / "b.png"
    Image.fromarray(b.permute(1, 2, 0).numpy()).save(path)
    pil = Image.fromarray(c.permute(1, 2, 0).numpy())
    as_float = a.float() / 255.0
    out = predict(model, [a, str(path), pil, as_float], batch_size=2, device="cpu")
    assert [tuple(m.shape) for m in out] == [(64, 96), (67, 101), (64, 96), (64, 96)]
    assert all(m.dtype == torch.int64 and m.device.type == "cpu" for m in out)
    assert torch.equal(out[0], _reference_labels(model, a))
    assert torch.equal(out[1], _reference_labels(model, b))
    assert torch.equal(out[2], _reference_labels(model, c))
    assert torch.equal(out[3], out[0])  # float [0, 1] input == its uint8 original
    assert len(torch.unique(out[0])) > 1  # the random score layers give varied labels


def test_predict_batch_tensor_and_training_flag_restored(model):
    batch = torch.stack([random_image(64, 96, 5), random_image(64, 96, 6)])
    model.train()
    try:
        out = predict(model, batch, batch_size=2)
        assert model.training  # restored
    finally:
        model.eval()
    assert len(out) == 2
    assert torch.equal(out[1], _reference_labels(model, batch[1]))


def test_predict_logits_shapes(model):
    logits = predict_logits(model, [random_image(65, 97)])
    assert len(logits) == 1 and logits[0].shape == (3, 65, 97)
    assert logits[0].dtype == torch.float32


def test_predict_bf16_runs_on_the_cpu_close_to_fp32(model):
    img = random_image(64, 96, 7)
    out = predict(model, img, precision="bf16")[0]
    assert out.shape == (64, 96) and out.dtype == torch.int64
    agree = (out == _reference_labels(model, img)).float().mean()
    assert agree > 0.9  # bfloat16 on the CPU: close, not identical


def test_tta_odd_size_and_flip_is_mean_of_model_and_mirror(model):
    img = random_image(67, 99, 8)  # odd sizes
    labels = predict(model, img, tta="flip,0.75,1.0,1.25")[0]
    assert labels.shape == (67, 99)
    got = predict_logits(model, img, tta="flip")[0]
    x = Normalize(model.preprocess)(img)[None]
    with torch.no_grad():
        p = model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)
    expected = (p / 2).log()[0]
    assert got.shape == (3, 67, 99)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_predict_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predict(model, [tmp_path / "nope.png"])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        predict(model, [random_image(64, 64), tmp_path / "bad.png"])
    with pytest.raises(ValueError, match="tta"):
        predict(model, random_image(64, 64), tta="flip,zoom")
    with pytest.raises(ValueError, match="overlap"):
        predict(model, random_image(64, 64), window=32, overlap=1.0)


# --------------------------------------------------------------------------- sliding window


class LocalNet(nn.Module):
    """Two 3x3 convolutions (receptive-field radius 2), optionally with a stride-2 stage.

    With ``stride=2`` the map is downsampled by a strided conv and brought back by a 2x2
    transposed conv; outputs are then only shift-equivariant for even shifts, like an FCN's
    stride-32 grid for shifts that are multiples of 32.
    """

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.output_stride = stride
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, padding=1, stride=stride)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2) if stride == 2 else nn.Identity()

    def forward(self, x):
        return self.up(self.b(torch.relu(self.a(x))))


@pytest.mark.parametrize("stride", [1, 2])
def test_sliding_window_equals_whole_image_for_local_model(stride):
    # The claim: with the ramp blend a pixel only takes logits from tiles where it lies at
    # least overlap//4 pixels from a cut; the receptive-field radius here is 2 (stride 1) or
    # 3 (stride 2) <= 16 // 4, and tile origins (multiples of 16) sit on the stride grid,
    # so every blended pixel equals the whole-image logits, border pixels included.
    net = LocalNet(stride).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        whole = net(x)
        tiled = sliding_window_logits(net, x, 32, overlap=0.5)
        averaged = sliding_window_logits(net, x, 32, overlap=0.5, blend="mean")
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)
    # Plain averaging mixes in the tiles' cut borders: not exact (why the ramp exists).
    assert (averaged - whole).abs().max() > 1e-3


def test_sliding_window_fcn_whole_image_when_window_covers_it(model):
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(sliding_window_logits(model, x, (64, 128)), model(x))
        tiled = sliding_window_logits(model, torch.randn(2, 3, 64, 128), 64, overlap=0.5)
    assert tiled.shape == (2, 3, 64, 128) and torch.isfinite(tiled).all()
    assert output_stride(model) == 32


def test_tile_layout_covers_image_with_aligned_origins():
    starts, overlap_px = _tile_layout(200, 64, 0.33, align=32)
    assert starts[0] == 0 and starts[-1] == 200 - 64  # last tile shifted inside the image
    assert all(s % 32 == 0 for s in starts[:-1])
    assert all(b - a <= 64 for a, b in zip(starts, starts[1:], strict=False))  # no gaps
    assert overlap_px == 32
    assert _tile_layout(50, 64, 0.33, align=32) == ([0], 0)


def test_predict_with_window_keeps_size(model):
    img = random_image(70, 100, 9)
    labels = predict(model, img, window=64, overlap=0.5)[0]
    assert labels.shape == (70, 100)


# --------------------------------------------------------------------------- images and inputs


def _save(array: np.ndarray, path, **kw):
    Image.fromarray(array).save(path, **kw)
    return path


@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "webp", "jpg"])
def test_load_image_formats(tmp_path, ext):
    if ext == "webp" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    rgb = random_image(20, 30, 4).permute(1, 2, 0).numpy()
    kw = {"lossless": True} if ext == "webp" else {}
    img = load_image(_save(rgb, tmp_path / f"a.{ext}", **kw))
    assert img.dtype == torch.uint8 and img.shape == (3, 20, 30)
    if ext != "jpg":  # lossless formats read back exactly
        assert np.array_equal(img.permute(1, 2, 0).numpy(), rgb)


def test_load_image_converts_grey_and_rgba_with_warning(tmp_path):
    grey = _save(np.full((8, 9), 77, np.uint8), tmp_path / "grey.png")
    rgba = _save(np.full((8, 9, 4), 200, np.uint8), tmp_path / "alpha.png")
    with pytest.warns(UserWarning, match="grey.png"):
        g = load_image(grey)
    assert g.shape == (3, 8, 9) and int(g[1, 0, 0]) == 77
    with pytest.warns(UserWarning, match="alpha.png.*alpha channel dropped"):
        a = load_image(rgba)
    assert a.shape == (3, 8, 9) and int(a[0, 0, 0]) == 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # RGB: no warning
        load_image(_save(np.zeros((4, 4, 3), np.uint8), tmp_path / "rgb.png"))


def test_load_image_pixel_limit_and_errors(tmp_path):
    path = _save(np.zeros((40, 50, 3), np.uint8), tmp_path / "big.png")
    default = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="big.png.*exceeds"):
        load_image(path, max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == default  # PIL's global guard left as it was
    assert load_image(path, max_pixels=2000).shape == (3, 40, 50)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="junk.png"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_expand_inputs_files_folders_globs(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("b.png", "a.JPG", "c.txt", "d.webp"):
        (d / name).write_bytes(b"x")
    single = tmp_path / "z.bmp"
    single.write_bytes(b"x")
    assert expand_inputs([d]) == [d / "a.JPG", d / "b.png", d / "d.webp"]
    assert expand_inputs([str(d / "*.png"), single, d / "b.png"]) == [d / "b.png", single]
    with pytest.raises(FileNotFoundError, match="nothere"):
        expand_inputs([tmp_path / "nothere"])
    with pytest.raises(FileNotFoundError, match=r"\*\.tif"):
        expand_inputs([str(d / "*.tif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        expand_inputs([tmp_path / "empty"])


def test_index_png_round_trip_with_palette(model, tmp_path):
    labels = predict(model, random_image(64, 96, 11))[0]
    palette = model_palette(model)
    path = tmp_path / "pred.png"
    save_index_png(labels, path, palette)
    assert np.array_equal(load_index_png(path), labels.numpy())
    with Image.open(path) as img:
        assert img.mode == "P"
        stored = img.getpalette()[: 3 * len(palette)]
    assert stored == [v for colour in palette for v in colour]
