"""The served model: what it is (for ``GET /model``) and how a batch is labelled."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fcnseg.inference import Predictor, model_palette
from fcnseg.io.devices import resolve_device

__all__ = ["ModelRunner"]


class ModelRunner:
    """Holds one model and labels batches of same-size images with it.

    Labelling goes through the inference core (:class:`fcnseg.inference.Predictor`, built once
    and kept: its normalisation, precision and, on the CPU in fp32, the oneDNN copy of the
    model), so a served mask equals what ``fcnseg.predict`` gives for the same image.

    Args:
        model: an fcnseg model (``load_model`` result).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (the precision policy).

    Raises:
        ValueError: more than 256 classes (an index PNG holds 256), a device that is absent,
            or an unknown precision.
    """

    def __init__(self, model: nn.Module, device: str = "auto", precision: str = "fp32") -> None:
        self.model = model.eval()
        config = dict(getattr(model, "config", {}) or {})
        self.num_classes = int(config.get("num_classes") or getattr(model, "num_classes", 0))
        if self.num_classes > 256:
            raise ValueError(f"{self.num_classes} classes do not fit an index PNG (at most 256)")
        names = getattr(model, "class_names", None) or config.get("class_names")
        self.class_names = [str(n) for n in (names or range(self.num_classes))]
        self.palette = [tuple(int(v) for v in c) for c in model_palette(model)][: self.num_classes]
        self.config = config
        # built once: the served weights never change, and rebuilding the fast copy per
        # request would cost more than a small model's forward
        self.predictor = Predictor(model, device=resolve_device(device), precision=precision)
        self.device = self.predictor.device

    def __call__(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``uint8 (3, H, W)`` images, all one size -> int64 ``(H, W)`` label maps, in order."""
        labels = self.predictor.labels(torch.stack(list(images))).cpu()
        return list(labels)

    def describe(self) -> dict:
        """Architecture, classes, palette and input conventions (the ``GET /model`` body)."""
        c = self.config
        return {
            "arch": c.get("arch"),
            "backbone": c.get("backbone"),
            "num_classes": self.num_classes,
            "classes": [
                {"index": i, "label": n, "color": list(self.palette[i])}
                for i, n in enumerate(self.class_names)
            ],
            "palette": [list(p) for p in self.palette],
            "device": str(self.device),
            **self.predictor.record,  # precision, and the CPU's ISA
            "input": {
                "color": "RGB (grey, palette, 16-bit, CMYK converted; alpha dropped)",
                "orientation": "pixels as stored (EXIF orientation not applied)",
                "size": "any; the outputs have the input's size",
                "preprocess": c.get("preprocess"),
            },
        }
