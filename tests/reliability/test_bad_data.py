"""Bad data files are all found up front, and loading one names the file and the problem.

Every case is a tiny ``folder`` dataset built in tmp_path: a truncated PNG, a text file named
``.png``, an image without a mask, a mask of the wrong size, mask values 7 and 200 with
3 classes, an RGB mask without a palette, an empty split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.data import FolderSegmentation, ShapesSegmentation
from fcnseg.data.validation import (
    PROBLEM_KINDS,
    UnreadableImageError,
    check_dataset,
    check_split,
    read_image,
)

CLASSES = ["background", "square", "circle"]
H, W = 16, 20


def write_image(path: Path, h: int = H, w: int = W, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def write_mask(path: Path, labels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    return path


def good_labels(h: int = H, w: int = W) -> np.ndarray:
    labels = np.arange(h * w).reshape(h, w) % len(CLASSES)
    labels[0, :] = 255  # ignore is always allowed
    return labels


def write_truncated_png(path: Path) -> Path:
    write_image(path, 32, 32, seed=1)  # random pixels: the compressed data is large
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_clean_folder(root: Path, n: int = 2, splits: tuple[str, ...] = ("train",)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for split in splits:
        for i in range(n):
            write_image(root / split / "images" / f"ok{i}.png", seed=i)
            write_mask(root / split / "masks" / f"ok{i}.png", good_labels())
    return root


def make_bad_folder(root: Path) -> dict[str, Path]:
    """A folder dataset with one good pair and one pair per problem; returns stem -> the file
    the problem is about (the image for image problems and a missing mask, else the mask)."""
    make_clean_folder(root, n=1, splits=("train",))
    images, masks = root / "train" / "images", root / "train" / "masks"
    about: dict[str, Path] = {}

    about["truncated"] = write_truncated_png(images / "truncated.png")
    write_mask(masks / "truncated.png", good_labels(32, 32))

    about["text"] = images / "text.png"
    about["text"].write_text("this is not a PNG\n")
    write_mask(masks / "text.png", good_labels())

    about["nomask"] = write_image(images / "nomask.png")

    write_image(images / "size.png")
    about["size"] = write_mask(masks / "size.png", good_labels(H, W - 2))

    write_image(images / "values.png")
    labels = good_labels()
    labels[5, :5] = 7  # 5 pixels
    labels[6, :3] = 200  # 3 pixels
    about["values"] = write_mask(masks / "values.png", labels)

    write_image(images / "rgb.png")
    about["rgb"] = write_image(masks / "rgb.png", seed=3)  # colours, and no palette.txt

    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir(parents=True)
    return about


EXPECTED_KINDS = {
    "truncated": "unreadable image",
    "text": "unreadable image",
    "nomask": "missing mask",
    "size": "size mismatch",
    "values": "bad label values",
    "rgb": "colour mask",
}


@pytest.fixture
def bad_folder(tmp_path) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "data"
    return root, make_bad_folder(root)


# --------------------------------------------------------------------------- the up-front check


def test_check_reports_every_problem_at_once(bad_folder):
    root, about = bad_folder
    report = check_split("folder", root, "train")
    assert not report.ok
    assert report.pairs == {"train": 6}  # 7 images, one without a mask
    assert report.counts == {
        "unreadable image": 2,
        "missing mask": 1,
        "colour mask": 1,
        "size mismatch": 1,
        "bad label values": 1,
    }
    assert set(report.counts) <= set(PROBLEM_KINDS)
    by_file = {p.file: p for p in report.problems}
    for stem, kind in EXPECTED_KINDS.items():
        assert by_file[str(about[stem])].kind == kind, stem
    assert all(line.startswith(str(root)) for line in report.lines)


def test_check_names_offending_label_values_with_pixel_counts(bad_folder):
    root, about = bad_folder
    report = check_split("folder", root, "train")
    (problem,) = [p for p in report.problems if p.kind == "bad label values"]
    assert problem.file == str(about["values"])
    assert "7 (5 px)" in problem.message and "200 (3 px)" in problem.message
    assert "0..2" in problem.message and "255" in problem.message
    assert "8 of 320 pixels" in problem.message


def test_check_messages_say_what_is_wrong(bad_folder):
    root, about = bad_folder
    lines = check_split("folder", root, "train").lines
    text = "\n".join(lines)
    assert f"{about['truncated']}: unreadable or truncated image" in text
    assert f"{about['text']}: unreadable or truncated image (not an image file" in text
    assert f"{about['nomask']}: no mask (expected " in text
    assert f"{about['size']}: mask size 16x18 differs from image size 16x20" in text
    assert f"{about['rgb']}: colour (RGB) mask" in text


def test_empty_split_is_a_problem(bad_folder):
    root, _ = bad_folder
    report = check_split("folder", root, "val")
    assert report.counts == {"empty split": 1}
    assert "val" in report.lines[0]


def test_missing_split_folder_is_one_problem_not_a_crash(bad_folder):
    root, _ = bad_folder
    report = check_split("folder", root, "test")
    assert report.counts == {"unusable split": 1}
    assert str(root / "test" / "images") in report.lines[0]


def test_clean_data_passes(tmp_path):
    root = make_clean_folder(tmp_path / "clean", splits=("train", "val"))
    report = check_split("folder", root, "train") + check_split("folder", root, "val")
    assert report.ok and report.num_pairs == 4
    assert "no problems in 4 pairs" in report.summary()


def test_camvid_void_label_is_not_a_problem(tmp_path):
    root = tmp_path / "camvid"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(11)) + "\n")
    write_image(root / "train" / "images" / "a.png")
    labels = np.full((H, W), 11)  # CamVid's Unlabelled -> 255 (ignore)
    labels[0, 0] = 12  # not a class
    write_mask(root / "train" / "masks" / "a.png", labels)
    report = check_split("camvid", root, "train")
    assert report.counts == {"bad label values": 1}
    assert "12 (1 px)" in report.problems[0].message


def test_generated_dataset_is_checked_too():
    report = check_dataset(ShapesSegmentation(size=(32, 32), length=2))
    assert report.ok and report.num_pairs == 2


def test_report_summary_shows_counts_and_first_lines(bad_folder):
    root, _ = bad_folder
    text = check_split("folder", root, "train").summary(max_lines=2)
    assert "unreadable image" in text and "6 problems in 6 pairs (first 2 shown)" in text
    assert len([line for line in text.splitlines() if line.startswith("  ")]) == 2


# --------------------------------------------------------------------------- loading a sample


@pytest.mark.parametrize(
    "stem, fragment",
    [
        ("truncated", "unreadable or truncated image"),
        ("text", "unreadable or truncated image (not an image file PIL can identify)"),
        ("size", "differs from image size"),
        ("values", "label values [7, 200] are not classes 0..2"),
        ("rgb", "colour (RGB) mask"),
    ],
)
def test_loading_a_bad_sample_raises_value_error_naming_the_file(bad_folder, stem, fragment):
    root, about = bad_folder
    ds = FolderSegmentation(root, "train", strict=False)
    index = [image.stem for image, _ in ds.files].index(stem)
    with pytest.raises(ValueError) as info:
        ds[index]
    message = str(info.value)
    assert message.startswith(f"{about[stem]}: "), message
    assert fragment in message
    assert len(message.splitlines()) == 1


def test_truncated_mask_raises_value_error_naming_the_mask(tmp_path):
    root = make_clean_folder(tmp_path / "data", n=1)
    mask = root / "train" / "masks" / "ok0.png"
    data = mask.read_bytes()
    mask.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="unreadable or truncated mask") as info:
        FolderSegmentation(root, "train")[0]
    assert str(info.value).startswith(f"{mask}: ")


def test_strict_folder_names_the_image_without_a_mask(bad_folder):
    root, about = bad_folder
    with pytest.raises(FileNotFoundError, match="nomask.png"):
        FolderSegmentation(root, "train")
    assert FolderSegmentation(root, "train", strict=False).unpaired == [
        (about["nomask"], root / "train" / "masks" / "nomask.png")
    ]


def test_strict_folder_refuses_an_empty_split(bad_folder):
    root, _ = bad_folder
    with pytest.raises(ValueError, match=r"no \.png/\.jpg/\.jpeg images in .*val"):
        FolderSegmentation(root, "val")
    assert len(FolderSegmentation(root, "val", strict=False)) == 0


def test_read_image_errors_are_value_errors_naming_the_file(tmp_path):
    bad = write_truncated_png(tmp_path / "t.png")
    with pytest.raises(UnreadableImageError, match="t.png: unreadable or truncated image"):
        read_image(bad)
    assert issubclass(UnreadableImageError, ValueError)
    with pytest.raises(FileNotFoundError, match="missing.png: no such image file"):
        read_image(tmp_path / "missing.png")
    img = read_image(write_image(tmp_path / "ok.png"))  # loaded; usable after the file closed
    assert img.size == (W, H) and np.asarray(img.convert("RGB")).shape == (H, W, 3)


def test_rgb_mask_with_colours_outside_the_palette_is_a_colour_mask_problem(tmp_path):
    root = make_clean_folder(tmp_path / "data", n=1)
    (root / "palette.txt").write_text("0 0 0\n255 0 0\n0 255 0\n")
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[0, 0] = (1, 2, 3)
    mask = root / "train" / "masks" / "ok0.png"
    Image.fromarray(rgb).save(mask)
    report = check_split("folder", root, "train")
    assert report.counts == {"colour mask": 1}
    assert report.lines == [f"{mask}: colours not in the palette: (1, 2, 3)"]
    with pytest.raises(ValueError, match=r"colours not in the palette: \(1, 2, 3\)"):
        FolderSegmentation(root, "train")[0]
