"""Convolutionalization (Section 3.1): a classifier's fully connected layers become
convolutions with the same weights, so the net takes any input size and returns a class
heatmap instead of one label.

VGG / AlexNet: fc6 -> 7x7 (AlexNet 6x6) conv, fc7 -> 1x1, fc8 -> 1x1, the adaptive pool
removed. On a 224x224 input the heatmap is 1x1 and equals the classifier's logits.

ResNet / MobileNet / EfficientNet(-Lite, timm's): the global pool is removed and the classifier
applied at every location of the last feature map (a class activation map). Where the
classifier is one linear layer after the pool (ResNet, EfficientNet), the spatial mean of the
heatmap equals the logits. EfficientNet's head (``conv_head``, a 1x1 conv with its BatchNorm
and activation) is already convolutional; its ``classifier`` becomes a 1x1 conv.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VGG, AlexNet, MobileNetV3, ResNet


def linear_to_conv(
    linear: nn.Linear, in_channels: int, kernel_size: int = 1, padding: int = 0
) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` computing ``linear`` on every ``kernel_size`` window (weights copied).

    torchvision flattens features as (C, H, W), so the weight reshapes directly.
    """
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(
            linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size)
        )
        conv.bias.copy_(linear.bias)
    return conv


# family -> (indices of fc6, fc7, fc8 in ``classifier``, fc6's input channels and kernel size)
_FC_LAYERS: dict[type, tuple[tuple[int, int, int], int, int]] = {
    VGG: ((0, 3, 6), 512, 7),
    AlexNet: ((1, 4, 6), 256, 6),
}


def fc_as_convs(classifier: nn.Module, fc6_padding: int = 0) -> tuple[nn.Conv2d, ...]:
    """fc6, fc7 and fc8 of a torchvision VGG or AlexNet as convolutions (Section 3.1).

    The one convolutionalization of fcnseg: the FCN backbones take fc6 and fc7 from here, the
    heatmap network all three.

    Args:
        classifier: a torchvision ``VGG`` (incl. BN) or ``AlexNet``.
        fc6_padding: zero padding of fc6 (the FCN backbones' aligned geometry pads VGG's by 3).

    Returns:
        ``(fc6, fc7, fc8)``: fc6 a 7x7 (AlexNet 6x6) conv over pool5's channels, fc7 and fc8
        1x1 convs, all plain ``nn.Conv2d`` holding copies of the linear layers' weights.

    Raises:
        TypeError: another model family.
    """
    family = next((f for f in _FC_LAYERS if isinstance(classifier, f)), None)
    if family is None:
        raise TypeError(f"fc_as_convs: expected a torchvision VGG or AlexNet, got {classifier!r}")
    (i6, i7, i8), in_channels, kernel = _FC_LAYERS[family]
    fc6, fc7, fc8 = (classifier.classifier[i] for i in (i6, i7, i8))
    return (
        linear_to_conv(fc6, in_channels, kernel, padding=fc6_padding),
        linear_to_conv(fc7, fc6.out_features),
        linear_to_conv(fc8, fc7.out_features),
    )


class HeatmapNet(nn.Sequential):
    """A convolutionalized classifier: ``forward(x (N, 3, H, W)) -> scores (N, K, h, w)``.

    ``stride`` is the output stride (32 for every supported classifier).
    """

    stride: int = 32


def convolutionalize(classifier: nn.Module) -> HeatmapNet:
    """Turn a torchvision classifier into a fully convolutional heatmap network.

    Args:
        classifier: a torchvision ``VGG`` (incl. BN), ``AlexNet``, ``ResNet`` or ``MobileNetV3``
            model, or timm's ``EfficientNet`` (the EfficientNet-Lite backbones' classifier), with
            whatever weights it holds (they are kept, not copied).

    Returns:
        ``HeatmapNet`` mapping ``(N, 3, H, W)`` to ``(N, num_classes, h, w)`` class scores.
        VGG needs H, W >= 224 - 31 (fc6 is an unpadded 7x7 conv over pool5), AlexNet >= 195.

    Raises:
        TypeError: for a model family it does not know.
    """
    c = classifier
    if isinstance(c, VGG):
        fc6, fc7, fc8 = fc_as_convs(c)
        drop6, drop7 = c.classifier[2], c.classifier[5]  # dropout (identity in eval)
        return HeatmapNet(
            c.features, fc6, nn.ReLU(inplace=True), drop6, fc7, nn.ReLU(True), drop7, fc8
        )
    if isinstance(c, AlexNet):
        fc6, fc7, fc8 = fc_as_convs(c)
        drop6, drop7 = c.classifier[0], c.classifier[3]
        return HeatmapNet(
            c.features, drop6, fc6, nn.ReLU(inplace=True), drop7, fc7, nn.ReLU(True), fc8
        )
    if isinstance(c, ResNet):
        body = [c.conv1, c.bn1, c.relu, c.maxpool, c.layer1, c.layer2, c.layer3, c.layer4]
        return HeatmapNet(*body, linear_to_conv(c.fc, c.fc.in_features))
    if _is_timm_efficientnet(c):
        body = [c.conv_stem, c.bn1, *c.blocks, c.conv_head, c.bn2]
        return HeatmapNet(*body, linear_to_conv(c.classifier, c.classifier.in_features))
    if isinstance(c, MobileNetV3):
        head = []
        for m in c.classifier:
            head.append(linear_to_conv(m, m.in_features) if isinstance(m, nn.Linear) else m)
        return HeatmapNet(c.features, *head)
    raise TypeError(
        f"convolutionalize: unsupported classifier {type(c).__name__}; "
        "expected a torchvision VGG, AlexNet, ResNet or MobileNetV3, or timm's EfficientNet"
    )


def _is_timm_efficientnet(model: nn.Module) -> bool:
    """timm's ``EfficientNet`` (``tf_efficientnet_lite0`` ...), recognised by its layers so that
    timm need not be imported."""
    names = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "classifier")
    return type(model).__name__ == "EfficientNet" and all(hasattr(model, n) for n in names)
