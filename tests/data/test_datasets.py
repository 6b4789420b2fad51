"""File-based datasets (voc, sbd, cityscapes, folder, camvid), the registry and palettes.

Every fixture is a tiny fake tree built in tmp_path; only the CamVid test reads real
data (shared/data/camvid, skipped when absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

import fcnseg.data as fd
from fcnseg.data import build_dataset, build_transforms, list_datasets
from fcnseg.data.palettes import (
    CAMVID_PALETTE,
    CITYSCAPES_PALETTE,
    colorize,
    load_index_png,
    save_index_png,
    voc_palette,
)
from fcnseg.data.sbd import seg11valid_ids

REPO = Path(__file__).resolve().parents[2]
CAMVID = REPO / ".." / "shared" / "data" / "camvid"


def write_rgb(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def write_palette_png(path: Path, labels: np.ndarray, palette) -> None:
    """A mode "P" PNG written with PIL directly (independent of fcnseg's writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([c for rgb in palette for c in rgb])
    img.save(path)


def voc_labels(h: int, w: int, seed: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, 21, (h, w))
    labels[0, :] = labels[-1, :] = labels[:, 0] = labels[:, -1] = 255  # VOC's void border
    return labels


def make_voc(root: Path, year: str = "2012") -> dict[str, np.ndarray]:
    voc = root / "VOCdevkit" / f"VOC{year}"
    sizes = {"2007_000033": (12, 16), "2007_000042": (10, 9), "2008_000073": (8, 14)}
    labels = {}
    for k, (name, (h, w)) in enumerate(sizes.items()):
        write_rgb(voc / "JPEGImages" / f"{name}.jpg", h, w, seed=k)
        labels[name] = voc_labels(h, w, seed=k)
        write_palette_png(voc / "SegmentationClass" / f"{name}.png", labels[name], voc_palette())
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000033\n2007_000042\n")
    (lists / "val.txt").write_text("2008_000073\n")
    (lists / "trainval.txt").write_text("2007_000033\n2007_000042\n2008_000073\n")
    return labels


# --- registry ---------------------------------------------------------------------------
def test_registry_lists_every_dataset_and_rejects_unknown_names():
    assert list_datasets() == ["voc", "sbd", "cityscapes", "camvid", "folder", "shapes"]
    with pytest.raises(ValueError, match="voc, sbd, cityscapes, camvid, folder, shapes"):
        build_dataset("pascal")
    with pytest.raises(ValueError, match="root"):
        build_dataset("camvid")


# --- VOC --------------------------------------------------------------------------------
def test_voc_reads_palette_indices_including_void_border(tmp_path):
    labels = make_voc(tmp_path)
    ds = build_dataset("voc", root=tmp_path, split="train")
    assert len(ds) == 2 and ds.num_classes == 21 and ds.classes[15] == "person"
    assert ds.palette[:3] == [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    image, mask = ds[1]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.dtype == torch.uint8 and image.shape == (3, 10, 9)
    assert mask.dtype == torch.int64 and mask.shape == (10, 9)
    assert np.array_equal(mask.numpy(), labels["2007_000042"])
    assert (mask == 255).sum() > 0 and ds.files[1][0].name == "2007_000042.jpg"
    assert len(build_dataset("voc", root=tmp_path, split="trainval")) == 3


def test_voc_accepts_the_voc2012_folder_and_year_2011(tmp_path):
    make_voc(tmp_path / "a")
    assert (
        len(build_dataset("voc", root=tmp_path / "a" / "VOCdevkit" / "VOC2012", split="val")) == 1
    )
    make_voc(tmp_path / "b", year="2011")
    assert len(build_dataset("voc", root=tmp_path / "b", split="val", year="2011")) == 1
    with pytest.raises(FileNotFoundError, match="available splits"):
        build_dataset("voc", root=tmp_path / "a", split="test")
    with pytest.raises(FileNotFoundError, match="VOC"):
        build_dataset("voc", root=tmp_path / "nowhere")


def test_voc_download_delegates_to_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    def fake_download(root, year, image_set, download):
        calls.append((root, year, image_set, download))
        make_voc(Path(root))

    monkeypatch.setattr(torchvision.datasets, "VOCSegmentation", fake_download)
    ds = build_dataset("voc", root=tmp_path, split="val", download=True)
    assert calls == [(str(tmp_path), "2012", "val", True)]
    assert len(ds) == 1 and ds[0][1].shape == (8, 14)


def test_transforms_are_applied_to_samples(tmp_path):
    make_voc(tmp_path)
    t = build_transforms(True, crop_size=(20, 20), color_jitter=0.0)
    image, mask = build_dataset("voc", root=tmp_path, transforms=t)[0]
    assert image.shape == (3, 20, 20) and image.dtype == torch.float32
    assert mask.shape == (20, 20) and mask.dtype == torch.int64


def test_decode_cache_reads_each_file_once_and_still_augments(tmp_path, monkeypatch):
    labels = make_folder(tmp_path, "index")
    ds = build_dataset("folder", root=tmp_path, split="train")
    plain = [ds[i] for i in range(len(ds))]
    reads = []
    original = type(ds).load_image
    counted = staticmethod(lambda path: reads.append(path) or original(path))
    monkeypatch.setattr(type(ds), "load_image", counted)
    ds.cache_decoded()
    for _ in range(3):
        for i, (image, _) in enumerate(plain):
            got_image, got_mask = ds[i]
            assert torch.equal(got_image, image) and got_mask.dtype == torch.int64
            assert np.array_equal(got_mask.numpy(), labels["abc"[i]])  # 255 kept through uint8
    assert len(reads) == len(ds)  # decoded once each, not once per pass
    # the augmentation runs on every read of a cached sample, not once
    ds.transforms = build_transforms(True, crop_size=(4, 4), scale_range=(0.5, 1.5))
    crops = {tuple(ds[0][0].flatten().tolist()) for _ in range(20)}
    assert len(crops) > 1 and len(reads) == len(ds)


def test_fill_cache_decodes_everything_up_front_and_names_a_broken_file(tmp_path, monkeypatch):
    make_folder(tmp_path, "index")
    ds = build_dataset("folder", root=tmp_path, split="train")
    reads = []
    original = type(ds).load_image
    counted = staticmethod(lambda path: reads.append(path) or original(path))
    monkeypatch.setattr(type(ds), "load_image", counted)
    with pytest.raises(RuntimeError, match="cache_decoded"):
        ds.fill_cache()
    ds.cache_decoded()
    ds.fill_cache(threads=2)
    assert len(reads) == len(ds)  # each image decoded once, before any read
    [ds[i] for i in range(len(ds))]
    assert len(reads) == len(ds)  # every read after the fill is a cache hit
    # a file that no longer decodes fails the fill with the reader's one line naming it
    broken = ds.files[1][0]
    Path(broken).write_bytes(b"not a png")
    again = build_dataset("folder", root=tmp_path, split="train")
    again.cache_decoded()
    with pytest.raises(ValueError, match=Path(broken).name):
        again.fill_cache()


# --- SBD --------------------------------------------------------------------------------
def test_sbd_reads_gtcls_segmentation_from_mat(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    written = {}
    for k, name in enumerate(["2008_000002", "2008_000003"]):
        h, w = 7 + k, 11
        write_rgb(sbd / "img" / f"{name}.jpg", h, w, seed=k)
        seg = np.random.default_rng(k).integers(0, 21, (h, w)).astype(np.uint8)
        (sbd / "cls").mkdir(parents=True, exist_ok=True)
        # the SBD struct: GTcls.{Boundaries, Segmentation, CategoriesPresent}
        gt = {"Segmentation": seg, "Boundaries": np.zeros((21, 1)), "CategoriesPresent": [1]}
        savemat(sbd / "cls" / f"{name}.mat", {"GTcls": gt})
        written[name] = seg
    (sbd / "train.txt").write_text("2008_000002\n2008_000003\n")
    (sbd / "val.txt").write_text("2008_000003\n")
    for root in (sbd, tmp_path / "benchmark_RELEASE"):
        ds = build_dataset("sbd", root=root, split="train")
        assert len(ds) == 2 and ds.num_classes == 21
        for i, name in enumerate(written):
            image, mask = ds[i]
            assert image.shape[1:] == mask.shape and mask.dtype == torch.int64
            assert np.array_equal(mask.numpy(), written[name])
    assert len(build_dataset("sbd", root=sbd, split="val")) == 1


def test_seg11valid_list_is_the_736_image_reference_list():
    ids = seg11valid_ids()
    assert len(ids) == 736 and len(set(ids)) == 736
    assert ids[0] == "2007_000033" and ids[-1] == "2011_003271"
    assert all(len(i) == 11 and i[4] == "_" and 2007 <= int(i[:4]) <= 2011 for i in ids)


def test_sbd_seg11valid_reads_voc_images(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir(parents=True)
    rgb = Image.fromarray(np.zeros((2, 3, 3), np.uint8))
    labels = np.array([[0, 1, 255], [20, 0, 0]])
    for name in seg11valid_ids():
        rgb.save(voc / "JPEGImages" / f"{name}.jpg")
        write_palette_png(voc / "SegmentationClass" / f"{name}.png", labels, voc_palette())
    (tmp_path / "sbd" / "img").mkdir(parents=True)
    (tmp_path / "sbd" / "cls").mkdir()
    ds = build_dataset("sbd", root=tmp_path / "sbd", split="seg11valid")  # finds ../VOCdevkit
    assert len(ds) == 736 and ds.files[0][0].name == "2007_000033.jpg"
    assert np.array_equal(ds[735][1].numpy(), labels)
    ds = build_dataset("sbd", root=tmp_path / "elsewhere", split="seg11valid", voc_root=voc)
    assert len(ds) == 736
    with pytest.raises(FileNotFoundError, match="voc_root"):
        build_dataset("sbd", root=tmp_path / "a" / "b", split="seg11valid")


# --- Cityscapes -------------------------------------------------------------------------
def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    ids = np.array([[7, 26, 0, 8], [33, 4, 24, 23]], dtype=np.uint8)
    stem = "aachen_000000_000019"
    write_rgb(tmp_path / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png", 2, 4)
    label = tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png"
    label.parent.mkdir(parents=True)
    Image.fromarray(ids, mode="L").save(label)
    ds = build_dataset("cityscapes", root=tmp_path, split="val")
    assert len(ds) == 1 and ds.num_classes == 19
    assert ds.classes[0] == "road" and ds.classes[13] == "car" and ds.classes[18] == "bicycle"
    # road 7 -> 0, car 26 -> 13, unlabeled 0 -> 255, sidewalk 8 -> 1, bicycle 33 -> 18,
    # static 4 -> 255, person 24 -> 11, sky 23 -> 10
    expected = [[0, 13, 255, 1], [18, 255, 11, 10]]
    assert ds[0][1].tolist() == expected
    label.unlink()
    with pytest.raises(FileNotFoundError, match=stem):
        build_dataset("cityscapes", root=tmp_path, split="val")


# --- folder -----------------------------------------------------------------------------
def make_folder(root: Path, kind: str, classes=("bg", "cat", "dog")) -> dict[str, np.ndarray]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    palette = [(0, 0, 0), (200, 10, 10), (10, 200, 10)]
    out = {}
    for k, (name, ext) in enumerate([("a", "png"), ("b", "jpg"), ("c", "jpeg")]):
        write_rgb(root / "train" / "images" / f"{name}.{ext}", 6, 5 + k, seed=k)
        labels = np.random.default_rng(k).integers(0, 3, (6, 5 + k))
        labels[0, 0] = 255
        mask = root / "train" / "masks" / f"{name}.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        if kind == "index":
            Image.fromarray(labels.astype(np.uint8), mode="L").save(mask)
        elif kind == "palette":
            write_palette_png(mask, labels, [(9, 9, 9)] * 256)  # colours are irrelevant
        else:  # rgb
            lut = np.array(palette + [(255, 255, 255)] * 253, dtype=np.uint8)
            labels[0, 0] = 0
            Image.fromarray(lut[labels]).save(mask)
        out[name] = labels
    if kind == "rgb":
        (root / "palette.txt").write_text("".join(f"{r} {g} {b}\n" for r, g, b in palette))
    return out


@pytest.mark.parametrize("kind", ["index", "palette", "rgb"])
def test_folder_reads_index_palette_and_rgb_masks(tmp_path, kind):
    labels = make_folder(tmp_path, kind)
    ds = build_dataset("folder", root=tmp_path, split="train")
    assert len(ds) == 3 and ds.classes == ["bg", "cat", "dog"] and ds.num_classes == 3
    assert [p[0].name for p in ds.files] == ["a.png", "b.jpg", "c.jpeg"]
    for i, name in enumerate("abc"):
        image, mask = ds[i]
        assert image.shape == (3, 6, 5 + i) and mask.dtype == torch.int64
        assert np.array_equal(mask.numpy(), labels[name])
    if kind == "rgb":
        assert ds.palette[1] == (200, 10, 10)


def test_folder_errors_name_the_offending_file(tmp_path):
    make_folder(tmp_path / "rgb", "rgb")
    (tmp_path / "rgb" / "palette.txt").unlink()
    with pytest.raises(ValueError, match=r"a\.png.*palette\.txt"):
        build_dataset("folder", root=tmp_path / "rgb")[0]

    make_folder(tmp_path / "missing", "index")
    (tmp_path / "missing" / "train" / "masks" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images[/\\]b\.jpg"):
        build_dataset("folder", root=tmp_path / "missing")

    make_folder(tmp_path / "range", "index")
    bad = np.full((6, 5), 7, dtype=np.uint8)
    Image.fromarray(bad, mode="L").save(tmp_path / "range" / "train" / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png.*\[7\]"):
        build_dataset("folder", root=tmp_path / "range")[0]

    with pytest.raises(FileNotFoundError, match="classes.txt"):
        build_dataset("folder", root=tmp_path / "empty")


def test_folder_joins_splits_with_a_plus(tmp_path):
    make_folder(tmp_path, "index")  # train: a, b, c
    (tmp_path / "val" / "images").mkdir(parents=True)
    (tmp_path / "val" / "masks").mkdir(parents=True)
    write_rgb(tmp_path / "val" / "images" / "d.png", 6, 5, seed=9)
    Image.fromarray(np.zeros((6, 5), np.uint8), mode="L").save(tmp_path / "val" / "masks" / "d.png")
    both = build_dataset("folder", root=tmp_path, split="train+val")
    assert [image.name for image, _ in both.files] == ["a.png", "b.jpg", "c.jpeg", "d.png"]
    assert both[3][1].shape == (6, 5)

    write_rgb(tmp_path / "val" / "images" / "a.png", 6, 5, seed=3)  # "a" is in train too
    Image.fromarray(np.zeros((6, 5), np.uint8), mode="L").save(tmp_path / "val" / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"val[/\\]images[/\\]a\.png and .*share the stem"):
        build_dataset("folder", root=tmp_path, split="train+val")
    with pytest.raises(FileNotFoundError, match=r"missing folder .*test"):
        build_dataset("folder", root=tmp_path, split="train+test")


# --- CamVid (real data) -----------------------------------------------------------------
@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"real CamVid not found at {CAMVID.resolve()}")
def test_camvid_real_data():
    train = build_dataset("camvid", root=CAMVID, split="train")
    val = build_dataset("camvid", root=CAMVID, split="val")
    assert len(train) == 367 and len(val) == 101
    assert (
        train.num_classes == 11 and train.classes[0] == "Sky" and train.classes[10] == "Bicyclist"
    )
    assert train.palette[:11] == CAMVID_PALETTE
    seen = set()
    for ds in (train, val):
        for i in (0, len(ds) // 2, len(ds) - 1):
            image, mask = ds[i]
            assert image.shape == (3, 360, 480) and image.dtype == torch.uint8
            assert mask.shape == (360, 480) and mask.dtype == torch.int64
            seen |= set(mask.unique().tolist())
    for ds in (train, val):  # every mask of both splits (masks are small to read)
        for _, mask_path in ds.files:
            seen |= set(np.unique(ds.load_mask(mask_path).numpy()).tolist())
    assert seen <= set(range(11)) | {255}
    assert 255 in seen and len(seen) == 12  # index 11 (Unlabelled) became ignore
    # the mapping itself: raw 11 -> 255, others unchanged
    raw = load_index_png(val.files[0][1])
    assert np.array_equal(val.load_mask(val.files[0][1]).numpy(), np.where(raw == 11, 255, raw))


def test_camvid_sequence_filter_holds_one_video_out(tmp_path):
    root = tmp_path / "camvid"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(11)) + "\n")
    names = ["0001TP_000010", "0001TP_000020", "0006R0_f00930", "0016E5_00390", "0016E5_00420"]
    for i, stem in enumerate(names):
        write_rgb(root / "train" / "images" / f"{stem}.png", 4, 6, seed=i)
        Image.fromarray(np.full((4, 6), 3, np.uint8), mode="L").save(
            root / "train" / "masks" / f"{stem}.png"
        )
    stems = lambda ds: [image.stem for image, _ in ds.files]  # noqa: E731
    rest = build_dataset("camvid", root=root, exclude_sequences=["0001TP"])
    held = build_dataset("camvid", root=root, sequences=["0001TP"])
    assert stems(rest) == names[2:] and stems(held) == names[:2]  # disjoint, together all
    assert stems(build_dataset("camvid", root=root, sequences=["0016E5"], limit=1)) == names[3:4]
    with pytest.raises(ValueError, match="this split has 0001TP, 0006R0, 0016E5"):
        build_dataset("camvid", root=root, sequences=["Seq05VD"])


# --- palettes ---------------------------------------------------------------------------
def test_voc_palette_is_the_devkit_colour_map():
    pal = voc_palette()
    assert len(pal) == 256 and len(set(pal)) == 256
    assert pal[:5] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]
    assert pal[15] == (192, 128, 128) and pal[255] == (224, 224, 192)
    assert len(CITYSCAPES_PALETTE) == 19 and CITYSCAPES_PALETTE[0] == (128, 64, 128)
    assert len(set(fd.palette_for(300))) == 300


def test_colorize_and_index_png_round_trip(tmp_path):
    mask = torch.tensor([[0, 1, 2], [255, 15, 0]])
    rgb = colorize(mask, voc_palette())
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 1]) == (128, 0, 0) and tuple(rgb[1, 0]) == (0, 0, 0)
    path = tmp_path / "m.png"
    save_index_png(mask, path, voc_palette())
    with Image.open(path) as img:
        assert img.mode == "P" and img.getpalette()[3:6] == [128, 0, 0]
    back = load_index_png(path)
    assert back.dtype == np.int64 and np.array_equal(back, mask.numpy())
