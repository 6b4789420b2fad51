"""The one inference core: ``Predictor`` = normalise -> precision -> fast path -> TTA and
sliding windows -> logits / argmax, built once per model and run on every batch.

``predict`` / ``iter_predict``, ``evaluate`` (and the trainer's evaluation through it), the
server's model runner, int8 parity and ``fcnseg bench`` all run models through it, so a new
option (a precision, a fast path) is one edit here.
"""

from __future__ import annotations

import time
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
from fcnseg.metrics import class_labels

__all__ = ["AUTO_MIN_AGREEMENT", "Predictor"]

#: ``auto`` keeps bf16 only where at least this share of pixels gets fp32's label (bf16 keeps 8
#: significant bits: only pixels whose top two classes are within ~1 % of each other may flip)
AUTO_MIN_AGREEMENT = 0.99


class Predictor:
    """Runs ``model`` on batches of images, as every fcnseg command does.

    Args:
        model: an fcnseg ``FCN`` (or any module mapping ``(N, 3, H, W)`` normalised images to
            ``(N, C, H, W)`` logits; its ``config["preprocess"]`` says how to normalise, default
            ImageNet mean/std). Moved to ``device`` and put in eval mode; :meth:`close` restores
            its training flag.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (the GPU when there is one) ...; default:
            the device of the model's parameters.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (GPU) or ``"auto"``: autocast around the
            forward; the TTA average, the returned logits and anything computed from them are
            float32. ``auto`` is fp32 where the hardware has no native bf16; where it has, both
            run on the first batch and bf16 is kept only if it is faster for this model and
            agrees with fp32 (``record["auto"]`` says what was measured).
        tta: ``None``, or flips and scales such as ``"flip,0.75,1.0,1.25"``
            (:func:`fcnseg.inference.tta.tta_logits`).
        window: tile size for sliding-window inference (int or ``(h, w)``); ``None``: whole
            images. ``overlap``: the tiles' overlap fraction.
        fast: on the CPU, run a copy of the model on oneDNN's fused kernels
            (:func:`fcnseg.accel.onednn.for_inference`): in fp32 the same logits within 1e-5
            relative; in bf16 with the weights pre-packed in bf16 and channels-last
            activations (the layers it does not convert run under autocast).
        low_memory: with ``fast``: weights memory-mapped by ``load_model(mmap=True)`` are
            dropped from the resident set after each layer (fp32); bf16 then runs the
            autocast model, which holds no bf16 copy of the weights.

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
        # auto on bf16 hardware: bf16 only where it is faster for *this* model and agrees with
        # fp32 (depthwise nets such as EfficientNet-Lite run slower in bf16 on the CPU); both
        # are tried on the first batch (:meth:`_choose`)
        self._pending = precision == "auto" and self.precision != "fp32"
        self.choice: dict | None = None
        self._options = (fast, low_memory, window, overlap)
        self.model = model
        self.normalize = Normalize(getattr(model, "config", {}).get("preprocess"))
        # inputs in the model's own dtype (float32, or float64 for reproducibility checks)
        self.dtype = next(
            (p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32
        )
        self._was_training = model.training
        model.to(self.device).eval()
        self._made_channels_last = False
        self.net = self._prepare(self.precision)

    def _prepare(self, precision: str) -> nn.Module:
        """The network as ``precision`` runs it: channels-last where the policy says it pays,
        the oneDNN fast copy (fp32 or bf16) where it applies, tiled when asked."""
        fast, low_memory, window, overlap = self._options
        self.channels_last = channels_last_pays(precision, self.device)
        if self.channels_last and not _is_channels_last(self.model):
            self.model.to(memory_format=torch.channels_last)
            self._made_channels_last = True
        net = self.model
        if fast and precision == "fp32":
            net = for_inference(self.model, self.device, low_memory)
        elif fast and precision == "bf16" and not low_memory:
            # the converted layers' weights as pre-packed bf16 copies (half their fp32 size;
            # low_memory keeps the autocast model, which holds no second copy)
            net = for_inference(self.model, self.device, dtype=torch.bfloat16)
        return net if window is None else _Tiled(net, window, overlap)

    def _choose(self, x: torch.Tensor) -> None:
        """``auto``: time fp32 and bf16 on this batch (one untimed run, then the best of two)
        and keep bf16 only if it is faster and its labels agree with fp32's on at least
        :data:`AUTO_MIN_AGREEMENT` of the pixels."""
        low = self.precision
        nets = {"fp32": self._prepare("fp32"), low: self._prepare(low)}
        timings, labels = {}, {}
        for name, net in nets.items():
            contiguous = name == "fp32"
            xin = x if contiguous else x.contiguous(memory_format=torch.channels_last)
            runs = []
            for _ in range(3):
                started = time.perf_counter()
                with precision_autocast(name, self.device):
                    out = tta_logits(net, xin, self.scales, self.flip)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                runs.append(time.perf_counter() - started)
            timings[name] = min(runs[1:]) * 1e3
            labels[name] = class_labels(out.float())
        agreement = float((labels["fp32"] == labels[low]).float().mean())
        keep = low if timings[low] < timings["fp32"] and agreement >= AUTO_MIN_AGREEMENT else "fp32"
        self.choice = {"ms": timings, "argmax_agreement": agreement, "chosen": keep}
        self.precision, self.net = keep, nets[keep]
        self.channels_last = channels_last_pays(keep, self.device)
        if keep == "fp32" and self._made_channels_last:
            self.model.to(memory_format=torch.contiguous_format)
            self._made_channels_last = False
        self._pending = False

    @property
    def record(self) -> dict:
        """The precision in use and the hardware it runs on (logs, bench rows, ``/model``);
        for ``auto``, what was tried (after the first batch)."""
        record = precision_record(self.precision, self.device)
        if self.choice is not None:
            record["auto"] = self.choice
        return record

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
        if self._pending:
            self._choose(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision_autocast(self.precision, self.device):
            out = tta_logits(self.net, x, self.scales, self.flip)
        return out.float()

    def labels(self, images: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """int64 label maps ``(N, H, W)``: the argmax of :meth:`logits`."""
        return class_labels(self.logits(images, normalized))

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
