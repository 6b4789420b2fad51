"""The FCN model family: ``build_model(name, backbone=..., num_classes=...)`` over a registry.

Heads: fcn32s, fcn16s, fcn8s, fcn8s_atonce (the paper's) and fcn4s (one skip more).
Backbones: see ``list_backbones()``. Context heads (``context=``): see ``list_contexts()``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from pathlib import Path

from fcnseg.data.palettes import palette_for
from fcnseg.data.transforms import CAFFE_PREPROCESS
from fcnseg.data.transforms import DEFAULT_PREPROCESS as IMAGENET_PREPROCESS
from fcnseg.io.files import CheckpointError
from fcnseg.models.backbones import backbone_archs, build_backbone, list_backbones
from fcnseg.models.context import CONTEXT_HEADS, list_contexts
from fcnseg.models.convolutionalize import convolutionalize
from fcnseg.models.fcn import FCN
from fcnseg.models.pretrained import backbone_preprocess, resolve_weights
from fcnseg.models.weights import check_compatible, read_fcn_weights, transfer_weights

# name -> the FCN arguments that define it (Long et al., Section 4.2 and the reference nets)
MODELS: dict[str, dict] = {
    "fcn32s": {"skips": ()},
    "fcn16s": {"skips": (16,)},
    "fcn8s": {"skips": (16, 8)},
    # voc-fcn8s-atonce/net.py: pool4 scaled by 0.01 and pool3 by 1e-4, trained in one go
    "fcn8s_atonce": {"skips": (16, 8), "skip_scales": {16: 0.01, 8: 0.0001}},
    # ours, beyond the paper: FCN-8s plus a stride-4 skip (backbones with a stride-4 tap)
    "fcn4s": {"skips": (16, 8, 4)},
}


def list_models() -> list[str]:
    """Names accepted by ``build_model``."""
    return list(MODELS)


def build_model(
    name: str,
    *,
    backbone: str = "vgg16",
    num_classes: int = 21,
    pad100: bool = False,
    weights_backbone: str | Path | None = None,
    weights: str | Path | None = None,
    learnable_upsampling: bool = False,
    class_names: list[str] | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    preprocess: dict | None = None,
    context: str | None = None,
) -> FCN:
    """Build an FCN.

    Args:
        name: ``"fcn32s"``, ``"fcn16s"``, ``"fcn8s"``, ``"fcn8s_atonce"`` or ``"fcn4s"``
            (FCN-8s with a stride-4 skip more: not VGG16, whose pool2 is untapped).
        backbone: one of ``list_backbones()`` (``alexnet`` supports fcn32s only), or
            ``"timm:NAME"``: any timm model with ``features_only`` (``timm`` installed).
        num_classes: number of output channels C.
        pad100: the Caffe reference geometry (VGG16 family): conv1_1 padding 100 and the
            reference crops. Default ``False``: aligned maps without the padding (cheaper).
        weights_backbone: ImageNet weights for the backbone, any reference
            :func:`fcnseg.models.pretrained.resolve_weights` takes: a torchvision enum name
            (``"IMAGENET1K_V1"``), a timm tag, ``"DEFAULT"`` (the best weights known for the
            backbone: for ``efficientnet_lite0/1/2`` the installed package's, offline), or a
            local state-dict file. Their input normalisation becomes the model's.
        weights: full-FCN weights: an fcnseg checkpoint, a torchfcn checkpoint or a
            Caffe-converted state dict (``fcn8s_from_caffe.pth``).
        learnable_upsampling: train the in-network 2x deconvolutions (CVPR) instead of
            freezing them at bilinear (reference repository).
        class_names: stored in the config (checkpoints, exports and pictures use them).
        palette: one ``(r, g, b)`` per class, stored beside the class names (every picture
            of this model's labels uses it); default: the weights' stored palette, else
            :func:`fcnseg.data.palette_for` ``(num_classes)``.
        preprocess: pixel normalisation the weights expect; default: the stored one of
            ``weights``, the Caffe convention for a torchfcn/Caffe file, else the backbone
            weights' own (ImageNet mean/std for torchvision, (x - 0.5) / 0.5 for
            EfficientNet-Lite).
        context: ``None`` (default, the paper's FCN), ``"global"`` (ParseNet global average
            pooling + L2 normalisation, concatenated) or ``"pyramid"`` (PSPNet bins 1, 2, 3, 6),
            applied to the stride-32 map before its score layer.

    Returns:
        An ``FCN`` mapping ``(N, 3, H, W)`` images to ``(N, num_classes, H, W)`` logits.

    Raises:
        ValueError: unknown name, backbone or context, an impossible combination (``alexnet``
            with skips, ``pad100`` off VGG16), or weights that do not fit.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")
    if name not in backbone_archs(backbone):
        raise ValueError(
            f"{backbone} supports {list(backbone_archs(backbone))} only, not {name} "
            + (
                "(fcn4s fuses a stride-4 tap, which it does not expose)"
                if name == "fcn4s"
                else "(it has no stride-8/16 taps; the paper uses AlexNet for FCN-32s only)"
            )
        )
    if context is not None and context not in CONTEXT_HEADS:
        raise ValueError(f"unknown context {context!r}; choose one of {list_contexts()} or None")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
    if palette is not None and (
        len(palette) < num_classes or any(len(c) != 3 or not _is_rgb(c) for c in palette)
    ):
        raise ValueError(f"palette: expected {num_classes} (r, g, b) colours with values 0-255")

    state, info = (None, {}) if weights is None else read_fcn_weights(weights)
    entry = resolve_weights(backbone, weights_backbone)
    if preprocess is None:
        stored = info.get("config", {}).get("preprocess")
        own = entry.preprocess if entry is not None else backbone_preprocess(backbone)
        preprocess = stored or (CAFFE_PREPROCESS if info.get("reference") else own)
    config = {
        "arch": name,
        "backbone": backbone,
        "num_classes": num_classes,
        "pad100": pad100,
        "learnable_upsampling": learnable_upsampling,
        "class_names": list(class_names) if class_names else None,
        "palette": _palette_list(palette or info.get("config", {}).get("palette"), num_classes),
        "preprocess": copy.deepcopy(preprocess),
        "context": context,
        "weights_backbone": _reference(weights_backbone),
        "weights": _reference(weights),
        # where the backbone's weights came from (licence, source, accuracy): informational
        "weights_backbone_meta": entry.meta() if entry is not None else None,
    }
    model = FCN(
        build_backbone(backbone, weights=entry, pad100=pad100),
        num_classes,
        learnable_upsampling=learnable_upsampling,
        replicate_pad=not pad100,
        context=context,
        config=config,
        **MODELS[name],
    )
    if state is not None:
        if "config" in info:
            check_compatible(weights, info["config"], config)
            if class_names is None and info["config"].get("class_names"):
                model.config["class_names"] = info["config"]["class_names"]
        _load_full_weights(model, state, weights)
    return model


def _reference(ref: str | Path | None) -> str | None:
    return None if ref is None else str(ref)


#: ``model.config`` keys that describe the model without being build inputs
INFORMATIONAL_KEYS = ("weights_backbone_meta", "trained_precision")


def build_model_from_config(config: dict, *, load_weights: bool = True) -> FCN:
    """The model that ``config`` (a ``model.config``, a checkpoint's, a recipe's ``model``
    section as a dict) describes: ``build_model(config["arch"], **the rest)``.

    ``load_weights=False`` leaves out ``weights_backbone`` and ``weights`` (a checkpoint's own
    state dict replaces them, and the files or packages they name need not exist here).

    Raises:
        ValueError: a key ``build_model`` does not take (named).
    """
    kwargs = {k: v for k, v in config.items() if k not in INFORMATIONAL_KEYS}
    if not load_weights:
        kwargs["weights_backbone"] = kwargs["weights"] = None
    unknown = set(kwargs) - set(MODEL_KEYS) - {"arch"}
    if unknown:
        raise ValueError(f"model config: unknown keys {sorted(unknown)}; known: {MODEL_KEYS}")
    return build_model(kwargs.pop("arch"), **kwargs)


def _is_rgb(colour: Sequence) -> bool:
    return all(isinstance(v, int) and 0 <= v <= 255 for v in colour)


def _palette_list(palette: Sequence[Sequence[int]] | None, num_classes: int) -> list[list[int]]:
    """``num_classes`` colours as plain lists (YAML/JSON-safe); the default palette if None."""
    colours = palette if palette else palette_for(num_classes)
    return [[int(v) for v in c] for c in list(colours)[:num_classes]]


def _load_full_weights(model: FCN, state: dict, path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        shown = (missing + unexpected)[:4]
        raise CheckpointError(
            f"{path}: weights do not match {model.config['arch']}/{model.config['backbone']} "
            f"(missing {len(missing)}, unexpected {len(unexpected)} keys, e.g. {shown})"
        )


def _shorthand(name: str):
    def builder(num_classes: int = 21, backbone: str = "vgg16", **kwargs) -> FCN:
        return build_model(name, backbone=backbone, num_classes=num_classes, **kwargs)

    builder.__name__ = name
    builder.__doc__ = f"``build_model({name!r}, ...)``: see ``build_model`` for the arguments."
    return builder


#: the keyword arguments of ``build_model``: the model's one description (``model.config``,
#: a checkpoint's ``config`` and a recipe's ``model`` section hold these keys and ``arch``)
MODEL_KEYS = tuple(list(inspect.signature(build_model).parameters)[1:])

fcn32s = _shorthand("fcn32s")
fcn16s = _shorthand("fcn16s")
fcn8s = _shorthand("fcn8s")
fcn8s_atonce = _shorthand("fcn8s_atonce")
fcn4s = _shorthand("fcn4s")

__all__ = [
    "CAFFE_PREPROCESS",
    "FCN",
    "IMAGENET_PREPROCESS",
    "build_backbone",
    "build_model",
    "build_model_from_config",
    "convolutionalize",
    "fcn4s",
    "fcn8s",
    "fcn8s_atonce",
    "fcn16s",
    "fcn32s",
    "list_backbones",
    "list_contexts",
    "list_models",
    "transfer_weights",
]
