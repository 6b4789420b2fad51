"""Checks on untrusted data files: the whole-dataset validator behind ``fcnseg check-data``.

The guarded reader (``read_image``, the pixel limit, ``UnreadableImageError``,
``ImageTooLargeError``) is :mod:`fcnseg.io.images`, the one image reader of fcnseg; its names
are re-exported here. This module holds:

- :func:`check_dataset` / :func:`check_split`, which read *every* pair of a dataset up front
  and collect each problem instead of stopping at the first, so a long training run does not
  die on sample 9,000. ``fcnseg check-data`` prints their :class:`Report`.
"""

from __future__ import annotations

import inspect
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from PIL import Image

from fcnseg.io.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    ImageTooLargeError,
    UnreadableImageError,
    _first_line,  # one first-line rule for every message
    get_max_image_pixels,
    read_image,
    set_max_image_pixels,
)

if TYPE_CHECKING:
    from fcnseg.data.base import SegmentationDataset

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "MAX_PIXELS_ENV",
    "PROBLEM_KINDS",
    "ImageTooLargeError",
    "Problem",
    "Report",
    "UnreadableImageError",
    "check_dataset",
    "check_split",
    "check_splits",
    "get_max_image_pixels",
    "read_image",
    "set_max_image_pixels",
]

#: Problem kinds reported by :func:`check_dataset`, in the order the summary lists them.
PROBLEM_KINDS = (
    "unusable split",  # the dataset cannot be opened at all (missing folder, bad classes.txt)
    "empty split",  # no image/mask pairs
    "missing image",
    "unreadable image",  # not an image, truncated, corrupt
    "image too large",  # over the decompression-bomb pixel limit
    "image too small",  # smaller than the model's minimum input
    "missing mask",
    "unreadable mask",
    "colour mask",  # an RGB mask whose colours match no palette
    "size mismatch",  # mask size != image size
    "bad label values",  # outside [0, num_classes) and not the ignore index
    "other",  # an unexpected error while reading (the message names its type)
)


# --------------------------------------------------------------------------- reports


class Problem(NamedTuple):
    """One problem: the file it is about, its kind (one of :data:`PROBLEM_KINDS`), a message."""

    file: str
    kind: str
    message: str

    def line(self) -> str:
        """``"<file>: <message>"``, the form the CLI prints."""
        return f"{self.file}: {self.message}"


@dataclass
class Report:
    """What :func:`check_dataset` found.

    Attributes:
        pairs: pairs checked per split name (``{"train": 367}``).
        problems: every problem found, in file order.
    """

    pairs: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """``True`` when no problem was found."""
        return not self.problems

    @property
    def num_pairs(self) -> int:
        return sum(self.pairs.values())

    @property
    def counts(self) -> dict[str, int]:
        """Problems per kind, in :data:`PROBLEM_KINDS` order (kinds with none left out)."""
        c = Counter(p.kind for p in self.problems)
        return {k: c[k] for k in (*PROBLEM_KINDS, *sorted(set(c) - set(PROBLEM_KINDS))) if c[k]}

    @property
    def lines(self) -> list[str]:
        """``"<file>: <message>"`` per problem."""
        return [p.line() for p in self.problems]

    def __add__(self, other: Report) -> Report:
        pairs = dict(self.pairs)
        for k, v in other.pairs.items():
            pairs[k] = pairs.get(k, 0) + v
        return Report(pairs, [*self.problems, *other.problems])

    def summary(self, max_lines: int = 20) -> str:
        """A plain-text table: pairs per split, problems per kind, the first problem lines."""
        rows = [("split", "pairs"), *((s, str(n)) for s, n in self.pairs.items())]
        if len(self.pairs) > 1:
            rows.append(("total", str(self.num_pairs)))
        out = _table(rows)
        if self.ok:
            out.append(f"no problems in {self.num_pairs} pairs")
            return "\n".join(out)
        out.append("")
        out += _table([("problem", "count"), *((k, str(n)) for k, n in self.counts.items())])
        shown = self.problems[:max_lines]
        out.append("")
        more = f" (first {len(shown)} shown)" if len(shown) < len(self.problems) else ""
        n = len(self.problems)
        out.append(f"{n} problem{'s' if n != 1 else ''} in {self.num_pairs} pairs{more}:")
        out += [f"  {p.line()}" for p in shown]
        return "\n".join(out)


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(a) for a, _ in rows)
    num = max(len(b) for _, b in rows)
    lines = [f"{a:<{width}}  {b:>{num}}" for a, b in rows]
    lines.insert(1, "-" * (width + 2 + num))
    return lines


