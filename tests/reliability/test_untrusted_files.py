"""Files fcnseg did not write itself: checkpoints, huge images, and paths from recipes.

A checkpoint for another model is refused naming both; a pickle that would run code is refused
before it runs; a decompression bomb is refused naming the file; a full disk while saving keeps
the previous checkpoint; an output path that escapes the run folder is refused.
"""

from __future__ import annotations

import errno
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.cli import main
from fcnseg.config import ConfigError, config_from_dict, load_config, safe_output_path
from fcnseg.data import FolderSegmentation
from fcnseg.data.validation import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    ImageTooLargeError,
    check_split,
    read_image,
    set_max_image_pixels,
)
from fcnseg.io.files import CheckpointError, atomic_save, load_file
from tests.reliability.test_bad_data import good_labels, make_clean_folder, write_image, write_mask

# --------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """An fcnseg checkpoint of FCN-32s / MobileNetV3 (the smallest backbone), 3 classes."""
    torch.manual_seed(0)
    model = fcnseg.build_model("fcn32s", backbone="mobilenet_v3_large", num_classes=3)
    return fcnseg.save_model(model, tmp_path_factory.mktemp("ckpt") / "small.pt")


def test_checkpoint_for_other_num_classes_is_refused_naming_both(small_checkpoint):
    with pytest.raises(CheckpointError) as info:
        fcnseg.build_model(
            "fcn32s", backbone="mobilenet_v3_large", num_classes=5, weights=small_checkpoint
        )
    message = str(info.value)
    assert str(small_checkpoint) in message
    assert "num_classes=3" in message and "num_classes=5" in message


def test_checkpoint_for_other_backbone_is_refused_naming_both(small_checkpoint):
    with pytest.raises(CheckpointError) as info:
        fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3, weights=small_checkpoint)
    message = str(info.value)
    assert "'mobilenet_v3_large'" in message and "'resnet18'" in message


def test_truncated_checkpoint_is_a_checkpoint_error(small_checkpoint, tmp_path):
    cut = tmp_path / "cut.pt"
    data = small_checkpoint.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        fcnseg.load_model(cut)


class _WritesAMarker:
    """Unpickling this calls ``open(marker, "w")``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    payload = {"format": "fcnseg", "config": {"arch": "fcn32s"}, "model": _WritesAMarker(marker)}
    torch.save(payload, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        fcnseg.load_model(evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused to load"):
        fcnseg.build_model("fcn32s", backbone="mobilenet_v3_large", num_classes=3, weights=evil)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it (so the test above means something).
    torch.load(evil, weights_only=False)
    assert marker.exists()


# --------------------------------------------------------------------------- model input size


def test_image_too_small_for_alexnet_is_a_value_error_and_check_data_finds_it(tmp_path):
    model = fcnseg.build_model("fcn32s", backbone="alexnet", num_classes=3).eval()
    min_size = model.backbone.min_input_size
    with torch.no_grad(), pytest.raises(ValueError, match=f"20x24 is smaller than the {min_size}"):
        model(torch.zeros(1, 3, 20, 24))

    root = make_clean_folder(tmp_path / "data", n=0)
    write_image(root / "train" / "images" / "big.png", 40, 40)
    write_mask(root / "train" / "masks" / "big.png", good_labels(40, 40))
    write_image(root / "train" / "images" / "tiny.png", 20, 24)
    write_mask(root / "train" / "masks" / "tiny.png", good_labels(20, 24))
    report = check_split("folder", root, "train", min_size=min_size)
    assert report.counts == {"image too small": 1}
    assert report.lines[0].startswith(str(root / "train" / "images" / "tiny.png"))
    assert f"20x24 is smaller than the {min_size} px" in report.lines[0]


# --------------------------------------------------------------------------- decompression bombs


@pytest.fixture
def pixel_limit(monkeypatch):
    """Restore PIL's limit and the environment variable after the test."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.setenv(MAX_PIXELS_ENV, "unset-by-test")  # undone: the variable goes away again
    monkeypatch.delenv(MAX_PIXELS_ENV)


@pytest.fixture
def big_folder(tmp_path) -> Path:
    root = make_clean_folder(tmp_path / "data", n=0)
    write_image(root / "train" / "images" / "big.png", 100, 100)
    write_mask(root / "train" / "masks" / "big.png", good_labels(100, 100))
    return root


