"""The peers fcnseg is compared with (benchmark-only; never runtime dependencies of fcnseg).

- pytorch-fcn's ``torchfcn`` FCN32s / FCN16s / FCN8s (the faithful port of the Caffe reference,
  conv1_1 padding 100): ``pip install --no-deps torchfcn``. Its package ``__init__`` (trainer,
  datasets: scikit-image, pytz) is bypassed and its ``fcn`` helper module is replaced by a stub
  in ``sys.modules`` (never in site-packages): see ``_torchfcn_models``.
- torchvision's ``fcn_resnet50(weights=None, weights_backbone=None)``.

Install: ``pip install -e .[bench]`` then ``pip install --no-deps torchfcn``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "PEERS",
    "PeerUnavailable",
    "build_peer",
    "peers_for",
    "torchfcn_model",
    "torchvision_fcn_resnet50",
]


class PeerUnavailable(RuntimeError):
    """A peer's package is not installed (the message says how to install it)."""


TORCHFCN_ARCHS = {"fcn32s": "FCN32s", "fcn16s": "FCN16s", "fcn8s": "FCN8s"}


def _torchfcn_models() -> types.ModuleType:
    """``torchfcn.models`` without ``torchfcn``'s own ``__init__`` and without its ``fcn`` helper.

    The package ``__init__`` imports its trainer and datasets (scikit-image, pytz, ...) and each
    model module does ``import fcn`` only for ``fcn.data.cached_download`` of the Caffe weights.
    Neither is needed for the networks, so we register in ``sys.modules`` (never on disk) a stub
    ``fcn`` whose download refuses, and a bare ``torchfcn`` package object pointing at the
    installed folder.
    """
    if "torchfcn.models" in sys.modules:
        return sys.modules["torchfcn.models"]
    if "torchfcn" not in sys.modules:
        spec = importlib.util.find_spec("torchfcn")
        if spec is None or not spec.submodule_search_locations:
            raise PeerUnavailable("torchfcn is not installed: pip install --no-deps torchfcn")
        package = types.ModuleType("torchfcn")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["torchfcn"] = package
    if "fcn" not in sys.modules:

        def cached_download(*args: Any, **kwargs: Any) -> None:
            raise PeerUnavailable("fcnseg benchmarks use random weights; no torchfcn downloads")

        stub = types.ModuleType("fcn")
        stub.__doc__ = (
            "stub of wkentaro/fcn inserted by benchmarks.peers (data.cached_download only)"
        )
        stub.data = types.SimpleNamespace(cached_download=cached_download)
        sys.modules["fcn"] = stub
    return importlib.import_module("torchfcn.models")


def torchfcn_model(arch: str = "fcn8s", num_classes: int = 21) -> nn.Module:
    """pytorch-fcn's ``FCN32s/16s/8s(n_class=num_classes)``: the Caffe geometry (conv1_1 padding
    100), zero-started scores, bilinear deconvolutions, VGG16 convolutions at PyTorch's init."""
    if arch not in TORCHFCN_ARCHS:
        raise ValueError(f"torchfcn has {list(TORCHFCN_ARCHS)}, not {arch!r}")
    return getattr(_torchfcn_models(), TORCHFCN_ARCHS[arch])(n_class=num_classes)


class _OutOnly(nn.Module):
    """torchvision segmentation models return ``{"out": logits}``; the harness wants a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def torchvision_fcn_resnet50(num_classes: int = 21) -> nn.Module:
    """torchvision's ``fcn_resnet50`` (dilated ResNet-50, FCN head, bilinear upsampling) with
    random weights (``weights=None, weights_backbone=None``), returning the ``"out"`` logits."""
    from torchvision.models.segmentation import fcn_resnet50

    return _OutOnly(fcn_resnet50(weights=None, weights_backbone=None, num_classes=num_classes))


# peer name -> (builder(num_classes) -> module, description)
PEERS: dict[str, tuple[Callable[[int], nn.Module], str]] = {
    "torchfcn-fcn32s": (functools.partial(torchfcn_model, "fcn32s"), "torchfcn FCN32s"),
    "torchfcn-fcn16s": (functools.partial(torchfcn_model, "fcn16s"), "torchfcn FCN16s"),
    "torchfcn-fcn8s": (functools.partial(torchfcn_model, "fcn8s"), "torchfcn FCN8s"),
    "tv-fcn_resnet50": (torchvision_fcn_resnet50, "torchvision fcn_resnet50"),
}


def build_peer(name: str, num_classes: int = 21) -> nn.Module:
    """Build peer ``name`` (a key of ``PEERS``) with random weights, in eval mode.

    Raises:
        ValueError: unknown name.
        PeerUnavailable: its package is not installed.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {list(PEERS)}")
    return PEERS[name][0](num_classes).eval()


def peers_for(arch: str, backbone: str) -> list[str]:
    """The peers an fcnseg configuration is compared with: torchfcn's network of the same head
    for VGG16 (the reference port), and torchvision's fcn_resnet50 always."""
    names = []
    if backbone.startswith("vgg16"):
        names.append("torchfcn-" + ("fcn8s" if arch == "fcn8s_atonce" else arch))
    names.append("tv-fcn_resnet50")
    return names
