"""Convolutionalization (Section 3.1): same weights, any input size, heatmap out."""

import pytest
import torch
import torchvision
from torch import nn

import fcnseg


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_224_heatmap_is_1x1_and_equals_the_logits(name):
    classifier = torchvision.models.get_model(name).eval()
    heat = fcnseg.convolutionalize(classifier).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits, scores = classifier(x), heat(x)
    assert scores.shape == (2, 1000, 1, 1)
    assert (scores[:, :, 0, 0] - logits).abs().max() < 1e-4


def test_vgg16_bn_heatmap_equals_the_logits():
    classifier = torchvision.models.vgg16_bn().eval()
    heat = fcnseg.convolutionalize(classifier).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (heat(x)[:, :, 0, 0] - classifier(x)).abs().max() < 1e-4


def test_larger_input_gives_a_larger_heatmap():
    heat = fcnseg.convolutionalize(torchvision.models.vgg16()).eval()
    with torch.no_grad():
        scores = heat(torch.randn(1, 3, 500, 500))
    # pool5 of 500 px is 15x15 (floor mode); fc6 7x7 unpadded -> 9x9
    assert scores.shape == (1, 1000, 9, 9)


def test_resnet_heatmap_mean_equals_the_logits():
    classifier = torchvision.models.resnet18().eval()
    heat = fcnseg.convolutionalize(classifier).eval()
    x = torch.randn(2, 3, 256, 320)
    with torch.no_grad():
        scores = heat(x)
        logits = classifier(x)
    assert scores.shape == (2, 1000, 8, 10)
    assert (scores.mean(dim=(2, 3)) - logits).abs().max() < 1e-4


def test_mobilenet_heatmap_applies_the_classifier_at_every_location():
    classifier = torchvision.models.mobilenet_v3_large().eval()
    heat = fcnseg.convolutionalize(classifier).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        scores = heat(x)
        feats = classifier.features(x)
        at_00 = classifier.classifier(feats[:, :, 0, 0])
    assert scores.shape == (1, 1000, 7, 7)
    assert (scores[:, :, 0, 0] - at_00).abs().max() < 1e-4


def test_weights_are_kept_not_reinitialised():
    classifier = torchvision.models.vgg16()
    heat = fcnseg.convolutionalize(classifier)
    fc6 = [m for m in heat if isinstance(m, nn.Conv2d) and m.kernel_size == (7, 7)][0]
    assert torch.equal(fc6.weight.flatten(1), classifier.classifier[0].weight)


def test_unknown_classifier_is_a_clear_error():
    with pytest.raises(TypeError, match="unsupported classifier"):
        fcnseg.convolutionalize(nn.Linear(3, 3))
