"""Full-FCN weights: fcnseg files, pytorch-fcn (torchfcn) checkpoints, Caffe-converted dicts,
and the staged 32s -> 16s -> 8s initialisation.

torchfcn (github.com/wkentaro/pytorch-fcn, `torchfcn/models/fcn*.py`) and its converted Caffe
models (`fcn8s_from_caffe.pth`) name layers as the Caffe reference: conv1_1 ... conv5_3, fc6,
fc7, score_fr, score_pool4, score_pool3, upscore2, upscore_pool4, and the final
upscore / upscore16 / upscore8. They expect Caffe preprocessing (BGR, 0..255, mean only).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fcnseg.io.files import CheckpointError, load_file

# conv{block}_{i} -> index in torchvision's vgg16().features
VGG16_CONV_INDEX = {
    "conv1_1": 0, "conv1_2": 2,
    "conv2_1": 5, "conv2_2": 7,
    "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
    "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}  # fmt: skip
_REFERENCE_RENAMES = {
    "fc6": "backbone.fc6",
    "fc7": "backbone.fc7",
    "score_fr": "score_fr",
    "score_pool4": "score_pool4",
    "score_pool3": "score_pool3",
    "upscore2": "upscore2.deconv",
    "upscore_pool4": "upscore_pool4.deconv",
    "upscore": "upscore.deconv",
    "upscore16": "upscore.deconv",
    "upscore8": "upscore.deconv",
}


def is_reference_state_dict(state: dict) -> bool:
    """True for torchfcn / Caffe-converted key names (``conv1_1.weight``, ``score_fr.bias``...)."""
    return "conv1_1.weight" in state and "score_fr.weight" in state


def from_reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchfcn / Caffe-converted VGG16 FCN state dict to fcnseg's keys."""
    out = {}
    for key, value in state.items():
        layer, _, param = key.rpartition(".")
        if layer in VGG16_CONV_INDEX:
            out[f"backbone.features.{VGG16_CONV_INDEX[layer]}.{param}"] = value
        elif layer in _REFERENCE_RENAMES:
            out[f"{_REFERENCE_RENAMES[layer]}.{param}"] = value
        else:
            raise CheckpointError(f"unexpected layer {layer!r} in a torchfcn/Caffe state dict")
    return out


def read_fcn_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read full-FCN weights from ``path``.

    Returns ``(state_dict in fcnseg keys, info)`` where ``info`` holds the stored ``config``
    (fcnseg files) or ``{"reference": True}`` (torchfcn / Caffe files).
    """
    obj = load_file(path)
    if isinstance(obj, dict) and obj.get("format") == "fcnseg":
        return obj["model"], {"config": obj["config"]}
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None  # torchfcn ckpt
    if isinstance(state, dict) and is_reference_state_dict(state):
        return from_reference_state_dict(state), {"reference": True}
    raise CheckpointError(
        f"{path}: not FCN weights fcnseg knows (an fcnseg checkpoint, a torchfcn checkpoint, "
        "or a Caffe-converted state dict with conv1_1 ... score_fr keys)"
    )


def check_compatible(path: str | Path, stored: dict, requested: dict) -> None:
    """Refuse weights trained for another num_classes or backbone, naming both."""
    for key in ("num_classes", "backbone"):
        if key in stored and stored[key] != requested[key]:
            raise CheckpointError(
                f"{path}: weights are for {key}={stored[key]!r}, "
                f"but the model asks for {key}={requested[key]!r}"
            )


def transfer_weights(dst: nn.Module, src_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy every parameter/buffer of ``src_state`` whose name and shape match ``dst``.

    This is the staged recipe's initialisation (FCN-16s from FCN-32s, FCN-8s from FCN-16s):
    the backbone and shared score layers are copied, new skip score layers keep their zeros
    and new upsamplers their bilinear weights. Returns the copied names.
    """
    own = dst.state_dict()
    copied = [k for k, v in src_state.items() if k in own and own[k].shape == v.shape]
    dst.load_state_dict({k: src_state[k] for k in copied}, strict=False)
    return copied
