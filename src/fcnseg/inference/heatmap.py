"""The paper's Figure 2: a convolutionalized ImageNet classifier's class heatmaps over a photo.

``classifier_heatmaps(backbone, weights, image)`` resolves the weights (any reference the
resolver takes; ``efficientnet_lite0`` with ``"DEFAULT"`` works offline), turns the classifier's
fully connected layers into convolutions (:func:`fcnseg.convolutionalize`), runs it on the whole
image, normalised as the weights expect, and returns per-location class probabilities at the
image's size, with each class's probability for the image as a whole: the softmax of the
spatial mean of the logits, which for a classifier whose last layer is one linear map after a
global pool (ResNet, EfficientNet) is the original classifier's own answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fcnseg.data.transforms import Normalize
from fcnseg.inference.core import Predictor
from fcnseg.models import convolutionalize
from fcnseg.models.backbones import classifier
from fcnseg.models.pretrained import WeightsEntry, backbone_preprocess, resolve_weights

__all__ = ["ClassHeatmaps", "classifier_heatmaps"]

MIN_SIDE = 224  # ImageNet classifiers' training size; VGG's fc6 needs >= 193 anyway


@dataclass
class ClassHeatmaps:
    """``probs`` (K, H, W): softmax over the K classes at each pixel (bilinear from the stride-32
    score map); ``image_probs`` (K,): softmax of the spatially averaged logits; ``categories``:
    the K names the weights carry, or None."""

    probs: torch.Tensor
    image_probs: torch.Tensor
    categories: tuple[str, ...] | None

    def name(self, k: int) -> str:
        return self.categories[k] if self.categories and k < len(self.categories) else f"class {k}"

    def top(self, k: int) -> list[int]:
        """The ``k`` classes most likely for the image, most likely first."""
        return self.image_probs.topk(min(k, self.image_probs.numel())).indices.tolist()


def classifier_heatmaps(
    backbone: str,
    weights: str | Path | WeightsEntry | None,
    image: torch.Tensor,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> ClassHeatmaps:
    """Class heatmaps of the convolutionalized ImageNet classifier ``backbone`` on ``image``.

    Args:
        backbone: a name of ``list_backbones()`` (its classifier: torchvision's or timm's).
        weights: a reference :func:`fcnseg.models.pretrained.resolve_weights` takes, an entry,
            or None (random weights: a meaningless map).
        image: uint8 (3, H, W). Images whose short side is under 224 are enlarged for the net.
        precision: the inference core's (``"fp32"``, ``"bf16"``, ``"auto"`` ...).

    Raises:
        ValueError: unknown backbone, weights that do not resolve or fit.
    """
    entry = weights if isinstance(weights, WeightsEntry) else resolve_weights(backbone, weights)
    net = convolutionalize(classifier(backbone, entry)).eval().to(device)
    preprocess = entry.preprocess if entry is not None else backbone_preprocess(backbone)
    height, width = image.shape[-2:]
    x = Normalize(preprocess)(image)[None].to(device)
    if min(height, width) < MIN_SIDE:  # too small for the classifier's window: enlarge
        scale = MIN_SIDE / min(height, width)
        size = (round(height * scale), round(width * scale))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    logits = Predictor(net, device=device, precision=precision, fast=False).logits(x, True)
    with torch.inference_mode():
        image_probs = logits.mean((2, 3)).softmax(1)[0]
        probs = F.interpolate(
            logits.softmax(1), size=(height, width), mode="bilinear", align_corners=False
        )
    categories = entry.categories if entry is not None else None
    return ClassHeatmaps(probs[0].cpu(), image_probs.cpu(), categories)
