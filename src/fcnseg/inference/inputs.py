"""What ``predict`` accepts: paths, folders, globs, PIL images, arrays and tensors, read into
``(3, H, W)`` tensors and grouped into batches of same-size images."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fcnseg.io.images import IMAGE_EXTENSIONS, image_size, is_image_file, load_image

__all__ = ["expand_inputs"]

_GLOB_CHARS = set("*?[")


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files, folders and glob patterns -> a list of image files (order kept, duplicates dropped).

    A file is taken as given; a folder contributes its image files (extensions in
    :data:`IMAGE_EXTENSIONS`, case-insensitive, not recursive) in sorted order; a pattern with
    ``*``, ``?`` or ``[`` is expanded with :func:`glob.glob` (``**`` recursive), sorted, image
    files only.

    Raises:
        FileNotFoundError: an item that does not exist, a folder without images, or a pattern
            that matches no image (the message names it).
    """
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                raise FileNotFoundError(f"{path}: folder holds no images ({_ext_list()})")
        elif _GLOB_CHARS & set(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))
            found = [Path(p) for p in matches if Path(p).is_file() and is_image_file(Path(p))]
            if not found:
                raise FileNotFoundError(f"{item}: pattern matches no image files")
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
        out.extend(found)
    return list(dict.fromkeys(out))


def _ext_list() -> str:
    return ", ".join(IMAGE_EXTENSIONS)


def _to_tensor_image(item, index: int) -> torch.Tensor:
    """One image as a (3, H, W) tensor: uint8 as given, floats in [0, 1]."""
    if isinstance(item, (str, Path)):
        return load_image(item)
    if isinstance(item, Image.Image):
        return load_image(item)
    if isinstance(item, np.ndarray):
        if item.ndim == 3 and item.shape[2] == 3:
            item = torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1)
        else:
            item = torch.from_numpy(item)
    if isinstance(item, torch.Tensor):
        t = item.as_subclass(torch.Tensor).detach()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"image {index}: expected a (3, H, W) tensor, got {tuple(t.shape)}")
        if not (t.dtype == torch.uint8 or t.is_floating_point()):
            raise ValueError(f"image {index}: expected uint8 or float pixels, got {t.dtype}")
        return t
    raise TypeError(f"image {index}: unsupported input type {type(item).__name__}")


def _image_size(item) -> tuple[int, int]:
    """(H, W) without decoding the pixels where possible."""
    if isinstance(item, (str, Path)):
        return image_size(item) or (-1, -1)  # load_image raises the proper error later
    if isinstance(item, Image.Image):
        return item.height, item.width
    if isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] == 3:
        return item.shape[0], item.shape[1]
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return tuple(item.shape[-2:])
    raise TypeError(f"unsupported input type {type(item).__name__}")


def _as_items(images) -> list:
    """Normalise the ``images`` argument of :func:`predict` into a list of single images."""
    if isinstance(images, (str, Path)):
        return list(expand_inputs([images]))
    if isinstance(images, (Image.Image, np.ndarray)):
        return [images]
    if isinstance(images, torch.Tensor):
        if images.ndim == 4:
            return list(images.unbind(0))
        return [images]
    items = []
    for item in images:
        if isinstance(item, (str, Path)) and not Path(item).is_file():
            items.extend(expand_inputs([item]))  # folders and globs; raises when missing
        else:
            items.append(item)
    return items


class _ImageList(Dataset):
    def __init__(self, items: Sequence) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | Exception]:
        # A bad file's error is handed to the main process as it is: raised inside a worker,
        # the DataLoader would re-raise it under a "Caught ValueError in DataLoader worker"
        # first line, and the command line shows first lines.
        try:
            return i, _to_tensor_image(self.items[i], i)
        except (OSError, ValueError, TypeError) as e:
            return i, e


def _collate(batch: list[tuple[int, torch.Tensor | Exception]]):
    """-> (indices, (N, 3, H, W) images), or the first loading error of the batch."""
    for _, item in batch:
        if isinstance(item, Exception):
            return item
    indices = [i for i, _ in batch]
    images = [im for _, im in batch]
    if len({im.dtype for im in images}) > 1:  # mixed uint8 / float: bring all to [0, 1] floats
        images = [im.float() / 255.0 if im.dtype == torch.uint8 else im.float() for im in images]
    return indices, torch.stack(images)


def _same_size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Group image indices into batches of at most ``batch_size`` images of one size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    open_batches: dict[tuple[int, int], list[int]] = {}
    batches: list[list[int]] = []
    for i, size in enumerate(sizes):
        batch = open_batches.setdefault(size, [])
        batch.append(i)
        if len(batch) == batch_size:
            batches.append(open_batches.pop(size))
    batches.extend(open_batches.values())
    return batches


# --------------------------------------------------------------------------- sliding window