# --------------------------------------------------------------------------- checking


def _strip_prefix(message: str, path: str | Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _label_problem(
    mask: torch.Tensor | np.ndarray, num_classes: int, ignore_index: int
) -> str | None:
    """``None``, or a message listing the values outside the classes and ignore, with counts."""
    m = torch.as_tensor(mask)
    bad = (m < 0) | ((m >= num_classes) & (m != ignore_index))
    if not bool(bad.any()):
        return None
    values, counts = torch.unique(m[bad], return_counts=True)
    shown = ", ".join(
        f"{v} ({c} px)" for v, c in zip(values[:10].tolist(), counts[:10].tolist(), strict=True)
    )
    if len(values) > 10:
        shown += f", ... ({len(values)} values)"
    return (
        f"label values outside classes 0..{num_classes - 1} and ignore ({ignore_index}): "
        f"{shown}; {int(bad.sum())} of {m.numel()} pixels"
    )


def _mask_mode(path: Path) -> str | None:
    try:
        with Image.open(path) as img:
            return img.mode
    except Exception:  # noqa: BLE001 - only a hint for classifying an error already caught
        return None


def _check_pair(
    dataset: SegmentationDataset,
    image_path: Path,
    mask_path: Path,
    num_classes: int,
    min_size: int | None,
) -> list[Problem]:
    problems: list[Problem] = []

    def add(file: Path | str, kind: str, message: str) -> None:
        problems.append(Problem(str(file), kind, _strip_prefix(message, file)))

    image_size = None  # (H, W)
    try:
        img = read_image(image_path, "image")
        image_size = (img.height, img.width)
    except FileNotFoundError:
        add(image_path, "missing image", "no such image file")
    except ImageTooLargeError as e:
        add(image_path, "image too large", str(e))
    except UnreadableImageError as e:
        add(image_path, "unreadable image", str(e))
    if image_size is not None and min_size is not None and min(image_size) < min_size:
        h, w = image_size
        add(
            image_path,
            "image too small",
            f"image {h}x{w} is smaller than the {min_size} px the model needs",
        )

    if not Path(mask_path).exists():
        add(image_path, "missing mask", f"no mask (expected {mask_path})")
        return problems
    try:
        mask = dataset.load_mask(mask_path)
    except ImageTooLargeError as e:
        add(mask_path, "image too large", str(e))
        return problems
    except UnreadableImageError as e:
        add(mask_path, "unreadable mask", str(e))
        return problems
    except (ValueError, KeyError) as e:
        colour = _mask_mode(Path(mask_path)) in ("RGB", "RGBA")
        add(mask_path, "colour mask" if colour else "unreadable mask", _first_line(e))
        return problems
    except Exception as e:  # noqa: BLE001 - report, never stop the check
        add(mask_path, "other", f"{type(e).__name__}: {_first_line(e)}")
        return problems
    mask_size = tuple(mask.shape[-2:])
    if image_size is not None and mask_size != image_size:
        add(
            mask_path,
            "size mismatch",
            f"mask size {mask_size[0]}x{mask_size[1]} differs from image size "
            f"{image_size[0]}x{image_size[1]} ({image_path})",
        )
    message = _label_problem(mask, num_classes, dataset.ignore_index)
    if message is not None:
        add(mask_path, "bad label values", message)
    return problems


def _check_generated(
    dataset: SegmentationDataset, index: int, num_classes: int, min_size: int | None
) -> list[Problem]:
    """A dataset without files (``shapes``): check the generated sample itself."""
    try:
        image, mask, where = dataset.load_sample(index)
    except Exception as e:  # noqa: BLE001 - report, never stop the check
        return [Problem(f"sample {index}", "other", f"{type(e).__name__}: {_first_line(e)}")]
    problems = []
    h, w = image.shape[-2:]
    if min_size is not None and min(h, w) < min_size:
        problems.append(Problem(where, "image too small", f"image {h}x{w} is below {min_size} px"))
    if tuple(mask.shape[-2:]) != (h, w):
        problems.append(Problem(where, "size mismatch", "mask size differs from image size"))
    message = _label_problem(mask, num_classes, dataset.ignore_index)
    if message is not None:
        problems.append(Problem(where, "bad label values", message))
    return problems


def check_dataset(
    dataset: SegmentationDataset,
    *,
    num_classes: int | None = None,
    min_size: int | None = None,
    progress: bool = False,
) -> Report:
    """Read every image/mask pair of ``dataset`` and report each problem; never stops early.

    Checks, per pair: the image exists and fully decodes (truncated / not-an-image files are
    caught), it is within the pixel limit and at least ``min_size`` on its short side; the
    mask exists, decodes through the dataset's own :meth:`load_mask` (an RGB mask must match
    the palette), has the image's size, and holds only values in ``[0, num_classes)`` or the
    ignore index. An empty split is a problem too. Images the dataset left without a mask
    (``FolderSegmentation(..., strict=False)`` lists them in ``unpaired``) are reported.

    Args:
        dataset: a :class:`~fcnseg.data.SegmentationDataset` (file-based, or generated).
        num_classes: valid labels are ``0..num_classes-1``; default ``dataset.num_classes``.
        min_size: the smallest image side the model accepts (``model.backbone.min_input_size``).
        progress: print ``checked i/n`` to stderr while reading.

    Returns:
        A :class:`Report` (``report.ok``, ``report.counts``, ``report.lines``).
    """
    num_classes = dataset.num_classes if num_classes is None else int(num_classes)
    split = str(getattr(dataset, "split", "") or "data")
    report = Report({split: 0}, [])
    for image_path, mask_path in getattr(dataset, "unpaired", ()):
        report.problems.append(
            Problem(str(image_path), "missing mask", f"no mask (expected {mask_path})")
        )
    n = len(dataset)
    if n == 0:
        where = Path(dataset.root) / split if getattr(dataset, "root", None) else split
        report.problems.append(
            Problem(str(where), "empty split", f"split {split!r} has no image/mask pairs")
        )
        return report
    files = list(dataset.files)
    step = max(1, n // 100)
    for i in range(n):
        if files:
            image_path, mask_path = files[i]
            report.problems += _check_pair(dataset, image_path, mask_path, num_classes, min_size)
        else:
            report.problems += _check_generated(dataset, i, num_classes, min_size)
        report.pairs[split] += 1
        if progress and ((i + 1) % step == 0 or i + 1 == n):
            print(f"\rchecking {split}: {i + 1}/{n}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return report


def check_split(
    name: str,
    root: str | Path | None,
    split: str,
    *,
    num_classes: int | None = None,
    min_size: int | None = None,
    progress: bool = False,
    **dataset_kwargs,
) -> Report:
    """Open split ``split`` of dataset ``name`` at ``root`` and :func:`check_dataset` it.

    Datasets that support it are opened with ``strict=False``, so images without masks and
    an empty split become problems in the report instead of stopping the check. A split
    that cannot be opened at all (missing folder, unreadable ``classes.txt``) is one
    ``"unusable split"`` problem. ``dataset_kwargs`` go to
    :func:`~fcnseg.data.build_dataset`.
    """
    from fcnseg import data as fdata

    cls = fdata._DATASETS.get(str(name).lower())
    if cls is not None and "strict" in inspect.signature(cls).parameters:
        dataset_kwargs.setdefault("strict", False)
    try:
        dataset = fdata.build_dataset(name, root=root, split=split, **dataset_kwargs)
    except (FileNotFoundError, ValueError, OSError, KeyError) as e:
        where = f"{root}" if root is not None else str(name)
        return Report(
            {split: 0},
            [
                Problem(
                    where, "unusable split", f"split {split!r} cannot be opened: {_first_line(e)}"
                )
            ],
        )
    return check_dataset(dataset, num_classes=num_classes, min_size=min_size, progress=progress)


def check_splits(name: str, root: str | Path | None, splits: Iterable[str], **kwargs) -> Report:
    """:func:`check_split` over several splits, one combined :class:`Report`."""
    report = Report()
    for split in splits:
        report = report + check_split(name, root, split, **kwargs)
    return report
