"""Freezing a backbone's first layers by stride (train.freeze_backbone_to_stride)."""

import pytest
import torch

import fcnseg
from fcnseg.models.freezing import freeze_backbone_to_stride, layer_strides


def _strides(net):
    return {name: stride for name, _, stride in layer_strides(net.backbone)}


def test_layer_strides_are_the_torchvision_resnets_own():
    strides = _strides(fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3))
    assert strides["body.conv1"] == 2  # the stem's 7x7 convolution, before the max pooling
    assert strides["body.layer1.0.conv1"] == 4
    assert strides["body.layer2.0.conv1"] == 8 and strides["body.layer2.0.downsample.0"] == 8
    assert strides["body.layer3.1.conv2"] == 16 and strides["body.layer4.1.bn2"] == 32
    assert list(strides.values()) == sorted(strides.values())  # forward order


def test_layer_strides_ignore_the_padding_of_pad100():
    # conv1_1 pads by 100 (the Caffe reference): sizes are off by a constant, strides are not
    strides = _strides(fcnseg.build_model("fcn32s", backbone="vgg16", num_classes=3, pad100=True))
    assert strides["features.0"] == 1 and strides["features.5"] == 2  # conv1_1, conv2_1
    assert strides["features.14"] == 4 and strides["features.17"] == 8  # conv3_3, conv4_1
    assert strides["fc6"] == 32


def test_freezing_to_stride_4_fixes_the_stem_and_first_stage_only():
    net = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3)
    frozen = set(freeze_backbone_to_stride(net, 4))
    names = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen <= names
    assert "backbone.body.conv1.weight" in frozen
    assert "backbone.body.layer1.1.bn2.bias" in frozen
    assert not any(".layer2." in n or ".layer3." in n or ".layer4." in n for n in frozen)
    assert not any(n.startswith(("score", "upscore")) for n in frozen)
    # autograd stops at the cut: no gradient reaches a frozen weight, all trained ones get one
    net.train()
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert all(grads[n] is None for n in frozen)
    assert grads["backbone.body.layer2.0.conv1.weight"] is not None


def test_frozen_batchnorm_still_follows_the_data_in_training_mode():
    net = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3)
    freeze_backbone_to_stride(net, 4)
    bn = net.backbone.body.bn1
    before = bn.running_mean.clone()
    net.train()
    net(torch.rand(2, 3, 64, 64) + 5.0)
    assert not torch.equal(bn.running_mean, before)  # train.freeze_bn is the other switch
    assert not bn.weight.requires_grad


def test_freezing_leaves_the_model_mode_and_statistics_as_they_were():
    net = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3).train()
    net.backbone.body.bn1.eval()  # as train.freeze_bn leaves a BatchNorm layer
    stats = [b.clone() for b in net.buffers()]
    freeze_backbone_to_stride(net, 8)
    assert net.training and net.backbone.body.layer1.training
    assert not net.backbone.body.bn1.training
    assert all(torch.equal(a, b) for a, b in zip(stats, net.buffers(), strict=True))


@pytest.mark.parametrize("stride", [0, 1, 3, 6])
def test_a_stride_that_is_not_a_power_of_two_is_refused(stride):
    net = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3)
    with pytest.raises(ValueError, match="power of two"):
        freeze_backbone_to_stride(net, stride)


def test_alexnets_fc6_gets_its_stride_too():
    strides = _strides(fcnseg.build_model("fcn32s", backbone="alexnet", num_classes=3))
    assert strides["features.0"] == 4 and strides["fc6"] == 32