@pytest.mark.parametrize("limit", [1000, 6000])  # over 2x the limit (PIL's error), and under
def test_decompression_bomb_is_refused_naming_the_file(pixel_limit, big_folder, limit):
    assert set_max_image_pixels(limit) == DEFAULT_MAX_IMAGE_PIXELS
    image = big_folder / "train" / "images" / "big.png"
    with pytest.raises(
        ImageTooLargeError, match=f"^{image}: image has .* pixels, over the limit of {limit} "
    ):
        read_image(image)
    with pytest.raises(ValueError) as info:
        FolderSegmentation(big_folder, "train")[0]
    message = str(info.value)
    assert message.startswith(f"{image}: image has ") and "decompression bomb" in message
    report = check_split("folder", big_folder, "train")
    assert report.counts == {"image too large": 2}  # the image and its mask
    set_max_image_pixels(DEFAULT_MAX_IMAGE_PIXELS)
    assert FolderSegmentation(big_folder, "train")[0][0].shape == (3, 100, 100)


def test_check_data_max_image_pixels_option(pixel_limit, big_folder, capsys):
    argv = ["check-data", "--dataset", "folder", "--root", str(big_folder), "--split", "train"]
    assert main([*argv, "--max-image-pixels", "1000"]) == 2
    out = capsys.readouterr().out
    assert re.search(r"^image too large\s+2$", out, re.MULTILINE)
    assert f"{big_folder / 'train' / 'images' / 'big.png'}: image" in out
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_IMAGE_PIXELS  # restored afterwards
    assert main(argv) == 0


def test_pixel_limit_reaches_new_processes_and_rejects_nonsense(pixel_limit):
    set_max_image_pixels(1234)
    assert os.environ[MAX_PIXELS_ENV] == "1234"
    code = "import fcnseg.data; from PIL import Image; print(Image.MAX_IMAGE_PIXELS)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1234"  # a spawned DataLoader worker sees the same limit
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            set_max_image_pixels(bad)


# --------------------------------------------------------------------------- disk full


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    previous = {"step": 1, "w": torch.arange(1000.0)}
    atomic_save(previous, path)
    before = path.read_bytes()

    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: buffer.tell() // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError) as info:
        atomic_save({"step": 2, "w": torch.zeros(100_000)}, path)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    loaded = load_file(path)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], previous["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


# --------------------------------------------------------------------------- output paths


@pytest.mark.parametrize(
    "out, reason",
    [
        ("../outside", "has a '..' component"),
        ("runs/../../outside", "has a '..' component"),
        ("/etc/fcnseg", "is absolute"),
        ("~/runs", "starts with '~'"),
        ("C:/runs", "is absolute"),
        ("", "must name a folder"),
    ],
)
def test_recipe_out_may_not_leave_the_working_folder(out, reason):
    with pytest.raises(ConfigError, match=re.escape(reason)):
        config_from_dict({"out": out})


def test_out_given_explicitly_is_trusted(tmp_path):
    assert config_from_dict({"out": "runs/a/b"}).out == "runs/a/b"
    assert load_config(None, [f"out={tmp_path}"]).out == str(tmp_path)  # --set out=...
    assert config_from_dict({"out": str(tmp_path)}, trust_out=True).out == str(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("out: /tmp/elsewhere\n")
    with pytest.raises(ConfigError, match="is absolute"):
        load_config(recipe)
    assert load_config(recipe, ["out=runs/mine"]).out == "runs/mine"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", ""])
def test_stage_names_are_single_path_components(name):
    stages = [{"name": name}, {"name": "ok"}]
    with pytest.raises(ConfigError, match=r"stages\[0\]\.name"):
        config_from_dict({"out": "runs/x", "stages": stages})


def test_safe_output_path_refuses_names_that_escape(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    assert safe_output_path(out, "best.pt") == out / "best.pt"
    assert safe_output_path(out, "fcn8s/./best.pt") == out / "fcn8s" / "best.pt"
    assert safe_output_path(out, "a/../b.png") == out / "b.png"
    for name in ["../x.pt", "a/../../x.pt", "/etc/passwd", "", ".", "a\x00b"]:
        with pytest.raises(ConfigError):
            safe_output_path(out, name)
    (out / "link").symlink_to(tmp_path)  # a symlink inside the run folder pointing out of it
    with pytest.raises(ConfigError, match="escapes the run folder"):
        safe_output_path(out, "link/x.pt")
