"""The training counterpart of ``optimize_for_inference``: fc6/fc7 as matrix products on the CPU.

``for_training(model, device)`` swaps each convolution that is really a matrix product (the
convolutionalized fc6/fc7 of VGG and AlexNet: large kernels over many channels) for a
:class:`~fcnseg.accel.conv_as_matmul.Conv2dAsMatmul` holding *the same* Parameter objects, so
the state dict, the optimiser's parameter list and every checkpoint stay as they were. The
swap is in place. Figures: ``python -m benchmarks.profile_layers`` (``benchmarks/README.md``).
"""

from __future__ import annotations

import torch
from torch import nn

from fcnseg.accel.conv_as_matmul import Conv2dAsMatmul, matmul_available

__all__ = ["for_training", "is_fc_conv"]


def is_fc_conv(conv: nn.Module) -> bool:
    """A plain ``nn.Conv2d`` that computes a fully connected layer over windows (fc6: a 7x7 or 6x6
    kernel over >= 64 channels; fc7: 1x1 over >= 1024), stride 1, zero padding."""
    if type(conv) is not nn.Conv2d or conv.groups != 1 or isinstance(conv.padding, str):
        return False
    if conv.padding_mode != "zeros" or tuple(conv.stride) != (1, 1):
        return False
    if tuple(conv.dilation) != (1, 1):
        return False
    kh, kw = conv.kernel_size
    pointwise_fc = (kh, kw) == (1, 1) and conv.in_channels >= 1024
    return pointwise_fc or (kh * kw >= 25 and conv.in_channels >= 64)


def _as_matmul(conv: nn.Conv2d) -> Conv2dAsMatmul:
    """A ``Conv2dAsMatmul`` with ``conv``'s geometry that holds ``conv``'s own Parameters."""
    with torch.device("meta"):  # no allocation: the Parameters are replaced right below
        fast = Conv2dAsMatmul(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            padding=conv.padding,
            bias=conv.bias is not None,
        )
    fast.weight, fast.bias = conv.weight, conv.bias
    fast.train(conv.training)
    return fast


def for_training(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """Let ``model``'s fc-as-convolution layers train as matrix products on the CPU (in place).

    Args:
        model: any module; its ``nn.Conv2d`` children that pass :func:`is_fc_conv` are swapped.
        device: where training runs; on anything but the CPU (or a build without oneDNN's inner
            product) nothing is swapped. Default: the device of the model's parameters.

    Returns:
        ``model`` itself: the same Parameters and state dict. ``Conv2dAsMatmul`` falls back to
        the ordinary convolution under autocast, on other dtypes and devices, when scripted,
        traced, compiled or exported, so the swapped model runs everywhere.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    if torch.device(device).type != "cpu" or not matmul_available():
        return model
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if child is not None and is_fc_conv(child):
                module._modules[name] = _as_matmul(child)
    return model
