"""Backbones: torchvision classifiers tapped at strides 8, 16 and 32.

Each backbone declares its taps (stride -> channels, and where its pixels sit in the input,
see `upsampling.Grid`), so the FCN heads never hard-code layer names (timm's `feature_info`
idea). The networks themselves are torchvision's own definitions, tapped with torchvision's
`IntermediateLayerGetter`, so torchvision state dicts and weight enums load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from fcnseg.io.files import load_state_dict_file
from fcnseg.models.convolutionalize import fc_as_convs
from fcnseg.models.upsampling import Grid


@dataclass(frozen=True)
class Tap:
    """One feature map a backbone exposes: its stride, channels and pixel grid."""

    name: str
    channels: int
    grid: Grid

    @property
    def stride(self) -> int:
        return self.grid.stride


class Backbone(nn.Module):
    """Base class: ``forward(x) -> {stride: feature map}`` for every stride in ``taps``."""

    # taps: {stride: Tap}, set by each subclass (plain Python metadata, not scripted)
    __jit_ignored_attributes__ = ["taps"]
    min_input_size: int = 1

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        raise NotImplementedError


def _refuse_pad100(pad100: bool, family: str) -> None:
    if pad100:
        raise ValueError(f"pad100 is the VGG16 reference geometry; {family} cannot use it")


class VGGBackbone(Backbone):
    """VGG16 (or VGG16-BN) with fc6/fc7 convolutionalized, tapped at pool3, pool4 and fc7.

    ``pad100=True`` is the Caffe reference geometry (`voc-fcn8s/net.py`): conv1_1 padding 100
    so that fc6, a 7x7 convolution without padding, fits any input. The default pads fc6 by 3
    instead, which keeps every map aligned with the input at a fraction of the compute.
    Pooling uses ceil mode (as Caffe), so every input size >= 1 works.
    """

    def __init__(self, vgg: torchvision.models.VGG, pad100: bool = False) -> None:
        super().__init__()
        features = vgg.features
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        for i in pools:
            features[i].ceil_mode = True
        if pad100:
            features[0].padding = (100, 100)
        pool3, pool4, pool5 = pools[2], pools[3], pools[4]
        self.features = IntermediateLayerGetter(
            features, {str(pool3): "8", str(pool4): "16", str(pool5): "32"}
        )
        # the same weights, viewed as convolutions (Section 3.1); fc8 is the FCN's score layer
        self.fc6, self.fc7, _ = fc_as_convs(vgg, fc6_padding=0 if pad100 else 3)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)

        # Pixel i of a stride-s pool map covers inputs [s*i, s*i + s - 1]: centre s*i + (s-1)/2.
        # conv1_1's 100-pixel padding shifts everything by -99 (its output i is centred at i - 99),
        # and the unpadded 7x7 fc6 moves the stride-32 centre by +3 pixels of pool5 (+96).
        shift = -99.0 if pad100 else 0.0
        fc6_shift = 3 * 32 if pad100 else 0
        self.taps = {
            8: Tap("pool3", 256, Grid(8, 3.5 + shift)),
            16: Tap("pool4", 512, Grid(16, 7.5 + shift)),
            32: Tap("fc7", 4096, Grid(32, 15.5 + shift + fc6_shift)),
        }

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        out = {int(k): v for k, v in self.features(x).items()}
        h = self.drop(self.relu(self.fc6(out[32])))
        out[32] = self.drop(self.relu(self.fc7(h)))
        return out


class AlexNetBackbone(Backbone):
    """AlexNet with fc6 (6x6) and fc7 convolutionalized; one tap at stride 32 (FCN-32s only,
    as in the paper's Table 1). fc6 is padded 'same' so small inputs still give a map."""

    min_input_size = 35  # smaller inputs leave nothing for pool5's 3x3 window

    def __init__(self, alexnet: torchvision.models.AlexNet, pad100: bool = False) -> None:
        super().__init__()
        _refuse_pad100(pad100, "alexnet")
        for m in alexnet.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
        self.features = alexnet.features
        self.pad6 = nn.ZeroPad2d((2, 3, 2, 3))  # 'same' for an even kernel
        self.fc6, self.fc7, _ = fc_as_convs(alexnet)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        # conv1 (11x11, stride 4, pad 2) centres pixel i at 4i+3; each 3x3/2 pool maps j to the
        # centre of inputs 2j..2j+2, so pool5 sits at 32m+31; 'same' fc6 pads (2, 3): +0.5 pixel.
        self.taps = {32: Tap("fc7", 4096, Grid(32, 31.0 + 16.0))}

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        h = self.features(x)
        h = self.drop(self.relu(self.fc6(self.pad6(h))))
        return {32: self.drop(self.relu(self.fc7(h)))}


class ResNetBackbone(Backbone):
    """ResNet tapped at layer2 (stride 8), layer3 (16) and layer4 (32).

    Every strided layer is a 'same'-padded odd kernel, so pixel i of a stride-s map is centred
    at s*i exactly (centre 0)."""

    def __init__(self, resnet: torchvision.models.ResNet, pad100: bool = False) -> None:
        super().__init__()
        _refuse_pad100(pad100, "resnets")
        self.body = IntermediateLayerGetter(resnet, {"layer2": "8", "layer3": "16", "layer4": "32"})
        self.taps = {
            s: Tap(name, _out_channels(getattr(resnet, name)), Grid(s, 0.0))
            for s, name in ((8, "layer2"), (16, "layer3"), (32, "layer4"))
        }

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(k): v for k, v in self.body(x).items()}


