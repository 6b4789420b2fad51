"""``predict`` / ``predict_logits`` / ``iter_predict``: label whole images of any size through
the inference core (:class:`fcnseg.inference.core.Predictor`: the model's own normalisation, a
precision, the fast path, tiles and test-time augmentation)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fcnseg.inference.core import Predictor
from fcnseg.inference.inputs import _as_items, _collate, _image_size, _ImageList, _same_size_batches
from fcnseg.io.devices import resolve_device
from fcnseg.metrics import class_labels

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
    model: nn.Module | Predictor,
    images,
    *,
    batch_size: int = 1,
    progress: bool = False,
    num_workers: int = 0,
    return_logits: bool = False,
    **options,
) -> Iterator[Prediction]:
    """Like :func:`predict`, but yields a :class:`Prediction` per image as batches finish.

    Images come in batch order (same-size images are batched together), each carrying its
    ``index`` in the input; this is what the ``fcnseg predict`` command streams to disk.
    """
    items = _as_items(images)
    if not items:
        return
    owned = not isinstance(model, Predictor)
    if owned:
        options["device"] = resolve_device(options.get("device"))
        predictor = Predictor(model, **options)
    elif options:
        raise ValueError(f"a Predictor carries its own options; got {sorted(options)}")
    else:
        predictor = model
    batches = _same_size_batches([_image_size(it) for it in items], batch_size)
    loader = DataLoader(
        _ImageList(items), batch_sampler=batches, collate_fn=_collate, num_workers=num_workers
    )
    bar = tqdm(total=len(items), desc="predict", unit="img", disable=not progress)
    try:
        for loaded in loader:
            if isinstance(loaded, Exception):
                raise loaded
            indices, batch = loaded
            logits = predictor.logits(batch)
            labels = class_labels(logits).cpu()
            logits = logits.cpu() if return_logits else None
            rgb = _as_uint8(batch)
            for k, index in enumerate(indices):
                yield Prediction(
                    index, rgb[k], labels[k], logits[k] if logits is not None else None
                )
            bar.update(len(indices))
    finally:
        bar.close()
        if owned:
            predictor.close()


def predict(
    model: nn.Module | Predictor,
    images,
    *,
    batch_size: int = 1,
    progress: bool = False,
    num_workers: int = 0,
    **options,
) -> list[torch.Tensor]:
    """Label images with ``model``: one int64 label map ``(H, W)`` per image, its own size.

    Args:
        model: an fcnseg ``FCN`` (or any module mapping normalised ``(N, 3, H, W)`` images to
            ``(N, C, H, W)`` logits), or a :class:`~fcnseg.inference.core.Predictor` built once
            and reused over many calls.
        images: a path (file, folder or glob), a PIL image, a ``(3, H, W)`` tensor (uint8, or
            float in ``[0, 1]``), an ``(N, 3, H, W)`` batch, an ``(H, W, 3)`` uint8 array, or a
            list of any of these. Images may differ in size.
        batch_size: images per forward pass; only images of the same size share a batch.
        progress: show a tqdm bar.
        num_workers: DataLoader workers that decode image files.
        **options: the :class:`~fcnseg.inference.core.Predictor`'s: ``device`` (default the
            GPU when there is one), ``precision`` (``"fp32"``, ``"bf16"``, ``"fp16"``,
            ``"auto"``), ``tta`` (``"flip,0.75,1.0,1.25"``), ``window`` / ``overlap`` (sliding
            window), ``fast``, ``low_memory``.

    Returns:
        A list of int64 CPU tensors ``(H_i, W_i)`` in input order.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unreadable image, a bad option, an image smaller than the backbone
            accepts.
    """
    predictions = iter_predict(
        model, images, batch_size=batch_size, progress=progress, num_workers=num_workers, **options
    )
    return _collect(predictions, "labels")


def predict_logits(
    model: nn.Module | Predictor,
    images,
    *,
    batch_size: int = 1,
    progress: bool = False,
    num_workers: int = 0,
    **options,
) -> list[torch.Tensor]:
    """Like :func:`predict`, returning float32 class scores ``(C, H_i, W_i)`` per image.

    Without TTA these are the model's logits; with TTA, the log of the averaged probabilities
    (``argmax`` of either is the prediction).
    """
    predictions = iter_predict(
        model, images, batch_size=batch_size, progress=progress, num_workers=num_workers,
        return_logits=True, **options,
    )  # fmt: skip
    return _collect(predictions, "logits")


def _collect(predictions: Iterable[Prediction], field: str) -> list[torch.Tensor]:
    """One ``field`` of each streamed prediction, back in input order."""
    out = {p.index: getattr(p, field) for p in predictions}
    return [out[i] for i in range(len(out))]
