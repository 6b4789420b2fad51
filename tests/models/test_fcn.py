"""The FCN heads: output size, the reference geometry, alignment, initialisation, gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fcnseg
from fcnseg.models.upsampling import bilinear_kernel

HEADS = ["fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce"]
BACKBONES = fcnseg.list_backbones("fcn8s")  # every registered backbone with all four heads
TIMM_BACKBONES = ["timm:convnext_atto", "timm:resnet18"]  # any timm features_only model


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_scores(model):
    """Score layers start at zero (the paper); give them values so outputs are informative."""
    for name in ("score_fr", "score_pool4", "score_pool3", "score_pool2"):
        layer = getattr(model, name)
        if layer is not None:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.normal_(layer.bias, std=0.01)
    return model


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("head", HEADS)
def test_output_has_the_input_size(head, backbone):
    model = fcnseg.build_model(head, backbone=backbone, num_classes=3).eval()
    with torch.no_grad():
        for h, w in [(37, 61), (1, 1), (32, 33)]:
            assert model(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)


def test_alexnet_fcn32s_output_has_the_input_size():
    model = fcnseg.build_model("fcn32s", backbone="alexnet", num_classes=3).eval()
    with torch.no_grad():
        for h, w in [(37, 61), (224, 224), (101, 35)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)
    with pytest.raises(ValueError, match="smaller than the 35 px"):
        model(torch.randn(1, 3, 20, 20))


@pytest.mark.parametrize("pad100", [False, True])
@pytest.mark.parametrize("size", [(353, 481), (500, 375)])
def test_vgg16_fcn8s_large_odd_sizes(pad100, size):
    model = fcnseg.fcn8s(num_classes=2, backbone="vgg16", pad100=pad100).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 2, *size)


def test_pad100_output_size_for_tiny_inputs():
    model = fcnseg.fcn8s(num_classes=2, pad100=True).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 1, 7)).shape == (1, 2, 1, 7)


def reference_upsample_filt(size):
    """The closed form of the reference (surgery.py upsample_filt), written out in numpy."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    return (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)


@pytest.mark.parametrize("k", [3, 4, 15, 16, 32, 63, 64])
def test_bilinear_kernel_is_the_reference_closed_form(k):
    w = bilinear_kernel(5, k)
    assert w.shape == (5, 5, k, k)
    for c in range(5):  # identity across channels: class c only feeds class c
        np.testing.assert_allclose(w[c, c].numpy(), reference_upsample_filt(k), atol=1e-7)
        off_diagonal = torch.cat([w[c, :c], w[c, c + 1 :]])
        assert off_diagonal.abs().sum() == 0


def test_pad100_has_the_reference_crops_and_kernels():
    m32 = fcnseg.fcn32s(pad100=True)
    m16 = fcnseg.fcn16s(pad100=True)
    m8 = fcnseg.fcn8s(pad100=True)
    assert m32.final_crop == 19 and m32.upscore.deconv.kernel_size == (64, 64)
    assert m16.crops[16] == (0, 5) and m16.final_crop == 27
    assert m16.upscore2.deconv.kernel_size == (4, 4)
    assert m16.upscore.deconv.kernel_size == (32, 32)
    assert m8.crops[16] == (0, 5) and m8.crops[8] == (0, 9) and m8.final_crop == 31
    assert m8.upscore.deconv.kernel_size == (16, 16)
    assert m8.backbone.features["0"].padding == (100, 100)
    assert m8.backbone.fc6.padding == (0, 0)


def test_pad100_fcn8s_vgg16_has_the_reference_parameter_count():
    # VGG16 convs + fc6 + fc7, 1x1 scores, and the three 21x21 deconvs (4, 4, 16), as Caffe.
    vgg_convs = 14_714_688
    fc = 512 * 7 * 7 * 4096 + 4096 + 4096 * 4096 + 4096
    scores = (4096 + 1) * 21 + (512 + 1) * 21 + (256 + 1) * 21
    deconvs = 21 * 21 * (4 * 4 + 4 * 4 + 16 * 16)
    expected = vgg_convs + fc + scores + deconvs
    model = fcnseg.fcn8s(num_classes=21, pad100=True)
    assert sum(p.numel() for p in model.parameters()) == expected == 134_489_759


