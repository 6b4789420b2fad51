"""The pixel grids traced through every registered backbone equal the hand-derived ones."""

import pytest
import torch
from torch import nn

from fcnseg.models.backbones import Backbone, build_backbone, list_backbones
from fcnseg.models.grid_trace import trace_grids
from fcnseg.models.upsampling import Grid

# Derived by hand (the values the backbones carried before the trace):
# - VGG16: each 2x2/2 pool centres pixel i of a stride-s map on s*i + (s-1)/2; 3x3 'same' convs
#   and fc6 (7x7, padding 3) keep it. pad100: conv1_1's 100-pixel padding shifts all by -99,
#   and the unpadded 7x7 fc6 moves stride 32 by +3 pool5 pixels (+96).
# - AlexNet: conv1 (11x11/4, pad 2) at 4i+3; each 3x3/2 pool adds half its window, so pool5 is
#   at 32m+31; the 'same' fc6 pads (2, 3) around a 6x6 kernel: +0.5 pixel of 32.
# - ResNets, MobileNetV3: every strided layer is a 'same'-padded odd kernel: centre 0, at the
#   stride-4 tap (FCN-4s) too.
VGG = {8: Grid(8, 3.5), 16: Grid(16, 7.5), 32: Grid(32, 15.5)}
VGG_PAD100 = {8: Grid(8, 3.5 - 99), 16: Grid(16, 7.5 - 99), 32: Grid(32, 15.5 - 99 + 96)}
CENTRED = {4: Grid(4, 0.0), 8: Grid(8, 0.0), 16: Grid(16, 0.0), 32: Grid(32, 0.0)}  # + FCN-4s's
EXPECTED = {
    ("vgg16", False): VGG,
    ("vgg16", True): VGG_PAD100,
    ("vgg16_bn", False): VGG,
    ("vgg16_bn", True): VGG_PAD100,
    ("alexnet", False): {32: Grid(32, 31.0 + 16.0)},
    ("resnet18", False): CENTRED,
    ("resnet34", False): CENTRED,
    ("resnet50", False): CENTRED,
    ("resnet101", False): CENTRED,
    ("mobilenet_v3_large", False): CENTRED,
    # EfficientNet-Lite (timm's TF ports): TF 'same' padding puts the extra pixel of an even
    # input on the right, so the grid is probed at widths whose every strided input is odd,
    # where the padding is symmetric: centre 0 (a map of an even input sits half a pixel left)
    ("efficientnet_lite0", False): CENTRED,
    ("efficientnet_lite1", False): CENTRED,
    ("efficientnet_lite2", False): CENTRED,
}


def test_every_registered_backbone_has_an_expectation():
    assert {name for name, _ in EXPECTED} == set(list_backbones())


@pytest.mark.parametrize(("name", "pad100"), sorted(EXPECTED))
def test_traced_grids_are_the_hand_derived_ones(name, pad100):
    with torch.device("meta"):  # as load_model builds: no weights materialised
        backbone = build_backbone(name, pad100=pad100)
    assert {s: tap.grid for s, tap in backbone.taps.items()} == EXPECTED[(name, pad100)]


class _Toy(Backbone):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return {32: self.body(x)}


def test_dilation_lopsided_padding_and_stride_compose():
    toy = _Toy(
        nn.ZeroPad2d((3, 0, 3, 0)),  # left/top 3: centre -3
        nn.Conv2d(3, 4, 3, stride=2, dilation=2),  # + (2 * 2 / 2 - 0) = +2, stride 2
        nn.MaxPool2d(3, stride=16, padding=1),  # + 2 * (1 - 1) = 0, stride 32
    )
    before = [p.clone() for p in toy.parameters()]
    toy.train()
    assert trace_grids(toy) == {32: Grid(32, -1.0)}
    assert toy.training  # mode restored, weights untouched (the trace ran on meta copies)
    assert all(torch.equal(a, b) for a, b in zip(before, toy.parameters(), strict=True))


def test_a_resize_the_trace_does_not_know_is_refused():
    toy = _Toy(nn.Upsample(scale_factor=0.5), nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError, match="stride-32 map cannot be traced"):
        trace_grids(toy)


def test_centres_that_differ_between_the_axes_are_refused():
    toy = _Toy(nn.ZeroPad2d((1, 0, 0, 0)), nn.Conv2d(3, 4, 1))
    with pytest.raises(ValueError, match="centres differ"):
        trace_grids(toy)
