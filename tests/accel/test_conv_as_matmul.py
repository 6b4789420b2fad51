"""fc6/fc7 as matrix products: the same outputs and gradients as the convolution they replace."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import count_flops
from fcnseg.accel.conv_as_matmul import Conv2dAsMatmul, matmul_available, weight_matrix
from fcnseg.accel.training import for_training
from fcnseg.models import build_model

pytestmark = pytest.mark.skipif(not matmul_available(), reason="no oneDNN ops in this build")


@pytest.mark.parametrize(
    "in_ch, out_ch, kernel, padding, shape, channels_last, bias",
    [
        (8, 16, 7, 3, (2, 8, 5, 6), False, True),  # fc6, default geometry
        (8, 16, 7, 0, (2, 8, 9, 10), False, True),  # fc6, pad100 geometry
        (8, 16, 7, 3, (2, 8, 5, 6), True, True),  # fc6 of a channels_last model
        (16, 12, 1, 0, (2, 16, 4, 5), True, True),  # fc7 on an NHWC map
        (8, 4, 7, 3, (1, 8, 1, 1), False, False),  # a 1x1 map, no bias
    ],
)
def test_forward_and_gradients_equal_the_convolution(
    in_ch, out_ch, kernel, padding, shape, channels_last, bias
):
    torch.manual_seed(0)
    conv = Conv2dAsMatmul(in_ch, out_ch, kernel, padding=padding, bias=bias)
    if channels_last:  # model.to(memory_format=torch.channels_last) changes the weights too
        conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(*shape, requires_grad=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    grads = []
    for run in (conv, lambda t: F.conv2d(t, conv.weight, conv.bias, padding=padding)):
        x.grad, conv.weight.grad = None, None
        if bias:
            conv.bias.grad = None
        y = F.relu(run(x.contiguous(memory_format=fmt)), inplace=True)  # as VGG does
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        grads.append((y.detach(), x.grad, conv.weight.grad, conv.bias.grad if bias else None))
    for ours, ref in zip(*grads, strict=True):
        if ref is not None:
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_the_convolution_runs_where_the_matmul_cannot():
    conv = Conv2dAsMatmul(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    scripted = torch.jit.script(conv)  # the oneDNN path is Python only, kept out of the graph
    traced = torch.jit.trace(conv, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(x).dtype == torch.bfloat16  # autocast decides the convolution's dtype
    for out in (scripted(x), traced(x)):
        torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)


def test_vgg_fc_layers_are_matmuls_and_flops_are_still_counted():
    plain = build_model("fcn32s", backbone="vgg16", num_classes=2).eval()
    assert type(plain.backbone.fc6) is nn.Conv2d  # the model definition holds plain layers
    keys = {k: v.data_ptr() for k, v in plain.state_dict().items()}
    model = for_training(plain, "cpu")  # the CPU training pass: same Parameters, same keys
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == keys
    fc6, fc7 = model.backbone.fc6, model.backbone.fc7
    assert isinstance(fc6, Conv2dAsMatmul) and isinstance(fc7, Conv2dAsMatmul)
    x = torch.randn(1, 3, 64, 64)  # pool5 2x2: fc6 and fc7 on 4 positions
    expected_fc = 2 * 4 * 4096 * (512 * 49 + 4096)
    without_fc = count_flops(model.backbone.features, x)
    assert count_flops(model, x) - without_fc >= expected_fc


def test_a_channels_last_weight_is_used_in_place():
    conv = Conv2dAsMatmul(8, 16, 7, padding=3).to(memory_format=torch.channels_last)
    matrix, channels_last_order = weight_matrix(conv.weight)
    assert channels_last_order and matrix.data_ptr() == conv.weight.data_ptr()  # no copy
    x = torch.randn(1, 8, 6, 5, requires_grad=True)
    conv(x).sum().backward()
    assert conv.weight.grad.is_contiguous(memory_format=torch.channels_last)  # as the weight
