"""Inference: label whole images of any size, optionally tiled and test-time augmented.

``predict(model, images)`` takes paths, PIL images or tensors and returns one int64 label map
``(H, W)`` per image, at that image's own size: the paper's "whole image in, dense prediction
out" (Section 3), with normalisation taken from the model's stored ``preprocess``.

Two additions the paper does not need on 500x500 VOC images but large photos do:

- **Sliding window** (:func:`sliding_window_logits`): the image is cut into overlapping tiles,
  each tile's logits are computed whole and blended back. The tiling follows mmsegmentation's
  ``EncoderDecoder.slide_inference`` (``mmseg/models/segmentors/encoder_decoder.py``): a
  regular grid of tiles whose last row/column is shifted back inside the image, and each
  pixel's logits divided by the sum of the weights that covered it. fcnseg adds two things:
  tile origins on the model's output-stride grid (so every tile samples the image exactly as
  whole-image inference does), and a weight ramp across each overlap that is *zero* within a
  margin of a tile's inner edges. A pixel therefore only ever takes logits from tiles where it
  lies at least ``margin`` pixels from a cut, which makes the result equal to whole-image
  inference for any model whose receptive field radius is at most ``margin`` (tested).
- **Test-time augmentation** through :func:`fcnseg.engine.evaluation.tta_logits` (flip and
  scales averaged in probability space at input resolution), composable with tiling.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from fcnseg.accel.onednn import for_inference
from fcnseg.data.transforms import Normalize
from fcnseg.engine.evaluation import parse_tta, tta_logits
from fcnseg.io.devices import resolve_device
from fcnseg.io.images import IMAGE_EXTENSIONS, image_size, is_image_file, load_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "Prediction",
    "expand_inputs",
    "iter_predict",
    "load_image",
    "model_palette",
    "predict",
    "predict_logits",
    "resolve_device",
    "sliding_window_logits",
]

_GLOB_CHARS = set("*?[")


# --------------------------------------------------------------------------- inputs


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


def output_stride(model: nn.Module) -> int:
    """The stride of the model's coarsest map (32 for an FCN), or 1 if unknown.

    A model may declare it as an ``output_stride`` attribute; an fcnseg ``FCN`` is read from its
    backbone's taps.
    """
    stride = getattr(model, "output_stride", None)
    if stride:
        return int(stride)
    taps = getattr(getattr(model, "backbone", None), "taps", None)
    if isinstance(taps, dict) and taps:
        return int(max(taps))
    return 1


def _pair(window: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(window, int):
        return window, window
    h, w = (int(v) for v in window)
    return h, w


def _tile_layout(length: int, window: int, overlap: float, align: int) -> tuple[list[int], int]:
    """Tile starts along one axis, and the nominal overlap in pixels.

    The step is ``window * (1 - overlap)`` rounded down to a multiple of ``align`` (the model's
    output stride, when the step is at least that); the last tile is shifted back so that it
    ends at the image border, as in mmseg's ``slide_inference``.
    """
    if window >= length:
        return [0], 0
    step = max(1, int(window * (1.0 - overlap)))
    if align > 1 and step >= align:
        step = step // align * align
    starts = list(range(0, length - window, step)) + [length - window]
    return starts, window - step


def _ramp(window: int, overlap_px: int, rise_at_start: bool, rise_at_end: bool) -> torch.Tensor:
    """Blending weight along one tile axis.

    Zero within ``margin = overlap_px // 4`` of an inner edge (where the tile's logits suffer
    from the cut), then a linear rise to 1 at ``overlap_px - margin``. Edges on the image
    border keep weight 1 (no neighbour to blend with, and whole-image inference sees the same
    border).
    """
    w = torch.ones(window, dtype=torch.float64)
    if overlap_px <= 0:
        return w
    margin = overlap_px // 4
    d = torch.arange(window, dtype=torch.float64)
    rise = ((d - margin + 1) / (overlap_px - 2 * margin + 1)).clamp(0.0, 1.0)
    if rise_at_start:
        w = torch.minimum(w, rise)
    if rise_at_end:
        w = torch.minimum(w, rise.flip(0))
    return w


def sliding_window_logits(
    model: nn.Module,
    images: torch.Tensor,
    window: int | Sequence[int],
    overlap: float = 0.33,
    *,
    blend: str = "ramp",
    align: int | None = None,
) -> torch.Tensor:
    """Logits of ``images`` computed tile by tile and blended.

    Args:
        model: maps ``(N, 3, h, w)`` normalised images to ``(N, C, h, w)`` logits.
        images: ``(N, 3, H, W)`` normalised images (N = 1 in the usual case).
        window: tile size, an int or ``(h, w)``; clipped to the image (a window at least as
            large as the image means one whole-image pass).
        overlap: fraction of the window shared by neighbouring tiles, in ``[0, 1)``.
        blend: ``"ramp"`` (default): per-pixel weights that are zero within a quarter of the
            overlap from a tile's inner edge and rise linearly to 1 across the middle half of
            the overlap; ``"mean"``: plain averaging of every tile covering a pixel (mmseg's
            ``count_mat``).
        align: tile origins are multiples of this (default: :func:`output_stride` of the model,
            32 for an FCN) so each tile sees the stride-32 grid whole-image inference sees; the
            last row/column of tiles is shifted to the image border and may be off the grid.

    Returns:
        ``(N, C, H, W)`` float32 logits. With ``blend="ramp"``, a model whose receptive field
        radius is at most a quarter of the overlap (in pixels) and tile origins on its stride
        grid, the result equals whole-image inference (up to float rounding).

    Raises:
        ValueError: a bad window, overlap or blend mode.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(images.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if blend not in ("ramp", "mean"):
        raise ValueError(f"blend must be 'ramp' or 'mean', got {blend!r}")
    win_h, win_w = _pair(window)
    if win_h < 1 or win_w < 1:
        raise ValueError(f"window must be positive, got {window}")
    height, width = images.shape[-2:]
    win_h, win_w = min(win_h, height), min(win_w, width)
    align = output_stride(model) if align is None else int(align)
    ys, overlap_h = _tile_layout(height, win_h, overlap, align)
    xs, overlap_w = _tile_layout(width, win_w, overlap, align)
    if len(ys) == 1 and len(xs) == 1:
        return model(images).float()

    logits = weights = None
    for y in ys:
        for x in xs:
            tile = model(images[:, :, y : y + win_h, x : x + win_w]).float()
            if logits is None:
                logits = tile.new_zeros(images.shape[0], tile.shape[1], height, width)
                weights = tile.new_zeros(1, 1, height, width)
            if blend == "ramp":
                wy = _ramp(win_h, overlap_h, y > 0, y + win_h < height)
                wx = _ramp(win_w, overlap_w, x > 0, x + win_w < width)
                w = (wy[:, None] * wx[None, :]).to(tile)
            else:
                w = tile.new_ones(win_h, win_w)
            logits[:, :, y : y + win_h, x : x + win_w] += tile * w
            weights[:, :, y : y + win_h, x : x + win_w] += w
    # Every pixel has a positive total weight: the tile whose inner edges are farthest from it
    # always gives it a positive weight (see _ramp).
    return logits / weights


class _Tiled(nn.Module):
    """A model whose forward runs tiled (so test-time augmentation can wrap tiling)."""

    def __init__(self, model: nn.Module, window, overlap: float) -> None:
        super().__init__()
        self.model, self.window, self.overlap = model, window, overlap
        self.output_stride = output_stride(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sliding_window_logits(self.model, x, self.window, self.overlap)


# --------------------------------------------------------------------------- predict


@dataclass
class Prediction:
    """One labelled image: its position in the input, its RGB pixels and its results."""

    index: int
    image: torch.Tensor  # uint8 (3, H, W), CPU
    labels: torch.Tensor  # int64 (H, W), CPU
    logits: torch.Tensor | None = None  # float32 (C, H, W), CPU, when asked for


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images
    return (images.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def iter_predict(
    model: nn.Module,
    images,
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    tta: Sequence | str | None = None,
    window: int | Sequence[int] | None = None,
    overlap: float = 0.33,
    half: bool = False,
    progress: bool = False,
    num_workers: int = 0,
    return_logits: bool = False,
    fast: bool = True,
    low_memory: bool = False,
) -> Iterator[Prediction]:
    """Like :func:`predict`, but yields a :class:`Prediction` per image as batches finish.

    Images come in batch order (same-size images are batched together), each carrying its
    ``index`` in the input; this is what the ``fcnseg predict`` command streams to disk.
    ``low_memory`` (with ``fast``, on the CPU): weights memory-mapped by
    ``load_model(path, mmap=True)`` are dropped from the resident set after each layer
    (:func:`fcnseg.accel.onednn.to_onednn` ``stream_weights``).
    """
    items = _as_items(images)
    if not items:
        return
    scales, flip = parse_tta(tta)
    if window is not None:
        _pair(window)  # validate early
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    device = resolve_device(device)
    normalize = Normalize(getattr(model, "config", {}).get("preprocess"))
    batches = _same_size_batches([_image_size(it) for it in items], batch_size)
    loader = DataLoader(
        _ImageList(items), batch_sampler=batches, collate_fn=_collate, num_workers=num_workers
    )
    if half:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        autocast = torch.autocast(device.type, dtype=dtype)
    else:
        autocast = contextlib.nullcontext()

    was_training = model.training
    model.to(device).eval()
    # on the CPU, fp32: the same network on oneDNN's kernels (faster; the same outputs within
    # float rounding; figures in benchmarks/README.md)
    net = for_inference(model, device, low_memory) if fast and not half else model
    net = net if window is None else _Tiled(net, window, overlap)
    bar = tqdm(total=len(items), desc="predict", unit="img", disable=not progress)
    try:
        with torch.inference_mode():
            for loaded in loader:
                if isinstance(loaded, Exception):
                    raise loaded
                indices, batch = loaded
                x = normalize(batch.to(device, non_blocking=True))
                with autocast:
                    logits = tta_logits(net, x, scales, flip)
                logits = logits.float()
                labels = logits.argmax(1).cpu()
                logits = logits.cpu() if return_logits else None
                rgb = _as_uint8(batch)
                for k, index in enumerate(indices):
                    yield Prediction(
                        index, rgb[k], labels[k], logits[k] if logits is not None else None
                    )
                bar.update(len(indices))
    finally:
        bar.close()
        model.train(was_training)


def predict(
    model: nn.Module,
    images,
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    tta: Sequence | str | None = None,
    window: int | Sequence[int] | None = None,
    overlap: float = 0.33,
    half: bool = False,
    progress: bool = False,
    num_workers: int = 0,
    fast: bool = True,
) -> list[torch.Tensor]:
    """Label images with ``model``: one int64 label map ``(H, W)`` per image, its own size.

    Args:
        model: an fcnseg ``FCN`` (or any module mapping ``(N, 3, H, W)`` normalised images to
            ``(N, C, H, W)`` logits; its ``config["preprocess"]`` says how to normalise, default
            ImageNet mean/std). Moved to ``device`` and run in eval mode (its training flag is
            restored afterwards).
        images: a path (file, folder or glob), a PIL image, a ``(3, H, W)`` tensor (uint8, or
            float in ``[0, 1]``), an ``(N, 3, H, W)`` batch, an ``(H, W, 3)`` uint8 array, or a
            list of any of these. Images may differ in size.
        batch_size: images per forward pass; only images of the same size share a batch.
        device: ``"cpu"``, ``"cuda"``, ...; default the GPU when there is one, else the CPU.
        tta: ``None``, or flips and scales such as ``"flip,0.75,1.0,1.25"`` (see
            :func:`fcnseg.engine.evaluation.tta_logits`).
        window: tile size for sliding-window inference (int or ``(h, w)``); ``None``: whole
            images.
        overlap: tile overlap fraction for ``window``.
        half: autocast to float16 on a GPU (bfloat16 on the CPU); logits are compared in float32.
        progress: show a tqdm bar.
        num_workers: DataLoader workers that decode image files.
        fast: on the CPU in float32, run the model through
            :func:`fcnseg.accel.onednn.for_inference` (oneDNN kernels chosen per layer, the
            same logits within 1e-5 relative); ``False``: the model exactly as it is.

    Returns:
        A list of int64 CPU tensors ``(H_i, W_i)`` in input order.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unreadable image, a bad ``tta``, ``window`` or ``overlap``, an image
            smaller than the backbone accepts.
    """
    return _collect(
        iter_predict(
            model, images, batch_size=batch_size, device=device, tta=tta, window=window,
            overlap=overlap, half=half, progress=progress, num_workers=num_workers, fast=fast,
        ),
        "labels",
    )  # fmt: skip


def predict_logits(
    model: nn.Module,
    images,
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    tta: Sequence | str | None = None,
    window: int | Sequence[int] | None = None,
    overlap: float = 0.33,
    half: bool = False,
    progress: bool = False,
    num_workers: int = 0,
    fast: bool = True,
) -> list[torch.Tensor]:
    """Like :func:`predict`, returning float32 class scores ``(C, H_i, W_i)`` per image.

    Without TTA these are the model's logits; with TTA, the log of the averaged probabilities
    (``argmax`` of either is the prediction).
    """
    return _collect(
        iter_predict(
            model, images, batch_size=batch_size, device=device, tta=tta, window=window,
            overlap=overlap, half=half, progress=progress, num_workers=num_workers,
            return_logits=True, fast=fast,
        ),
        "logits",
    )  # fmt: skip


def _collect(predictions: Iterable[Prediction], field: str) -> list[torch.Tensor]:
    """One ``field`` of each streamed prediction, back in input order."""
    out = {p.index: getattr(p, field) for p in predictions}
    return [out[i] for i in range(len(out))]


def model_palette(model: nn.Module) -> list[tuple[int, int, int]]:
    """Colours for the model's classes: the palette stored with the model (``build_model``
    stores one); for a checkpoint written before palettes were stored, the dataset's own
    palette when its class names are those of a known dataset, else
    :func:`fcnseg.data.palette_for`."""
    from fcnseg.data import palettes

    config = getattr(model, "config", {}) or {}
    if config.get("palette"):
        return [tuple(int(v) for v in c) for c in config["palette"]]
    names = config.get("class_names")
    num_classes = int(config.get("num_classes") or getattr(model, "num_classes", 21))
    if names:
        from fcnseg.data.cityscapes import CITYSCAPES_CLASSES
        from fcnseg.data.shapes import SHAPES_CLASSES, SHAPES_PALETTE

        known = {
            tuple(SHAPES_CLASSES): SHAPES_PALETTE,
            tuple(CITYSCAPES_CLASSES): palettes.CITYSCAPES_PALETTE,
        }
        if tuple(names) in known:
            return list(known[tuple(names)])
    return palettes.palette_for(num_classes)
