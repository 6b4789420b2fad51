"""A generic image / mask folder dataset: bring your own data.

Layout::

    ROOT/classes.txt                     one class name per line (line i = class i)
    ROOT/palette.txt                     optional: "r g b" per line (line i = colour of class i)
    ROOT/{split}/images/NAME.{png,jpg,jpeg}
    ROOT/{split}/masks/NAME.png          same stem as the image

A mask is either

- a single-channel index PNG (mode "L", or "I" / "I;16"): pixel value = class index,
- a palette PNG (mode "P"): read as palette *indices* (as VOC stores its labels),
- an RGB(A) colour mask: mapped through ``ROOT/palette.txt``; without that file, an
  error names the mask.

Value 255 is "ignore" in every case.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from fcnseg.data.base import SegmentationDataset, read_lines
from fcnseg.data.palettes import Palette, index_array, rgb_to_index
from fcnseg.io.images import IMAGE_EXTENSIONS, is_image_file, read_image

__all__ = ["FolderSegmentation", "read_palette_file"]


def read_palette_file(path: str | Path) -> Palette:
    """Read ``palette.txt``: one ``r g b`` (0..255, spaces or commas) per line; ``#`` comments."""
    out: Palette = []
    for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        parts = line.split()
        try:
            rgb = tuple(int(v) for v in parts)
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError(f"{path}:{n}: expected 'r g b' with values 0..255, got {raw!r}")
        out.append(rgb)  # type: ignore[arg-type]
    return out


class FolderSegmentation(SegmentationDataset):
    """Images and masks in ``ROOT/{split}/{images,masks}`` (see the module docstring).

    Args:
        root: the dataset folder (holding ``classes.txt``).
        split: sub-folder name (``train``, ``val``, ...); ``"train+val"`` joins several
            splits into one dataset (to train a final model on both).
        transforms: ``callable(image, mask)`` applied to each sample.
        void_values: mask values that mean "unlabelled"; mapped to 255 (ignore).
        palette: colours to use instead of ``palette.txt`` (for RGB masks and display).
        strict: raise on an image without a mask and on an empty split (the default). With
            ``False`` such images are left out of :attr:`files` and listed in
            :attr:`unpaired` as ``(image, expected mask)``, and an empty split gives an empty
            dataset: :func:`fcnseg.data.validation.check_dataset` reports them all at once.
        limit: keep only the first ``limit`` pairs (sorted by file name); ``None`` keeps all.
            For quick runs and tests (``data.options: {limit: 8}`` in a recipe).

    Raises:
        FileNotFoundError: ``classes.txt`` or the split folders are missing, or an image
            has no mask (the error names the image).
        ValueError: an empty split, or two images with the same stem.
    """

    dataset_name = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
        void_values: Sequence[int] = (),
        palette: Sequence[Sequence[int]] | None = None,
        *,
        strict: bool = True,
        limit: int | None = None,
    ) -> None:
        name = self.dataset_name
        if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
            raise ValueError(f"{name}: limit must be a positive int or None, got {limit!r}")
        if root is None:
            raise ValueError(f"{name}: root is required")
        super().__init__(root, split, transforms)
        classes_file = self.root / "classes.txt"
        if not classes_file.is_file():
            raise FileNotFoundError(f"{name}: missing {classes_file} (one class name per line)")
        classes = read_lines(classes_file)
        if not classes:
            raise ValueError(f"{name}: {classes_file} lists no classes")
        palette_file = self.root / "palette.txt"
        self._colour_palette: Palette | None = None
        if palette is not None:
            self._colour_palette = [tuple(int(v) for v in c) for c in palette]
        elif palette_file.is_file():
            self._colour_palette = read_palette_file(palette_file)
        self._palette_file = palette_file
        self._set_classes(classes, self._colour_palette)
        self.void_values = tuple(int(v) for v in void_values)

        # "train+val" joins splits (train on both for a final model, as mmsegmentation's
        # ConcatDataset of two splits); a stem in two of them is an error like one in one split.
        self.unpaired: list[tuple[Path, Path]] = []
        seen: dict[str, Path] = {}
        pairs: list[tuple[Path, Path]] = []
        for part in split.split("+"):
            pairs += self._pairs(part, strict, seen)
        self.files = pairs if limit is None else pairs[: int(limit)]

    def _pairs(self, split: str, strict: bool, seen: dict[str, Path]) -> list[tuple[Path, Path]]:
        """The (image, mask) pairs of one split folder, sorted by image name."""
        name = self.dataset_name
        image_dir = self.root / split / "images"
        mask_dir = self.root / split / "masks"
        for d in (image_dir, mask_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"{name}: missing folder {d}")
        images = sorted(p for p in image_dir.iterdir() if p.is_file() and is_image_file(p))
        if not images and strict:
            others = "/".join(IMAGE_EXTENSIONS[3:])
            raise ValueError(f"{name}: no .png/.jpg/.jpeg images in {image_dir} (nor {others})")
        pairs = []
        for image in images:
            if image.stem in seen:
                raise ValueError(f"{name}: {image} and {seen[image.stem]} share the stem")
            seen[image.stem] = image
            mask = mask_dir / f"{image.stem}.png"
            if not mask.is_file():
                if strict:
                    raise FileNotFoundError(f"{name}: no mask {mask} for image {image}")
                self.unpaired.append((image, mask))
                continue
            pairs.append((image, mask))
        return pairs

    def load_mask(self, path: str | Path) -> torch.Tensor:
        """Index / palette PNG -> indices; RGB -> indices through the palette; voids -> 255."""
        img = read_image(path, "mask")  # ValueError naming the file when unreadable
        mode = img.mode
        if mode in ("RGB", "RGBA"):
            if self._colour_palette is None:
                raise ValueError(
                    f"{path}: colour (RGB) mask but no {self._palette_file} to map colours "
                    "to classes; add it ('r g b' per line) or save masks as index PNGs"
                )
            labels = rgb_to_index(np.asarray(img.convert("RGB")), self._colour_palette, str(path))
        else:
            labels = index_array(img)
            if labels is None:
                raise ValueError(f"{path}: unsupported mask mode {mode!r}")
        for v in self.void_values:
            labels[labels == v] = self.ignore_index
        return torch.from_numpy(labels)
