"""CPU inference layers that call oneDNN directly, each convolution on the kernel that suits it.

PyTorch's eager CPU convolution reorders weights on every call and runs every shape as a direct
convolution. That is close to the machine's peak for VGG's 3x3 layers in NHWC, and far from
it for the layers that are really matrix products. Measured on the project's 2-core AVX-512
machine (fp32, batch 1, 500x500 input; ``benchmarks/README.md``):

- fc6, a 7x7 convolution 512 -> 4096 on a 16x16 map: 231 ms as a direct convolution, 113 ms as
  im2col (3.5 ms) + oneDNN inner product. The weight is a ``view`` of the convolution's.
- fc7 and every other 1x1 convolution: 42 -> 19 ms as an inner product on the NHWC rows
  (no copy at all: an NHWC map *is* a ``(pixels, channels)`` matrix).
- 3x3 convolutions: oneDNN with the following ReLU fused in (one pass less over each map), and
  BatchNorm folded into the convolution where one follows the other.

``to_onednn(model)`` returns a copy of ``model`` built this way that *shares* the parameters
it does not transform (no second copy of fc6's 392 MiB), computes the same outputs within
float rounding (1e-5 relative) for any input shape, and runs in NHWC. Inference only: the
oneDNN ops have no autograd. ``available()`` says whether this PyTorch build has them.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models._utils import IntermediateLayerGetter

__all__ = ["ConvAsMatmul", "FusedConv2d", "available", "for_inference", "to_onednn"]


def available() -> bool:
    """True where PyTorch was built with oneDNN and exposes its pointwise-fused CPU ops."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_linear_pointwise")
        and hasattr(ops, "_convolution_pointwise")
    )


def _attr(relu: bool) -> str:
    return "relu" if relu else "none"


class FusedConv2d(nn.Module):
    """``Conv2d`` (+ ``ReLU``) as one oneDNN call; input and output NHWC (channels_last)."""

    def __init__(self, conv: nn.Conv2d, relu: bool = False) -> None:
        super().__init__()
        # NHWC weights: oneDNN's preferred plain layout for NHWC maps (no per-call reorder cost
        # beyond its blocked packing); a copy, but 3x3 weights are small.
        self.register_buffer("weight", conv.weight.detach().contiguous(memory_format=_NHWC))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach())
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x.contiguous(memory_format=_NHWC),
            self.weight,
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            _attr(self.relu),
            [],
            "",
        )

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), relu={self.relu}"


class ConvAsMatmul(nn.Module):
    """A convolution computed as one matrix product: ``rows (pixels, C*kh*kw) @ weight.T``.

    For 1x1 convolutions the rows are the NHWC map itself (a view); for large kernels on small
    maps (fc6) they are the im2col patches. The weight is a ``view`` of the convolution's, so
    nothing is copied. Output: NHWC, ``(N, O, OH, OW)`` with channels_last strides.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False) -> None:
        super().__init__()
        w = conv.weight.detach()
        if not w.is_contiguous():
            w = w.contiguous()  # the (O, C, kh, kw) order that the patches below follow
        self.register_buffer("weight", w.view(w.shape[0], -1))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach())
        self.kernel = tuple(conv.kernel_size)
        self.stride, self.padding = tuple(conv.stride), tuple(conv.padding)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, _, _ = x.shape
        nhwc = x.permute(0, 2, 3, 1)  # a view when x is channels_last
        if self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0):
            oh, ow = x.shape[-2:]
            rows = nhwc.reshape(-1, c)
        else:
            (ph, pw), (kh, kw), (sh, sw) = self.padding, self.kernel, self.stride
            if ph or pw:
                nhwc = F.pad(nhwc, (0, 0, pw, pw, ph, ph))
            patches = nhwc.unfold(1, kh, sh).unfold(2, kw, sw)  # (N, OH, OW, C, kh, kw)
            oh, ow = patches.shape[1], patches.shape[2]
            rows = patches.reshape(n * oh * ow, c * kh * kw)
        out = torch.ops.mkldnn._linear_pointwise(
            rows, self.weight, self.bias, _attr(self.relu), [], ""
        )
        return out.view(n, oh, ow, -1).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, kernel_size={self.kernel}, relu={self.relu}"


_NHWC = torch.channels_last


def _as_matmul(conv: nn.Conv2d) -> bool:
    """1x1 convolutions, and large kernels over many channels (fc6): inner products win there."""
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1) or isinstance(conv.padding, str):
        return False
    kh, kw = conv.kernel_size
    pointwise = (
        (kh, kw) == (1, 1) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0)
    )
    return pointwise or (kh * kw >= 25 and conv.in_channels >= 64)


def _convertible(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _onednn_layer(conv: nn.Conv2d, relu: bool) -> nn.Module:
    return ConvAsMatmul(conv, relu) if _as_matmul(conv) else FusedConv2d(conv, relu)


def _sequential_children(module: nn.Module) -> list[str] | None:
    """Names of children run one after the other on one tensor, or None for other modules."""
    if isinstance(module, nn.Sequential | IntermediateLayerGetter):
        return list(module._modules)
    return None


def _fuse_in_sequence(module: nn.Module) -> None:
    """Fold BatchNorm into the preceding convolution and fuse a following ReLU, in place."""
    names = _sequential_children(module)
    if names is None:
        return
    # An IntermediateLayerGetter returns some children's outputs: a value that is returned
    # must stay what it was, so only untapped outputs are folded or fused away.
    tapped = set(getattr(module, "return_layers", {}))
    for i, name in enumerate(names):
        conv = module._modules[name]
        if not _convertible(conv) or name in tapped:
            continue
        following = names[i + 1 : i + 3]
        nxt = module._modules[following[0]] if following else None
        if isinstance(nxt, nn.BatchNorm2d) and not nxt.training and nxt.track_running_stats:
            module._modules[name] = conv = fuse_conv_bn_eval(conv, nxt)
            module._modules[following[0]] = nn.Identity()
            if following[0] in tapped:
                continue
            following = following[1:]
            nxt = module._modules[following[0]] if following else None
        if isinstance(nxt, nn.ReLU):
            module._modules[name] = _onednn_layer(conv, relu=True)
            module._modules[following[0]] = nn.Identity()


def to_onednn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose ``Conv2d`` layers run as oneDNN calls.

    Parameters that are used as they are (every ``ConvAsMatmul`` weight, the upsamplers, ...)
    are shared with ``model``, not copied. Feed it channels_last inputs for the best speed;
    any shape works. Raises ``RuntimeError`` where ``available()`` is false.
    """
    if not available():
        raise RuntimeError("this PyTorch build has no oneDNN pointwise ops (torch.ops.mkldnn)")
    model.eval()
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    fast = copy.deepcopy(model, memo=shared)  # new modules, the same tensors
    for module in list(fast.modules()):
        _fuse_in_sequence(module)
    for module in list(fast.modules()):
        for name, child in list(module._modules.items()):
            if child is not None and _convertible(child):
                module._modules[name] = _onednn_layer(child, relu=False)
    return fast.eval()


def for_inference(model: nn.Module, device: torch.device | str) -> nn.Module:
    """What ``predict`` and ``evaluate`` run: ``to_onednn(model)`` on a CPU where it applies
    (oneDNN in this build, float32 weights), else ``model`` itself.

    The copy shares the large weights with ``model`` and is cheap to make (copies of the 3x3
    kernels only), so it is rebuilt for every call and always reflects the current weights.
    """
    if torch.device(device).type != "cpu" or not available():
        return model
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        return model
    return to_onednn(model)
