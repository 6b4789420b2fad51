"""The dataset base class every fcnseg dataset derives from.

A sample is ``(image, mask)``: ``image`` a ``tv_tensors.Image`` ``uint8`` ``(3, H, W)``
RGB, ``mask`` a ``tv_tensors.Mask`` ``int64`` ``(H, W)`` with class indices in
``[0, num_classes)`` and ``255`` = ignore. With ``transforms`` the pair is passed
through ``transforms(image, mask)`` (see :func:`fcnseg.data.transforms.build_transforms`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fcnseg.data.palettes import Palette, load_index_png, palette_for
from fcnseg.io.images import IMAGE_EXTENSIONS, load_image

__all__ = ["IMAGE_EXTENSIONS", "SegmentationDataset", "read_lines"]


def read_lines(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a text file (split lists, ``classes.txt``)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


class SegmentationDataset(Dataset):
    """Base class: ``(image, mask)`` pairs with a class list and a palette.

    Subclasses fill :attr:`classes`, :attr:`palette` and :attr:`files` (one
    ``(image_path, mask_path)`` pair per sample), and override :meth:`load_mask` when
    their label files need a mapping (e.g. Cityscapes ids -> train ids). Generated
    datasets (``shapes``) leave :attr:`files` empty and override :meth:`load_sample`
    and ``__len__``.

    Attributes:
        classes: class names, index = label value.
        palette: one ``(r, g, b)`` per class (at least ``num_classes`` entries).
        files: ``(image, mask)`` path pairs, in sample order.
        ignore_index: the label of pixels excluded from loss and metrics (255).
    """

    ignore_index: int = 255

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        transforms: Callable | None = None,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.split = split
        self.transforms = transforms
        self.classes: list[str] = []
        self.palette: Palette = []
        self.files: list[tuple[Path, Path]] = []
        self._decoded: dict[int, tuple[torch.Tensor, torch.Tensor, str]] | None = None

    # --- metadata -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _set_classes(self, classes: Sequence[str], palette: Sequence | None = None) -> None:
        self.classes = list(classes)
        pal = [tuple(int(v) for v in c) for c in (palette or palette_for(len(self.classes)))]
        if len(pal) < len(self.classes):
            pal += palette_for(len(self.classes))[len(pal) :]
        self.palette = pal

    # --- reading --------------------------------------------------------------------------
    @staticmethod
    def load_image(path: str | Path) -> torch.Tensor:
        """Read an image file as ``uint8`` ``(3, H, W)`` RGB (the rule of
        :func:`fcnseg.io.images.to_rgb`: 16-bit scaled, palette/alpha/CMYK converted, silently).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an image, truncated or corrupt, or over the pixel limit
                (``"<path>: unreadable or truncated image (...)"``; see
                :func:`fcnseg.io.images.read_image`).
        """
        return load_image(path, warn=False)

    def load_mask(self, path: str | Path) -> torch.Tensor:
        """Read a label file as ``int64`` ``(H, W)`` class indices (255 = ignore).

        The base version reads an index / palette PNG as its raw values; subclasses
        apply their label mapping on top.
        """
        return torch.from_numpy(load_index_png(path))

    @staticmethod
    def _apply_lut(labels: np.ndarray, lut: np.ndarray, path: str | Path) -> torch.Tensor:
        if labels.size and (labels.min() < 0 or labels.max() >= len(lut)):
            raise ValueError(f"{path}: label values outside 0..{len(lut) - 1}")
        return torch.from_numpy(lut[labels])

    def load_sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The raw ``(image uint8 (3,H,W), mask int64 (H,W), description)`` of a sample."""
        image_path, mask_path = self.files[index]
        return self.load_image(image_path), self.load_mask(mask_path), str(mask_path)

    def cache_decoded(self, enabled: bool = True) -> None:
        """Keep each sample as decoded (uint8 image, uint8 mask) in memory after its first read.

        PNG decoding is most of a CamVid sample's loading time; with the cache each file is
        decoded once per run, not once per epoch, and random augmentation still runs afresh
        on every read. Costs ``H * W * 4`` bytes a sample (CamVid's 468: about 320 MB).
        Masks with labels above 255 are kept as ``int64``.
        """
        self._decoded = {} if enabled else None

    def fill_cache(self, threads: int | None = None) -> None:
        """Decode every sample into the cache now (after :meth:`cache_decoded`), ``threads``
        at a time (default: one per CPU). PIL's decoders release the GIL, so the threads
        decode in parallel; a training run that fills its cache before its clock starts never
        waits on a PNG, in its first epoch either. The first unreadable file raises its
        one-line ``ValueError`` here, before any step."""
        if self._decoded is None:
            raise RuntimeError("fill_cache: call cache_decoded() first")
        missing = [i for i in range(len(self)) if i not in self._decoded]
        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            for _ in pool.map(self._load_decoded, missing):
                pass

    def _load_decoded(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """A checked sample: from the cache, or read (and cached, when caching) and checked
        once, so a cached sample's labels are not re-checked on every read."""
        hit = None if self._decoded is None else self._decoded.get(index)
        if hit is None:
            image, mask, where = self.load_sample(index)
            self._check_pair(image, mask, where)
            if mask.numel() == 0 or (int(mask.min()) >= 0 and int(mask.max()) <= 255):
                mask = mask.to(torch.uint8)
            hit = (image, mask, where)
            if self._decoded is not None:
                self._decoded[index] = hit
        return hit

    def _check_pair(self, image: torch.Tensor, mask: torch.Tensor, where: str) -> None:
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(
                f"{where}: mask size {tuple(mask.shape[-2:])} differs from image size "
                f"{tuple(image.shape[-2:])}"
            )
        bad = ((mask >= self.num_classes) & (mask != self.ignore_index)) | (mask < 0)
        if bool(bad.any()):
            values = torch.unique(mask[bad])[:8].tolist()
            raise ValueError(
                f"{where}: label values {values} are not classes 0..{self.num_classes - 1} "
                f"nor ignore ({self.ignore_index})"
            )

    # --- Dataset protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image, mask, _ = self._load_decoded(index % len(self))
        # uint8 masks stay uint8 through the geometry (an eighth of int64's bytes to resample);
        # the transforms return int64
        if mask.dtype == torch.uint8 and not 0 <= self.ignore_index <= 255:
            mask = mask.to(torch.int64)  # padding writes ignore_index, which uint8 cannot hold
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transforms is not None:
            return self.transforms(image, mask)
        return image, mask.to(torch.int64)

    def __repr__(self) -> str:
        lines = [
            f"{type(self).__name__}(",
            f"  split={self.split!r}, samples={len(self)}, num_classes={self.num_classes},",
        ]
        if self.root is not None:
            lines.append(f"  root={str(self.root)!r},")
        if self.transforms is not None:
            lines.append(f"  transforms={self.transforms!r},")
        lines.append(")")
        return "\n".join(lines)
