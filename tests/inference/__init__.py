"""Tests of inference and export: tiny models (ResNet-18 FCNs, 3 classes) on small images."""

from __future__ import annotations

import torch

import fcnseg
from fcnseg.data.transforms import Normalize


def tiny_model(arch: str = "fcn8s", num_classes: int = 3, seed: int = 0) -> fcnseg.FCN:
    """A randomly initialised ResNet-18 FCN in eval mode whose score layers (zero-started in a
    fresh model) hold random values, so its predictions are not all one class.

    The score_fr bias is then set to minus the mean logit of each class on a calibration
    image, so every class wins somewhere (random ReLU features share a large common part that
    would otherwise make one class win everywhere).
    """
    torch.manual_seed(seed)
    model = fcnseg.build_model(arch, backbone="resnet18", num_classes=num_classes).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("score"):
                p.normal_(0.0, 0.1) if name.endswith("weight") else p.zero_()
        x = Normalize(model.preprocess)(random_image(96, 128, seed=seed + 100))[None]
        model.score_fr.bias.sub_(model(x).mean(dim=(0, 2, 3)))
    return model


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth-ish random uint8 RGB image (3, H, W): noise plus a few flat rectangles."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
    for _ in range(3):
        y, x = (int(v) for v in torch.randint(0, min(height, width) // 2, (2,), generator=g))
        colour = torch.randint(0, 256, (3, 1, 1), generator=g, dtype=torch.uint8)
        img[:, y : y + height // 3, x : x + width // 3] = colour
    return img
