"""``predict`` / ``predict_logits`` / ``iter_predict``: label whole images of any size, with the
model's own normalisation, optionally tiled (:mod:`fcnseg.inference.sliding`) and test-time
augmented (:func:`fcnseg.engine.evaluation.tta_logits`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fcnseg.accel.onednn import for_inference
from fcnseg.data.transforms import Normalize
from fcnseg.engine.evaluation import parse_tta, tta_logits
from fcnseg.inference.inputs import _as_items, _collate, _image_size, _ImageList, _same_size_batches
from fcnseg.inference.sliding import _pair, _Tiled
from fcnseg.io.devices import resolve_device

__all__ = ["Prediction", "iter_predict", "predict", "predict_logits"]


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
