"""Weights: torchvision backbones from local files, reference (torchfcn / Caffe) FCN weights,
fcnseg checkpoints, staged initialisation, and refusing unsafe or mismatched files."""

import pickle

import pytest
import torch
import torchvision
from torch import nn

import fcnseg
from fcnseg.io.files import CheckpointError
from fcnseg.models import CAFFE_PREPROCESS, IMAGENET_PREPROCESS, transfer_weights

from .reference_fcn import ReferenceFCN


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_torchvision_vgg16_state_dict_reproduces_its_features_bit_for_bit(tmp_path):
    tv = torchvision.models.vgg16().eval()
    torch.save(tv.state_dict(), tmp_path / "vgg16.pth")
    model = fcnseg.fcn8s(num_classes=3, weights_backbone=tmp_path / "vgg16.pth").eval()
    x = torch.randn(1, 3, 64, 96)  # a multiple of 32: ceil-mode pools equal torchvision's
    with torch.no_grad():
        taps = model.backbone(x)
        assert torch.equal(taps[8], tv.features[:17](x))  # pool3
        assert torch.equal(taps[16], tv.features[:24](x))  # pool4
    assert torch.equal(model.backbone.fc6.weight.flatten(1), tv.classifier[0].weight)
    assert torch.equal(model.backbone.fc7.weight.flatten(1), tv.classifier[3].weight)
    assert model.preprocess == IMAGENET_PREPROCESS


def test_torchvision_resnet_state_dict_loads_into_the_backbone(tmp_path):
    tv = torchvision.models.resnet18().eval()
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    model = fcnseg.fcn32s(num_classes=2, backbone="resnet18", weights_backbone=tmp_path / "r18.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.eval()
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        expected = tv.layer4(tv.layer3(tv.layer2(tv.layer1(h))))
        assert torch.equal(model.backbone(x)[32], expected)


def test_backbone_weights_errors_name_the_problem(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="r18.pth: not a torchvision vgg16 state dict"):
        fcnseg.fcn8s(weights_backbone=tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="not a file, and not one of .*IMAGENET1K_V1"):
        fcnseg.fcn8s(weights_backbone="IMAGENET9K")
    with pytest.raises(CheckpointError, match="missing.pth: no such file"):
        fcnseg.fcn8s(weights_backbone=tmp_path / "missing.pth")


def reference_model(arch, atonce=False):
    ref = ReferenceFCN(arch, n_class=21, atonce=atonce).eval()
    with torch.no_grad():  # bilinear deconvs, and informative (non-zero) score layers
        for name, m in ref.named_modules():
            if isinstance(m, nn.ConvTranspose2d):
                m.weight.copy_(fcnseg.models.upsampling.bilinear_kernel(21, m.kernel_size[0]))
            elif name.startswith("score"):
                nn.init.normal_(m.weight, std=0.01)
            elif isinstance(m, nn.Conv2d):  # keep activations in a sane range over 15 layers
                nn.init.normal_(m.weight, std=(2 / (m.in_channels * m.kernel_size[0] ** 2)) ** 0.5)
    return ref


@pytest.mark.parametrize(
    "arch,atonce", [("fcn32s", False), ("fcn16s", False), ("fcn8s", False), ("fcn8s", True)]
)
def test_reference_weights_give_the_reference_outputs(tmp_path, arch, atonce):
    """A torchfcn / Caffe-converted state dict loads into fcnseg (pad100) with equal outputs."""
    ref = reference_model(arch, atonce)
    torch.save(ref.state_dict(), tmp_path / "fcn_from_caffe.pth")
    name = "fcn8s_atonce" if atonce else arch
    model = fcnseg.build_model(name, pad100=True, weights=tmp_path / "fcn_from_caffe.pth").eval()
    assert model.preprocess == CAFFE_PREPROCESS  # BGR, 0..255, mean subtracted
    x = torch.randn(1, 3, 61, 77) * 50
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert expected.abs().max() > 0
    torch.testing.assert_close(got, expected, atol=1e-4 * expected.abs().max(), rtol=1e-4)


def test_torchfcn_trainer_checkpoint_is_accepted(tmp_path):
    ref = reference_model("fcn32s")
    torch.save({"epoch": 3, "iteration": 100, "arch": "FCN32s",
                "model_state_dict": ref.state_dict(), "best_mean_iu": 0.6},
               tmp_path / "checkpoint.pth.tar")  # fmt: skip
    model = fcnseg.fcn32s(pad100=True, weights=tmp_path / "checkpoint.pth.tar")
    assert torch.equal(model.score_fr.weight, ref.score_fr.weight)


def test_save_and_load_model_round_trip(tmp_path):
    model = fcnseg.fcn16s(num_classes=4, backbone="resnet18", class_names=list("abcd"))
    nn.init.normal_(model.score_fr.weight)
    fcnseg.save_model(model, tmp_path / "m.pt")
    loaded = fcnseg.load_model(tmp_path / "m.pt")
    assert loaded.config == model.config and loaded.class_names == list("abcd")
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize(
    "head, backbone",
    [("fcn8s", "vgg16_bn"), ("fcn8s", "mobilenet_v3_large"), ("fcn32s", "alexnet")],
)
def test_load_model_assigns_every_tensor_from_the_file(head, backbone, mmap, tmp_path):
    # load_model builds on the meta device: a tensor it failed to assign would stay meta
    model = fcnseg.build_model(head, backbone=backbone, num_classes=3).eval()
    nn.init.normal_(model.score_fr.weight)
    fcnseg.save_model(model, tmp_path / "m.pt")
    loaded = fcnseg.load_model(tmp_path / "m.pt", mmap=mmap)
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert not any(t.is_meta for t in tensors)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_full_weights_from_an_fcnseg_file_and_mismatch_errors(tmp_path):
    model = fcnseg.fcn8s(num_classes=4, backbone="resnet18")
    fcnseg.save_model(model, tmp_path / "m.pt")
    again = fcnseg.fcn8s(num_classes=4, backbone="resnet18", weights=tmp_path / "m.pt")
    assert torch.equal(again.backbone.body.conv1.weight, model.backbone.body.conv1.weight)
    with pytest.raises(CheckpointError, match="num_classes=4.*num_classes=5"):
        fcnseg.fcn8s(num_classes=5, backbone="resnet18", weights=tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="backbone='resnet18'.*backbone='resnet34'"):
        fcnseg.fcn8s(num_classes=4, backbone="resnet34", weights=tmp_path / "m.pt")


class _Exploit:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "fcnseg", "config": {}, "model": _Exploit()}, f)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        fcnseg.load_model(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    fcnseg.save_model(fcnseg.fcn32s(num_classes=2, backbone="resnet18"), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        fcnseg.load_model(tmp_path / "cut.pt")


def test_staged_init_copies_shared_layers_and_keeps_new_skips_at_zero():
    fcn32 = fcnseg.fcn32s(num_classes=3, backbone="resnet18")
    nn.init.normal_(fcn32.score_fr.weight)
    fcn16 = fcnseg.fcn16s(num_classes=3, backbone="resnet18")
    copied = transfer_weights(fcn16, fcn32.state_dict())
    assert "score_fr.weight" in copied and "backbone.body.conv1.weight" in copied
    assert torch.equal(fcn16.score_fr.weight, fcn32.score_fr.weight)
    assert fcn16.score_pool4.weight.abs().sum() == 0
    assert not any(k.startswith("upscore.") for k in copied)  # x32 vs x16 kernels differ
