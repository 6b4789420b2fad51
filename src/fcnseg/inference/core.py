"""The one inference core: ``Predictor`` = normalise -> precision -> fast path -> TTA and
sliding windows -> logits / argmax, built once per model and run on every batch.

``predict`` / ``iter_predict``, ``evaluate`` (and the trainer's evaluation through it), the
server's model runner, int8 parity and ``fcnseg bench`` all run models through it, so a new
option (a precision, a fast path) is one edit here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fcnseg.accel.onednn import for_inference
from fcnseg.accel.precision import (
    channels_last_pays,
    precision_autocast,
    precision_record,
    resolve_precision,
)
from fcnseg.data.transforms import Normalize
from fcnseg.inference.sliding import _pair, _Tiled
from fcnseg.inference.tta import parse_tta, tta_logits
from fcnseg.io.devices import resolve_device

__all__ = ["Predictor"]


class Predictor:
    """Runs ``model`` on batches of images, as every fcnseg command does.

    Args:
        model: an fcnseg ``FCN`` (or any module mapping ``(N, 3, H, W)`` normalised images to
            ``(N, C, H, W)`` logits; its ``config["preprocess"]`` says how to normalise, default
            ImageNet mean/std). Moved to ``device`` and put in eval mode; :meth:`close` restores
            its training flag.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (the GPU when there is one) ...; default:
            the device of the model's parameters.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (GPU) or ``"auto"`` (bf16 where the CPU or
            GPU computes it natively, else fp32): autocast around the forward; the TTA average,
            the returned logits and anything computed from them are float32.
        tta: ``None``, or flips and scales such as ``"flip,0.75,1.0,1.25"``
            (:func:`fcnseg.inference.tta.tta_logits`).
        window: tile size for sliding-window inference (int or ``(h, w)``); ``None``: whole
            images. ``overlap``: the tiles' overlap fraction.
        fast: on the CPU in fp32, run a copy of the model on oneDNN's fused kernels
            (:func:`fcnseg.accel.onednn.for_inference`; the same logits within 1e-5 relative).
            In bf16 on the CPU the model runs with channels-last activations instead.
        low_memory: with ``fast``: weights memory-mapped by ``load_model(mmap=True)`` are
            dropped from the resident set after each layer.

    Raises:
        ValueError: a bad ``precision``, ``tta``, ``window`` or ``overlap``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        tta: Sequence | str | None = None,
        window: int | Sequence[int] | None = None,
        overlap: float = 0.33,
        fast: bool = True,
        low_memory: bool = False,
    ) -> None:
        model = getattr(model, "module", model)  # a DDP wrapper: its forward would synchronise
        self.scales, self.flip = parse_tta(tta)
        if window is not None:
            _pair(window)  # validate early
            if not 0.0 <= overlap < 1.0:
                raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.device = _choose_device(model, device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model
        self.normalize = Normalize(getattr(model, "config", {}).get("preprocess"))
        # inputs in the model's own dtype (float32, or float64 for reproducibility checks)
        self.dtype = next(
            (p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32
        )
        self._was_training = model.training
        model.to(self.device).eval()
        self.channels_last = channels_last_pays(self.precision, self.device)
        self._made_channels_last = self.channels_last and not _is_channels_last(model)
        if self._made_channels_last:
            model.to(memory_format=torch.channels_last)
        net = model
        if fast and self.precision == "fp32":
            net = for_inference(model, self.device, low_memory)
        self.net = net if window is None else _Tiled(net, window, overlap)

    @property
    def record(self) -> dict:
        """The precision in use and the hardware it runs on (logs, bench rows, ``/model``)."""
        return precision_record(self.precision, self.device)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Float32 class scores ``(N, C, H, W)`` of a batch ``(N, 3, H, W)``.

        ``images``: uint8, or float in [0, 1] (normalised here), or already normalised
        (``normalized=True``: what a dataset's eval transforms give). With TTA, the log of the
        averaged probabilities (``argmax`` of either is the prediction).
        """
        x = images.to(self.device, non_blocking=True)
        if not normalized:
            x = self.normalize(x)
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision_autocast(self.precision, self.device):
            out = tta_logits(self.net, x, self.scales, self.flip)
        return out.float()

    def labels(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """int64 label maps ``(N, H, W)``: the argmax of :meth:`logits`."""
        return self.logits(images, normalized).argmax(1)

    def close(self) -> None:
        """Give the model back its training flag (and contiguous memory format)."""
        if self._made_channels_last:
            self.model.to(memory_format=torch.contiguous_format)
        self.model.train(self._was_training)

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_channels_last(model: nn.Module) -> bool:
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last)


def _choose_device(model: nn.Module, device) -> torch.device:
    if device is not None:
        return resolve_device(device)
    p = next(model.parameters(), None)
    return p.device if p is not None and p.device.type != "meta" else torch.device("cpu")