class MobileNetV3Backbone(Backbone):
    """MobileNetV3-Large tapped at the last block of strides 8, 16 and 32 (the 960-channel
    head conv). Strided depthwise convs are 'same'-padded odd kernels: centre 0."""

    def __init__(self, mobilenet: torchvision.models.MobileNetV3, pad100: bool = False) -> None:
        super().__init__()
        if pad100:
            raise ValueError(
                "pad100 is the VGG16 reference geometry; mobilenet does not support it"
            )
        last_at_stride = _last_block_per_stride(mobilenet.features)
        self.features = IntermediateLayerGetter(
            mobilenet.features, {str(i): str(s) for s, i in last_at_stride.items()}
        )
        self.taps = {
            s: Tap(f"features.{i}", _out_channels(mobilenet.features[i]), Grid(s, 0.0))
            for s, i in last_at_stride.items()
        }

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(k): v for k, v in self.features(x).items()}


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _last_block_per_stride(features: nn.Sequential) -> dict[int, int]:
    """Index of the last block at strides 8, 16 and 32, found by a probe pass (64x64 input)."""
    with torch.no_grad():
        was_training = features.training
        features.eval()
        x = torch.zeros(1, 3, 64, 64)
        last: dict[int, int] = {}
        for i, block in enumerate(features):
            x = block(x)
            last[64 // x.shape[-1]] = i
        features.train(was_training)
    return {s: last[s] for s in (8, 16, 32)}


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., Backbone]
    archs: tuple[str, ...] = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(VGGBackbone),
    "vgg16_bn": BackboneSpec(VGGBackbone),
    "alexnet": BackboneSpec(AlexNetBackbone, archs=("fcn32s",)),
    "resnet18": BackboneSpec(ResNetBackbone),
    "resnet34": BackboneSpec(ResNetBackbone),
    "resnet50": BackboneSpec(ResNetBackbone),
    "resnet101": BackboneSpec(ResNetBackbone),
    "mobilenet_v3_large": BackboneSpec(MobileNetV3Backbone),
}


def list_backbones() -> list[str]:
    """Names accepted by ``build_backbone`` / ``build_model(backbone=...)``."""
    return sorted(BACKBONES)


def build_backbone(name: str, weights: str | Path | None = None, pad100: bool = False) -> Backbone:
    """Build a torchvision backbone and tap it.

    Args:
        name: one of ``list_backbones()``.
        weights: ``None`` (random init), a torchvision weight enum name such as
            ``"IMAGENET1K_V1"`` or ``"DEFAULT"`` (downloaded by torchvision where a network
            exists), or the path of a state-dict file in torchvision's format for this network.
        pad100: the Caffe reference geometry (VGG16 family only).

    Raises:
        ValueError: unknown name, or weights that are neither an enum name nor a readable file.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list_backbones()}")
    classifier = torchvision_classifier(name, weights)
    return BACKBONES[name].build(classifier, pad100=pad100)


def torchvision_classifier(name: str, weights: str | Path | None = None) -> nn.Module:
    """torchvision's classifier ``name`` with ``weights`` (enum name, state-dict file or None)."""
    if weights is None or _looks_like_path(weights):
        model = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            state = load_state_dict_file(weights)
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0]
                raise ValueError(f"{weights}: not a torchvision {name} state dict ({first})") from e
        return model
    try:
        enum = torchvision.models.get_model_weights(name)
        chosen = enum[str(weights)] if str(weights) != "DEFAULT" else enum.DEFAULT
    except KeyError:
        options = [w.name for w in torchvision.models.get_model_weights(name)]
        raise ValueError(
            f"weights {weights!r} for {name}: not a file, and not one of {options + ['DEFAULT']}"
        ) from None
    return torchvision.models.get_model(name, weights=chosen)


def _looks_like_path(weights: str | Path) -> bool:
    text = str(weights)
    return isinstance(weights, Path) or "/" in text or "." in text or Path(text).exists()
