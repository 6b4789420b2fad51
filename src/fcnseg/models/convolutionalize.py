"""Convolutionalization (Section 3.1): a classifier's fully connected layers become
convolutions with the same weights, so the net takes any input size and returns a class
heatmap instead of one label.

VGG / AlexNet: fc6 -> 7x7 (AlexNet 6x6) conv, fc7 -> 1x1, fc8 -> 1x1, the adaptive pool
removed. On a 224x224 input the heatmap is 1x1 and equals the classifier's logits.

ResNet / MobileNet: the global pool is removed and the classifier applied at every location of
the last feature map (a class activation map). For ResNet the classifier is one linear layer,
so the spatial mean of the heatmap equals the logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VGG, AlexNet, MobileNetV3, ResNet


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel_size: int = 1) -> nn.Conv2d:
    """A convolution computing ``linear`` on every ``kernel_size`` window (weights copied).

    torchvision flattens features as (C, H, W), so the weight reshapes directly.
    """
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size)
    with torch.no_grad():
        conv.weight.copy_(
            linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size)
        )
        conv.bias.copy_(linear.bias)
    return conv


class HeatmapNet(nn.Sequential):
    """A convolutionalized classifier: ``forward(x (N, 3, H, W)) -> scores (N, K, h, w)``.

    ``stride`` is the output stride (32 for every supported classifier).
    """

    stride: int = 32


def convolutionalize(classifier: nn.Module) -> HeatmapNet:
    """Turn a torchvision classifier into a fully convolutional heatmap network.

    Args:
        classifier: a torchvision ``VGG`` (incl. BN), ``AlexNet``, ``ResNet`` or ``MobileNetV3``
            model, with whatever weights it holds (they are kept, not copied).

    Returns:
        ``HeatmapNet`` mapping ``(N, 3, H, W)`` to ``(N, num_classes, h, w)`` class scores.
        VGG needs H, W >= 224 - 31 (fc6 is an unpadded 7x7 conv over pool5), AlexNet >= 195.

    Raises:
        TypeError: for a model family it does not know.
    """
    c = classifier
    if isinstance(c, VGG):
        fc6, fc7, fc8 = c.classifier[0], c.classifier[3], c.classifier[6]
        return HeatmapNet(
            c.features,
            linear_to_conv(fc6, 512, 7),
            nn.ReLU(inplace=True),
            c.classifier[2],  # dropout (identity in eval)
            linear_to_conv(fc7, fc6.out_features),
            nn.ReLU(inplace=True),
            c.classifier[5],
            linear_to_conv(fc8, fc7.out_features),
        )
    if isinstance(c, AlexNet):
        fc6, fc7, fc8 = c.classifier[1], c.classifier[4], c.classifier[6]
        return HeatmapNet(
            c.features,
            c.classifier[0],
            linear_to_conv(fc6, 256, 6),
            nn.ReLU(inplace=True),
            c.classifier[3],
            linear_to_conv(fc7, fc6.out_features),
            nn.ReLU(inplace=True),
            linear_to_conv(fc8, fc7.out_features),
        )
    if isinstance(c, ResNet):
        body = [c.conv1, c.bn1, c.relu, c.maxpool, c.layer1, c.layer2, c.layer3, c.layer4]
        return HeatmapNet(*body, linear_to_conv(c.fc, c.fc.in_features))
    if isinstance(c, MobileNetV3):
        head = []
        for m in c.classifier:
            head.append(linear_to_conv(m, m.in_features) if isinstance(m, nn.Linear) else m)
        return HeatmapNet(c.features, *head)
    raise TypeError(
        f"convolutionalize: unsupported classifier {type(c).__name__}; "
        "expected a torchvision VGG, AlexNet, ResNet or MobileNetV3"
    )
