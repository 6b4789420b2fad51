"""The predict, export, heatmap and compare commands end to end, via ``fcnseg.cli.main``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import fcnseg
from fcnseg.cli import main
from fcnseg.data.palettes import load_index_png, save_index_png
from fcnseg.inference import model_palette, predict
from fcnseg.io.images import load_image
from fcnseg.models.pretrained import resolve_weights
from fcnseg.viz import colormap

from . import random_image, tiny_model


def _write_image(path, height, width, seed):
    img = random_image(height, width, seed)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)
    return img


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for arch in ("fcn32s", "fcn16s", "fcn8s"):
        paths[arch] = fcnseg.save_model(tiny_model(arch), root / f"{arch}.pt")
    return paths


def test_predict_command_writes_index_png_overlay_side(checkpoints, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    a = _write_image(images / "a.png", 64, 96, 1)
    _write_image(images / "b.jpg", 67, 101, 2)
    _write_image(images / "c.png", 64, 96, 3)
    other = tmp_path / "more"
    other.mkdir()
    _write_image(other / "d.bmp", 70, 80, 4)
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(checkpoints["fcn8s"]),
            str(images),
            str(other / "*.bmp"),
            "--out",
            str(out),
            "--overlay",
            "--alpha",
            "0.6",
            "--side-by-side",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "predicted 4 image(s)" in capsys.readouterr().out
    sizes = {"a": (64, 96), "b": (67, 101), "c": (64, 96), "d": (70, 80)}
    for stem, (h, w) in sizes.items():
        with Image.open(out / f"{stem}.png") as img:
            assert img.mode == "P" and img.size == (w, h)
        with Image.open(out / f"{stem}_overlay.png") as img:
            # the overlay at the image's size, a legend of the classes present below it
            assert img.mode == "RGB" and img.width == w and img.height > h + 18
        with Image.open(out / f"{stem}_side.png") as img:
            assert img.size == (2 * w, h)

    model = fcnseg.load_model(checkpoints["fcn8s"])
    expected = predict(model, a)[0]
    written = load_index_png(out / "a.png")
    assert np.array_equal(written, expected.numpy())  # labels read back unchanged
    palette = model_palette(model)
    with Image.open(out / "a.png") as img:
        assert img.getpalette()[: 3 * len(palette)] == [v for c in palette for v in c]
    # The overlay's legend names exactly the classes predicted, with their colours.
    overlay = np.asarray(Image.open(out / "a_overlay.png"))
    present = sorted(int(c) for c in np.unique(expected.numpy()))
    legend_colours = {tuple(c) for c in overlay[64:].reshape(-1, 3)}
    for c, colour in enumerate(palette):
        assert (tuple(colour) in legend_colours) == (c in present), (c, present)
    # The side-by-side's left half is the input itself.
    side = np.asarray(Image.open(out / "a_side.png"))
    assert np.array_equal(side[:, :96], a.permute(1, 2, 0).numpy())


def test_predict_command_low_memory_writes_the_same_labels(checkpoints, tmp_path):
    a = _write_image(tmp_path / "a.png", 64, 96, 1)
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(checkpoints["fcn8s"]), str(tmp_path / "a.png")]
    assert main([*args, "--out", str(out), "--device", "cpu", "--low-memory"]) == 0
    expected = predict(fcnseg.load_model(checkpoints["fcn8s"]), a, fast=False)[0]
    assert np.array_equal(load_index_png(out / "a.png"), expected.numpy())


def test_predict_command_tta_and_window(checkpoints, tmp_path):
    _write_image(tmp_path / "x.png", 67, 99, 5)
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(checkpoints["fcn32s"]), str(tmp_path / "x.png")]
    assert main([*args, "--out", str(out), "--tta", "flip,1.0,1.25", "--no-progress"]) == 0
    assert load_index_png(out / "x.png").shape == (67, 99)
    assert main([*args, "--out", str(out), "--window", "64", "--no-progress"]) == 0
    assert load_index_png(out / "x.png").shape == (67, 99)


def test_predict_command_errors(checkpoints, tmp_path, capsys):
    ckpt = str(checkpoints["fcn8s"])
    rc = main(["predict", "--checkpoint", ckpt, str(tmp_path / "nope.png"), "--out", "o"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "nope.png" in err and len(err.splitlines()) == 1
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _write_image(tmp_path / "a" / "x.png", 64, 64, 0)
    _write_image(tmp_path / "b" / "x.png", 64, 64, 1)
    both = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["predict", "--checkpoint", ckpt, *both, "--out", str(tmp_path / "o")]) == 2
    assert "x.png" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "safetensors"])
def test_export_command_prints_parity(checkpoints, tmp_path, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    suffix = {"onnx": "onnx", "torchscript": "pt", "safetensors": "safetensors"}[fmt]
    out = tmp_path / f"model.{suffix}"
    args = ["export", "--checkpoint", str(checkpoints["fcn32s"]), "--format", fmt]
    assert main([*args, "--out", str(out), "--size", "64x96"]) == 0
    text = capsys.readouterr().out
    assert out.is_file()
    assert "max abs logit diff" in text and "argmax agreement" in text and "PASS" in text
    if fmt == "safetensors":
        reloaded = fcnseg.load_model(out)
        assert reloaded.config["arch"] == "fcn32s"


def test_export_command_bad_size(checkpoints, tmp_path, capsys):
    args = ["export", "--checkpoint", str(checkpoints["fcn8s"]), "--format", "onnx"]
    assert main([*args, "--out", str(tmp_path / "m.onnx"), "--size", "big"]) == 2
    assert "--size" in capsys.readouterr().err


def test_heatmap_command_topk_with_weights_file(tmp_path, capsys):
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    _write_image(tmp_path / "img.png", 120, 160, 6)
    out = tmp_path / "heat.png"
    args = ["heatmap", "--backbone", "resnet18", "--weights", str(weights)]
    assert main([*args, str(tmp_path / "img.png"), "--topk", "2", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "meaningless" not in captured.err
    assert captured.out.count("class ") >= 2  # a file has no category names: "class K"
    with Image.open(out) as fig:
        assert fig.height > 120 and fig.width > 3 * 160  # input + 2 panels


def test_heatmap_command_random_init_warns(tmp_path, capsys):
    _write_image(tmp_path / "img.png", 64, 64, 7)  # smaller than 224: enlarged for the net
    out = tmp_path / "heat.png"
    args = ["heatmap", "--backbone", "resnet18", str(tmp_path / "img.png"), "--class", "5"]
    assert main([*args, "--out", str(out)]) == 0
    assert "meaningless without trained weights" in capsys.readouterr().err
    with Image.open(out) as fig:  # input | one panel | the colour bar (narrower than a panel)
        assert 2 * 64 < fig.width < 3 * 64 + 64


def test_heatmap_helpers(tmp_path):
    names = resolve_weights("vgg16", "IMAGENET1K_V1").categories  # enum metadata, no download
    assert len(names) == 1000 and names[0] == "tench"
    torch.save({}, tmp_path / "weights.pth")
    assert resolve_weights("vgg16", tmp_path / "weights.pth").categories is None
    lut = colormap(np.array([0.0, 0.5, 1.0]))
    assert lut.dtype == np.uint8 and lut[0, 2] > lut[0, 0] and lut[2, 0] > lut[2, 2]


def test_compare_command_figure4(checkpoints, tmp_path, capsys):
    _write_image(tmp_path / "img.png", 64, 96, 8)
    mask = torch.zeros(64, 96, dtype=torch.int64)
    mask[10:40, 20:60] = 2
    mask[0:5] = 255
    save_index_png(mask, tmp_path / "gt.png")
    out = tmp_path / "fig.png"
    ckpts = [str(checkpoints[a]) for a in ("fcn32s", "fcn16s", "fcn8s")]
    rc = main(
        [
            "compare",
            "--checkpoints",
            *ckpts,
            str(tmp_path / "img.png"),
            "--mask",
            str(tmp_path / "gt.png"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert "fcn32s, fcn16s, fcn8s" in capsys.readouterr().out
    with Image.open(out) as fig:
        assert fig.width >= 5 * 96  # input | 3 models | ground truth
        assert fig.height > 64 + 18  # and the legend below
    assert load_image(out).shape[0] == 3


def test_compare_command_mask_size_mismatch(checkpoints, tmp_path, capsys):
    _write_image(tmp_path / "img.png", 64, 96, 9)
    save_index_png(torch.zeros(10, 10, dtype=torch.int64), tmp_path / "gt.png")
    args = ["compare", "--checkpoints", str(checkpoints["fcn8s"]), str(tmp_path / "img.png")]
    assert main([*args, "--mask", str(tmp_path / "gt.png"), "--out", str(tmp_path / "f.png")]) == 2
    assert "gt.png" in capsys.readouterr().err
