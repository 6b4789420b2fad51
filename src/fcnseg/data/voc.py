"""PASCAL VOC 2012 (or 2011) semantic segmentation.

Layout (the VOCdevkit as extracted from the official tar)::

    root/VOCdevkit/VOC2012/JPEGImages/NAME.jpg
    root/VOCdevkit/VOC2012/SegmentationClass/NAME.png        palette PNG, value = class
    root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

``root`` may also point at ``VOCdevkit`` or directly at ``VOC2012``. The label PNGs are
"P" mode images whose pixel values are the class indices (0 background, 1..20 the
objects) and 255 on the object borders and "difficult" regions; they are read as
indices, so 255 is the ignore label without any mapping.

``download=True`` only fetches and extracts the archive, through
``torchvision.datasets.VOCSegmentation(root, year=..., image_set=..., download=True)``;
reading stays ours.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fcnseg.data.base import SegmentationDataset, read_lines
from fcnseg.data.palettes import voc_palette

__all__ = ["VOC_CLASSES", "VOCSegmentation", "find_voc_dir"]

# Class order of the VOC devkit (and of the FCN reference's data/pascal/classes.txt).
VOC_CLASSES = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]


def _is_voc_dir(path: Path) -> bool:
    return (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir()


def find_voc_dir(root: str | Path, years: tuple[str, ...] = ("2012",)) -> Path:
    """Locate the ``VOC<year>`` folder under ``root``.

    Accepts ``root`` = the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, the
    ``VOC<year>`` folder, or torchvision's 2011 layout ``TrainVal/VOCdevkit/VOC2011``.

    Raises:
        FileNotFoundError: no candidate holds ``JPEGImages`` and ``SegmentationClass``.
    """
    root = Path(root).expanduser()
    candidates = [root]
    for year in years:
        name = f"VOC{year}"
        candidates += [
            root / name,
            root / "VOCdevkit" / name,
            root / "TrainVal" / "VOCdevkit" / name,
        ]
    for c in candidates:
        if _is_voc_dir(c):
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no PASCAL VOC folder (with JPEGImages/ and SegmentationClass/) found; tried {tried}"
    )


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC semantic segmentation: 21 classes (background + 20), VOC palette.

    Args:
        root: folder holding ``VOCdevkit/VOC<year>`` (or that folder itself).
        split: a list in ``ImageSets/Segmentation`` (``train``, ``val``, ``trainval``).
        transforms: ``callable(image, mask)`` applied to each sample.
        year: ``"2012"`` (default) or ``"2011"``.
        download: fetch the archive with torchvision's downloader first.

    Raises:
        FileNotFoundError: the devkit, the split list, or a listed file is missing.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
        year: str = "2012",
        download: bool = False,
    ) -> None:
        if root is None:
            raise ValueError("voc: root is required (the folder holding VOCdevkit/)")
        super().__init__(root, split, transforms)
        year = str(year)
        if year not in ("2011", "2012"):
            raise ValueError(f"voc: year must be '2011' or '2012', got {year!r}")
        self.year = year
        if download:
            from torchvision.datasets import VOCSegmentation as _TorchvisionVOC

            # Only the download + extraction; the files are then read by this class.
            _TorchvisionVOC(str(self.root), year=year, image_set=split, download=True)
        self.voc_dir = find_voc_dir(self.root, (year,))
        self._set_classes(VOC_CLASSES, voc_palette())
        self.files = voc_pairs(self.voc_dir, split)


def voc_pairs(voc_dir: Path, split: str, ids: list[str] | None = None) -> list[tuple[Path, Path]]:
    """``(JPEGImages/ID.jpg, SegmentationClass/ID.png)`` pairs of a split (or of ``ids``)."""
    if ids is None:
        lists = voc_dir / "ImageSets" / "Segmentation"
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            known = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
            raise FileNotFoundError(f"voc: no split list {list_file}; available splits: {known}")
        ids = read_lines(list_file)
    pairs = [
        (voc_dir / "JPEGImages" / f"{i}.jpg", voc_dir / "SegmentationClass" / f"{i}.png")
        for i in ids
    ]
    for image, mask in pairs:
        for p in (image, mask):
            if not p.is_file():
                raise FileNotFoundError(f"voc: {p} is listed in split {split!r} but missing")
    return pairs
