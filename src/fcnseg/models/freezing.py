"""Freeze a backbone's first layers, by the stride they compute at.

Fine-tuning frameworks leave the first layers of an ImageNet backbone untrained (detectron2's
``FREEZE_AT``, mmsegmentation's ``frozen_stages``): they compute generic edges and colours,
and at full resolution their backward pass is the most expensive part of a step. Stage
numbers differ from one backbone family to the next; strides do not, so fcnseg names the cut
by stride: every layer up to the first one whose output is coarser than ``stride`` keeps its
weights, and autograd stops there.

Only the weights are fixed. BatchNorm layers in the frozen part still re-estimate their
statistics in training mode (``train.freeze_bn`` is the separate switch for those).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["freeze_backbone_to_stride", "layer_strides"]

# two probe sizes 64 apart (a multiple of every stride a backbone has): the difference of the
# output widths cancels any constant padding (pad100), so each layer's stride is exact; the
# smaller still leaves AlexNet's fc6 (a 6x6 convolution) a map to run on
_PROBE_SIZES = (224, 288)


def layer_strides(backbone: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """``(name, module, stride)`` for each module of ``backbone`` that holds parameters itself,
    in the order the forward pass first runs them (modules it never runs are left out).

    Found by two forward passes on zero images in eval mode without gradients, so BatchNorm
    statistics and the model's mode are left as they were.
    """
    holders = {
        m: name
        for name, m in backbone.named_modules()
        if next(m.parameters(recurse=False), None) is not None
    }
    widths: list[dict[nn.Module, int]] = []  # per probe pass: module -> its first output's width

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            widths[-1].setdefault(module, int(output.shape[-1]))

    param = next(backbone.parameters())
    modes = {m: m.training for m in backbone.modules()}
    hooks = [m.register_forward_hook(record) for m in holders]
    try:
        backbone.eval()
        with torch.no_grad():
            for size in _PROBE_SIZES:
                widths.append({})
                backbone(torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype))
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.train(training)
    small, large = widths
    span = _PROBE_SIZES[1] - _PROBE_SIZES[0]
    # dict order is the order of first calls; a layer whose width does not grow (a global
    # pooling's) has no stride: 0
    return [
        (holders[m], m, span // (large[m] - small[m]) if large[m] > small[m] else 0) for m in small
    ]


def freeze_backbone_to_stride(model: nn.Module, stride: int) -> list[str]:
    """Fix the weights of ``model.backbone``'s layers that run before its first output
    coarser than ``stride`` (``requires_grad=False``: the optimiser skips them and the
    backward pass stops at the first trained layer). ``stride`` 4 is detectron2's default
    (stem and first stage); the backbone's deepest stride freezes all of it.

    Returns the names of the frozen parameters (``backbone.``-prefixed, as in the model).

    Raises:
        ValueError: ``stride`` is not a power of two >= 2, or no layer computes at it.
    """
    if stride < 2 or stride & (stride - 1):
        raise ValueError(f"freeze_backbone_to_stride must be a power of two >= 2, got {stride}")
    frozen: list[str] = []
    for name, module, layer_stride in layer_strides(model.backbone):
        if layer_stride == 0 or layer_stride > stride:
            break
        for param_name, p in module.named_parameters(recurse=False):
            p.requires_grad_(False)
            frozen.append(f"backbone.{name}.{param_name}" if name else f"backbone.{param_name}")
    if not frozen:
        raise ValueError(f"freeze_backbone_to_stride={stride}: no backbone layer computes at it")
    return frozen