def symmetrize(model):
    """Make every convolution left-right symmetric: the net then commutes with a horizontal
    flip exactly when its maps are aligned with the input (a shift breaks the symmetry)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    return model


@pytest.mark.parametrize(
    "backbone,width",
    # widths whose every strided layer is symmetric: even for 2x2 pools, odd for 'same' strides
    [("vgg16", 96), ("resnet18", 97), ("mobilenet_v3_large", 97)]
    # timm: grids probed, not derived; 2x2-patch convnext wants even widths, resnet odd
    + [("timm:convnext_atto", 96), ("timm:resnet18", 97)],
)
@pytest.mark.parametrize("head", ["fcn32s", "fcn16s", "fcn8s"])
def test_default_geometry_is_aligned_with_the_input(head, backbone, width):
    if backbone.startswith("timm:"):
        pytest.importorskip("timm")
    model = symmetrize(randomize_scores(fcnseg.build_model(head, backbone=backbone))).eval()
    x = torch.randn(1, 3, 45, width)
    with torch.no_grad():
        out, out_of_flipped = model(x), model(x.flip(-1))
    scale = out.abs().max()
    assert scale > 0
    assert (out_of_flipped - out.flip(-1)).abs().max() < 1e-4 * scale


@pytest.mark.parametrize("backbone", TIMM_BACKBONES)
@pytest.mark.parametrize("head", ["fcn32s", "fcn8s"])
def test_timm_backbones_by_name_give_the_input_size(head, backbone):
    pytest.importorskip("timm")
    model = fcnseg.build_model(head, backbone=backbone, num_classes=3).eval()
    assert sorted(model.backbone.taps) == [4, 8, 16, 32]  # both have a stride-4 stage
    for size in ((64, 64), (77, 101), (33, 40)):
        with torch.no_grad():
            assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


def test_unknown_backbones_are_refused_naming_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'vgg17'.*timm:NAME"):
        fcnseg.build_model("fcn8s", backbone="vgg17")
    assert "alexnet" in fcnseg.list_backbones() and "alexnet" not in BACKBONES


def test_alignment_test_detects_a_one_pixel_shift():
    model = symmetrize(randomize_scores(fcnseg.fcn8s(backbone="resnet18"))).eval()
    model.final_crop += 1  # what a wrong crop offset does
    x = torch.randn(1, 3, 45, 97)
    with torch.no_grad():
        out, out_of_flipped = model(x), model(x.flip(-1))
    assert (out_of_flipped - out.flip(-1)).abs().max() > 1e-3 * out.abs().max()


def test_final_upsampling_is_bilinear_interpolation():
    """VGG maps are half-pixel centred: the fixed x32 upsampling equals
    F.interpolate(..., align_corners=False), borders clamped, no shift."""
    model = randomize_scores(fcnseg.fcn32s(num_classes=4)).eval()
    captured = {}
    model.score_fr.register_forward_hook(lambda m, i, o: captured.update(score=o))
    x = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        out = model(x)
        expected = F.interpolate(captured["score"], scale_factor=32, mode="bilinear")
    torch.testing.assert_close(out, expected[:, :, :70, :100], atol=1e-5, rtol=1e-4)


def test_fixed_upsampling_under_bf16_autocast_is_the_fp32_interpolation_of_its_input():
    # autocast would run the depthwise transposed convolution in bf16 (slow on CPUs); the
    # layer computes in fp32 instead: scores out in fp32, exactly what fp32 gives
    from fcnseg.models.upsampling import BilinearUpsample, Grid

    up = BilinearUpsample(5, 8, 16, Grid(8, 0.0), pad=1)
    x = torch.randn(2, 5, 9, 13).to(torch.bfloat16)
    with torch.no_grad():
        exact = up(x.float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = up(x)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, exact, rtol=0, atol=0)


def test_score_layers_start_at_zero_and_deconvs_at_bilinear():
    model = fcnseg.fcn8s(num_classes=5, backbone="resnet18")
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert getattr(model, name).weight.abs().sum() == 0
    assert torch.equal(model.upscore2.deconv.weight, bilinear_kernel(5, 3))
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 40, 40)).abs().max() == 0


def test_deconvs_frozen_by_default_and_learnable_on_request():
    frozen = fcnseg.fcn8s(num_classes=3, backbone="resnet18")
    learned = fcnseg.fcn8s(num_classes=3, backbone="resnet18", learnable_upsampling=True)
    assert not frozen.upscore2.deconv.weight.requires_grad
    assert learned.upscore2.deconv.weight.requires_grad
    assert learned.upscore_pool4.deconv.weight.requires_grad
    assert not learned.upscore.deconv.weight.requires_grad  # the final one is always fixed


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18", "mobilenet_v3_large"])
def test_gradients_reach_every_trainable_parameter(backbone):
    model = fcnseg.fcn8s(num_classes=3, backbone=backbone, learnable_upsampling=True).train()
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # after the first step the zero-started scores pass gradient through
        opt.zero_grad()
        F.cross_entropy(model(x), target).backward()
        opt.step()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad
               and (p.grad is None or p.grad.abs().sum() == 0)]  # fmt: skip
    assert no_grad == []


def test_atonce_scales_the_skips_before_scoring():
    atonce = randomize_scores(fcnseg.fcn8s_atonce(num_classes=3, backbone="resnet18")).eval()
    plain = fcnseg.fcn8s(num_classes=3, backbone="resnet18").eval()
    plain.load_state_dict(atonce.state_dict())
    with torch.no_grad():  # a scaled input to a 1x1 conv == a scaled weight
        plain.score_pool4.weight.mul_(0.01)
        plain.score_pool3.weight.mul_(0.0001)
        x = torch.randn(1, 3, 48, 48)
        torch.testing.assert_close(atonce(x), plain(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(name="fcn2s"), "unknown model"),
        (dict(name="fcn4s", backbone="vgg16"), "not fcn4s \\(fcn4s fuses a stride-4 tap"),
        (dict(name="fcn8s", backbone="vgg19"), "unknown backbone"),
        (dict(name="fcn8s", backbone="alexnet"), "supports \\['fcn32s'\\] only"),
        (dict(name="fcn32s", backbone="resnet18", pad100=True), "pad100"),
        (dict(name="fcn8s", num_classes=0), "num_classes"),
        (dict(name="fcn8s", num_classes=2, class_names=["a"]), "class names"),
    ],
)
def test_impossible_requests_are_clear_errors(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        fcnseg.build_model(name, **kwargs)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_compiles_with_torchscript(head):
    model = randomize_scores(fcnseg.build_model(head, backbone="resnet18", num_classes=3)).eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        for size in [(45, 67), (64, 33)]:  # sizes are not frozen in the compiled graph
            x = torch.randn(1, 3, *size)
            torch.testing.assert_close(scripted(x), model(x))


FCN4S_BACKBONES = fcnseg.list_backbones("fcn4s")  # those with a stride-4 tap


def test_fcn4s_is_offered_where_a_stride_4_tap_exists():
    assert set(FCN4S_BACKBONES) == set(BACKBONES) - {"vgg16", "vgg16_bn"}
    assert "efficientnet_lite0" in FCN4S_BACKBONES


@pytest.mark.parametrize("backbone", FCN4S_BACKBONES)
def test_fcn4s_output_has_the_input_size(backbone):
    model = fcnseg.build_model("fcn4s", backbone=backbone, num_classes=3).eval()
    assert model.backbone.taps[4].stride == 4
    with torch.no_grad():
        for h, w in [(37, 61), (1, 1), (32, 33)]:
            assert model(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)


@pytest.mark.parametrize(
    "backbone", ["resnet18", "mobilenet_v3_large", "efficientnet_lite0", "timm:resnet18"]
)
def test_fcn4s_geometry_is_aligned_with_the_input(backbone):
    if backbone.startswith(("timm:", "efficientnet")):
        pytest.importorskip("timm")
    model = symmetrize(randomize_scores(fcnseg.build_model("fcn4s", backbone=backbone))).eval()
    x = torch.randn(1, 3, 45, 97)  # odd: every strided layer symmetric ('same' strides)
    with torch.no_grad():
        out, out_of_flipped = model(x), model(x.flip(-1))
    scale = out.abs().max()
    assert scale > 0
    assert (out_of_flipped - out.flip(-1)).abs().max() < 1e-4 * scale


def test_fcn4s_is_fcn8s_plus_a_zero_started_stride_4_skip_that_learns():
    model = fcnseg.build_model("fcn4s", backbone="resnet18", num_classes=3)
    assert not model.score_pool2.weight.any() and not model.score_pool2.bias.any()
    fcn8s = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3)
    extra = set(model.state_dict()) - set(fcn8s.state_dict())
    assert {k.split(".")[0] for k in extra} == {"score_pool2", "upscore_pool3"}
    assert set(fcn8s.state_dict()) < set(model.state_dict())
    randomize_scores(model).train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert model.score_pool2.weight.grad.abs().sum() > 0


def test_fcn4s_compiles_with_torchscript():
    model = randomize_scores(fcnseg.build_model("fcn4s", backbone="resnet18", num_classes=3))
    scripted = torch.jit.script(model.eval())
    with torch.no_grad():
        x = torch.randn(1, 3, 45, 67)
        torch.testing.assert_close(scripted(x), model(x))
