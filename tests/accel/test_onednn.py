"""The oneDNN inference layers: the same outputs as the eager model, fc6 not copied, taps kept,
and the low-memory variant that streams memory-mapped weights."""

import sys

import pytest
import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

import fcnseg
from fcnseg.accel.onednn import (
    ConvAsMatmul,
    FusedConv2d,
    SamePadConv2d,
    available,
    bf16_available,
    file_backed,
    for_inference,
    release_pages,
    to_onednn,
)
from fcnseg.accel.optimize import optimize_for_inference

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch build has no oneDNN ops")


def _informative(model: nn.Module) -> nn.Module:
    """Non-zero score layers and non-trivial BatchNorm statistics, so every layer matters."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.any():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.01)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize(
    "head, backbone, pad100",
    [
        ("fcn8s", "vgg16", False),
        ("fcn8s", "vgg16", True),
        ("fcn16s", "vgg16_bn", False),
        ("fcn8s", "resnet18", False),
        ("fcn8s", "mobilenet_v3_large", False),
        ("fcn32s", "alexnet", False),
        ("fcn8s", "efficientnet_lite0", False),  # timm blocks: BatchNorm + ReLU6 folded by name
    ],
)
def test_same_outputs_as_the_eager_model_for_any_shape(head, backbone, pad100):
    model = _informative(fcnseg.build_model(head, backbone=backbone, num_classes=5, pad100=pad100))
    fast = to_onednn(model)
    for shape in [(1, 3, 97, 131), (2, 3, 64, 48)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            ref = model(x)
            out = fast(x.contiguous(memory_format=torch.channels_last))
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_a_channels_last_model_gives_the_same_outputs_and_fc6_is_still_shared():
    model = _informative(fcnseg.build_model("fcn8s", backbone="vgg16", num_classes=3))
    x = torch.randn(1, 3, 70, 90)
    with torch.inference_mode():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        fast = to_onednn(model)
        out, eager = fast(x), model(x)
    assert fast.backbone.fc6.weight.data_ptr() == model.backbone.fc6.weight.data_ptr()
    for got in (out, eager):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_vgg_layers_are_rewritten_and_fc6_is_not_copied():
    model = fcnseg.build_model("fcn8s", backbone="vgg16", num_classes=3)
    fast = to_onednn(model)
    fc6, fc7 = fast.backbone.fc6, fast.backbone.fc7
    assert isinstance(fc6, ConvAsMatmul) and isinstance(fc7, ConvAsMatmul)
    assert fc6.weight.data_ptr() == model.backbone.fc6.weight.data_ptr()  # a view, not a copy
    convs = [m for m in fast.backbone.features.values() if isinstance(m, FusedConv2d)]
    assert len(convs) == 13 and all(c.relu for c in convs)  # every 3x3 conv has its ReLU fused
    assert isinstance(model.backbone.fc6, nn.Conv2d)  # the original model is left as it was


def test_timm_blocks_lose_every_batchnorm_and_run_relu6_inside_onednn():
    pytest.importorskip("timm")
    model = fcnseg.build_model("fcn8s", backbone="efficientnet_lite0", num_classes=3)
    fast = to_onednn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    block = fast.backbone.body.blocks[1][0]  # an InvertedResidual: 1x1 -> 3x3 dw -> 1x1
    assert isinstance(block.conv_pw, ConvAsMatmul) and block.conv_pw.act == "relu6"
    assert isinstance(block.conv_pwl, ConvAsMatmul) and block.conv_pwl.act is None
    # its stride-2 depthwise layer pads at run time (TF "same"): one fused call all the same
    assert isinstance(block.conv_dw, SamePadConv2d) and block.conv_dw.act == "relu6"
    assert isinstance(block.bn2, nn.Identity)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # model left as it was


@pytest.mark.parametrize("kernel, stride", [(3, 2), (5, 2), (3, 1), (4, 3)])
@pytest.mark.parametrize("groups", [1, 8])
def test_a_tf_same_convolution_is_one_call_equal_to_pad_then_convolve(kernel, stride, groups):
    timm_layers = pytest.importorskip("timm.layers")
    conv = timm_layers.create_conv2d(8, 16, kernel, stride=stride, padding="same", groups=groups)
    assert type(conv).__name__ == "Conv2dSame" or stride == 1  # "same" at stride 1 is static
    fused = SamePadConv2d(conv, act="relu6")
    # every parity of height and width: the odd pixel of padding at the bottom/right or none
    for h, w in [(20, 30), (21, 31), (20, 31), (7, 6)]:
        x = torch.randn(2, 8, h, w)
        with torch.inference_mode():
            ref = torch.nn.functional.relu6(conv(x))
            out = fused(x.contiguous(memory_format=torch.channels_last))
        assert out.shape == ref.shape
        # the grown kernel adds exact zeros; only the summation order of the n products may
        # differ, which moves a sum by at most n * eps * (largest product)
        n = conv.weight[0].numel()
        bound = n * torch.finfo(torch.float32).eps * x.abs().max() * conv.weight.abs().max()
        torch.testing.assert_close(out, ref, rtol=0, atol=bound.item())
    assert len(fused._layers) <= stride * stride  # one packed kernel per padding seen


def test_a_returned_convolution_keeps_its_pre_activation_output():
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU())
    getter = IntermediateLayerGetter(body, {"0": "pre", "3": "post"}).eval()
    x = torch.randn(1, 3, 9, 9)
    with torch.inference_mode():
        ref, out = getter(x), to_onednn(getter)(x)
    assert (ref["pre"] < 0).any()  # the tap is taken before the ReLU
    for key in ("pre", "post"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-4, atol=1e-5)


def test_optimize_for_inference_uses_onednn_for_any_shape_without_an_example():
    model = _informative(fcnseg.build_model("fcn16s", backbone="resnet18", num_classes=3))
    fast = optimize_for_inference(model)
    assert fast.choice == "onednn" and fast.config == model.config
    x = torch.randn(1, 3, 45, 70)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


def test_predict_runs_the_onednn_copy_on_the_cpu_with_the_same_logits():
    model = _informative(fcnseg.build_model("fcn8s", backbone="vgg16", num_classes=4))
    image = torch.rand(3, 70, 90)
    fast = fcnseg.inference.predict_logits(model, image, device="cpu")[0]
    exact = fcnseg.inference.predict_logits(model, image, device="cpu", fast=False)[0]
    torch.testing.assert_close(fast, exact, rtol=1e-4, atol=1e-5 * exact.abs().max().item())
    assert isinstance(model.backbone.fc6, nn.Conv2d)  # the model itself is left as it was


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and madvise")
def test_streamed_weights_are_mapped_from_the_checkpoint_and_give_the_same_outputs(tmp_path):
    model = _informative(fcnseg.build_model("fcn8s", backbone="vgg16", num_classes=4))
    fcnseg.save_model(model, tmp_path / "m.pt")
    mapped = fcnseg.load_model(tmp_path / "m.pt", mmap=True)
    assert file_backed(mapped.backbone.fc6.weight)  # the file's pages, not a copy
    assert not file_backed(model.backbone.fc6.weight)
    low = to_onednn(mapped, stream_weights=True)
    assert low.backbone.fc6.stream and low.backbone.fc6.chunk < 4096  # fc6 runs in chunks
    x = torch.randn(1, 3, 70, 90)
    with torch.inference_mode():
        ref, out = model(x), low(x)
        again = low(x)  # the dropped pages come back from the file
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
    assert torch.equal(again, out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and madvise")
def test_release_pages_frees_a_mapped_tensor_and_anonymous_weights_are_never_streamed(tmp_path):
    torch.save({"w": torch.randn(4096, 4096)}, tmp_path / "w.pt")  # 64 MiB
    w = torch.load(tmp_path / "w.pt", mmap=True, weights_only=True)["w"]
    total = float(w.sum())  # maps every page in
    before = _rss_mib()
    release_pages(w)
    assert before - _rss_mib() > 48  # most of the 64 MiB left the resident set
    assert float(w.sum()) == total  # and reads back unchanged
    conv = nn.Conv2d(4096, 8, 1)  # anonymous memory: streaming would zero it, so it is off
    assert not file_backed(conv.weight) and not ConvAsMatmul(conv, stream=True).stream
    assert not FusedConv2d(nn.Conv2d(3, 4, 3), stream=True).stream


def test_to_onednn_leaves_a_training_model_in_training_mode():
    model = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3).train()
    fast = to_onednn(model)
    assert model.training and not fast.training
    assert all(not m.training for m in fast.modules())


def test_one_inference_copy_per_loop_and_a_new_one_follows_the_weights(monkeypatch):
    from fcnseg.accel import onednn
    from fcnseg.serve.model_runner import ModelRunner

    model = _informative(fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3))
    built = []
    real = onednn.to_onednn
    monkeypatch.setattr(onednn, "to_onednn", lambda m, **kw: built.append(m) or real(m, **kw))
    images = [torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8) for _ in range(3)]
    fcnseg.predict(model, images, device="cpu")  # predict over many images: built once
    assert len(built) == 1
    runner = ModelRunner(model, "cpu")
    for image in images:  # served request by request: built once, with the runner
        runner([image])
    assert len(built) == 2
    first = for_inference(model, "cpu")
    with torch.no_grad():
        model.score_fr.bias.add_(1.0)  # as an optimiser step would
    second = for_inference(model, "cpu")
    assert second is not first
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        ref = model(x)
        torch.testing.assert_close(second(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


needs_bf16 = pytest.mark.skipif(
    not bf16_available(), reason="oneDNN has no bf16 kernels on this CPU (or under its ISA cap)"
)


@needs_bf16
@pytest.mark.parametrize("backbone", ["vgg16", "resnet18"])
def test_the_bf16_copy_holds_bf16_weights_and_agrees_with_the_fp32_model(backbone):
    from fcnseg.accel.precision import precision_autocast

    model = _informative(fcnseg.build_model("fcn8s", backbone=backbone, num_classes=4))
    fast = to_onednn(model, dtype=torch.bfloat16)
    layers = [m for m in fast.modules() if isinstance(m, FusedConv2d | ConvAsMatmul)]
    assert layers and all(m.dtype == torch.bfloat16 for m in layers)
    assert all(m.weight.dtype == torch.bfloat16 for m in layers if isinstance(m, ConvAsMatmul))
    assert next(model.parameters()).dtype == torch.float32  # the model keeps its fp32 weights
    x = torch.randn(1, 3, 77, 101)
    with torch.inference_mode():
        exact = model(x)[0]
        with precision_autocast("bf16", "cpu"):
            low = fast(x.contiguous(memory_format=torch.channels_last))[0].float()
    # bf16 keeps 8 significant bits: a few 1/256 of the logits' range after a dozen layers,
    # and the same argmax wherever the top two classes are further apart than that
    scale = exact.abs().max()
    assert (low - exact).abs().max() < 0.1 * scale
    top2 = exact.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 0.05 * scale
    assert clear.float().mean() > 0.5 and torch.equal(low.argmax(0)[clear], exact.argmax(0)[clear])


@needs_bf16
def test_a_bf16_tf_same_convolution_agrees_with_fp32_within_bf16_rounding():
    timm_layers = pytest.importorskip("timm.layers")
    conv = timm_layers.create_conv2d(16, 16, 3, stride=2, padding="same", groups=16)
    fused = SamePadConv2d(conv, act="relu6", dtype=torch.bfloat16)
    for h, w in [(20, 30), (21, 31)]:
        x = torch.randn(1, 16, h, w)
        with torch.inference_mode():
            ref = torch.nn.functional.relu6(conv(x))
            out = fused(x.contiguous(memory_format=torch.channels_last))
        assert out.dtype == torch.bfloat16 and out.shape == ref.shape
        # inputs and weights rounded to bf16 (2^-9 relative each, so 2^-8 a product), fp32
        # sums, the output rounded once more: n products' errors plus one rounding
        n = conv.weight[0].numel()
        bound = (n * 2**-8 + 2**-9) * x.abs().max() * conv.weight.abs().max()
        torch.testing.assert_close(out.float(), ref, rtol=2**-8, atol=bound.item())


def test_the_core_runs_the_bf16_copy_where_the_cpu_has_it_and_else_the_autocast_model():
    from fcnseg.inference.core import Predictor

    model = _informative(fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3))
    with Predictor(model, device="cpu", precision="bf16") as core:
        if bf16_available():
            layers = [m for m in core.net.modules() if isinstance(m, FusedConv2d)]
            assert layers and all(m.dtype == torch.bfloat16 for m in layers)
        else:  # no bf16 kernels: the model itself, run under autocast, not an error
            assert core.net is model
            with pytest.raises(RuntimeError, match="no bf16 kernels"):
                to_onednn(model, dtype=torch.bfloat16)
    with Predictor(model, device="cpu", precision="bf16", low_memory=True) as core:
        assert core.net is model
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        to_onednn(model, dtype=torch.float16)
