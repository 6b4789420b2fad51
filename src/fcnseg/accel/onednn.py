"""CPU inference layers that call oneDNN directly, each convolution on the kernel that suits it.

PyTorch's eager CPU convolution reorders weights on every call and runs every shape as a direct
convolution. That is close to the machine's peak for VGG's 3x3 layers in NHWC, and far from
it for the layers that are really matrix products. What this module does instead (per-layer
figures: ``python -m benchmarks.profile_layers``, recorded in ``benchmarks/README.md``):

- fc6, a 7x7 convolution 512 -> 4096 on a small map: im2col + one oneDNN inner product, about
  twice as fast as the direct convolution. The weight is a ``view`` of the convolution's.
- fc7 and every other 1x1 convolution: an inner product on the NHWC rows (no copy at all: an
  NHWC map *is* a ``(pixels, channels)`` matrix).
- 3x3 convolutions: oneDNN with the following ReLU fused in (one pass less over each map), and
  BatchNorm folded into the convolution where one follows the other.
- TensorFlow-"same" convolutions (timm's ``Conv2dSame``, which pads at run time, more at the
  bottom/right than the top/left): one fused oneDNN call with symmetric padding and a kernel
  grown by zero rows/columns at its top/left, so no padded copy of the map is made.

``to_onednn(model)`` returns a copy of ``model`` built this way that *shares* the parameters
it does not transform (no second copy of fc6's weight, the largest tensor), computes the same
outputs within float rounding (1e-5 relative) for any input shape, and runs in NHWC. Inference
only: the oneDNN ops have no autograd. ``available()`` says whether this PyTorch build has them.

``to_onednn(model, dtype=torch.bfloat16)`` is the same copy in bf16 (CPUs with AMX or
AVX512-BF16): each converted layer holds its weight in bf16, pre-packed, takes and gives bf16
NHWC maps, and keeps oneDNN's fp32 accumulation; layers it does not convert run under bf16
autocast (the caller's ``precision_autocast``). Where the fp32 copy shares the weights it uses
as they are, the bf16 copy holds bf16 copies (half their size).

``to_onednn(model, stream_weights=True)`` is the low-memory variant for weights that were
memory-mapped from a checkpoint (``fcnseg.load_model(path, mmap=True)``): a layer's weight is
mapped in while the layer runs and dropped from the process's resident set right after
(``madvise(MADV_DONTNEED)``; the next call maps it again from the page cache), fc6 in chunks of
``chunk_mib``. The process then never holds fc6's weight at once, at a small cost in speed
(figures: ``python -m benchmarks.run --suite cpu``, ``benchmarks/README.md``).
"""

from __future__ import annotations

import copy
import ctypes
import itertools
import mmap
import sys

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models._utils import IntermediateLayerGetter

from fcnseg.accel.conv_as_matmul import (
    Conv2dAsMatmul,
    im2col_rows,
    matmul_available,
    weight_matrix,
)

_NHWC = torch.channels_last

__all__ = [
    "ConvAsMatmul",
    "FusedConv2d",
    "SamePadConv2d",
    "available",
    "bf16_available",
    "file_backed",
    "for_inference",
    "release_pages",
    "to_onednn",
]


def available() -> bool:
    """True where PyTorch was built with oneDNN and exposes its pointwise-fused CPU ops."""
    return matmul_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def bf16_available() -> bool:
    """True where ``to_onednn(model, dtype=torch.bfloat16)`` can run: oneDNN here, and a CPU
    (under its ``ONEDNN_MAX_CPU_ISA`` cap) with the bf16 conversions oneDNN's bf16 kernels
    need (AVX-512 BW/VL/DQ or AVX-NE-CONVERT). Decided at run time, never assumed."""
    if not available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# the activations oneDNN runs fused into a convolution or inner product: (attr, scalars)
_FUSED_ACTS = {None: ("none", []), "relu": ("relu", []), "relu6": ("hardtanh", [0.0, 6.0])}
_ACT_NAMES = {nn.Identity: None, nn.ReLU: "relu", nn.ReLU6: "relu6"}


def file_backed(t: torch.Tensor) -> bool:
    """True when all of ``t``'s memory lies in one mapping of a regular file (Linux), as the
    tensors of ``torch.load(path, mmap=True)`` do; False elsewhere or when unsure."""
    if not sys.platform.startswith("linux") or t.numel() == 0:
        return False
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                low, high = (int(a, 16) for a in fields[0].split("-"))
                if low <= start and end <= high:
                    path = fields[5].strip() if len(fields) == 6 else ""
                    return path.startswith("/") and fields[4] != "0"  # a file with an inode
    except (OSError, ValueError, IndexError):
        return False
    return False


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def release_pages(t: torch.Tensor) -> None:
    """Drop the whole pages of a *file-backed, never written* tensor from the resident set.

    ``madvise(MADV_DONTNEED)``: the next read maps them again from the file (page cache). On
    anonymous memory this would zero the data, so callers check ``file_backed`` first.
    """
    if _LIBC is None:
        return
    page = mmap.PAGESIZE
    start = t.data_ptr()
    end = start + t.numel() * t.element_size()
    low, high = -(-start // page) * page, end // page * page
    if high > low:
        _LIBC.madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), mmap.MADV_DONTNEED)


class FusedConv2d(nn.Module):
    """``Conv2d`` (+ ``ReLU``) as one oneDNN call; input and output NHWC (channels_last)."""

    def __init__(
        self,
        conv: nn.Conv2d,
        act: str | None = None,
        stream: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        weight = conv.weight.detach()
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.act, self.relu = act, act is not None
        self.dtype = dtype
        # stream: keep a file-backed weight where it is and drop its pages after each call
        self.stream = stream and dtype == weight.dtype and file_backed(weight)
        weight = weight.to(dtype)
        self.shape = tuple(weight.shape)
        if not self.stream:
            # A copy in oneDNN's own blocked layout, so no call reorders it (a few percent on
            # VGG16 against plain NHWC weights); 3x3 weights are small. Kept as a plain
            # attribute: an opaque oneDNN tensor has no place in a state dict.
            weight = _packed(weight, self)
        self.weight = weight
        bias = None if conv.bias is None else conv.bias.detach().to(dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.mkldnn._convolution_pointwise(
            x.to(self.dtype).contiguous(memory_format=_NHWC),
            self.weight,
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            *_FUSED_ACTS[self.act],
            "",
        )
        if self.stream:
            release_pages(self.weight)
        return out

    def extra_repr(self) -> str:
        o, i, kh, kw = self.shape
        dtype = "" if self.dtype == torch.float32 else f", dtype={self.dtype}"
        return f"{i * self.groups}, {o}, kernel_size=({kh}, {kw}), act={self.act}{dtype}"


def _packed(weight: torch.Tensor, conv: FusedConv2d) -> torch.Tensor:
    """``weight`` reordered once into the blocked layout oneDNN picks for this convolution (for
    a nominal 64x64 input; other sizes still run, oneDNN reorders when it must), or NHWC where
    this build cannot pre-pack."""
    reorder = getattr(torch.ops.mkldnn, "_reorder_convolution_weight", None)
    if reorder is None:
        return weight.contiguous(memory_format=_NHWC)
    size = [1, weight.shape[1] * conv.groups, 64, 64]
    return reorder(weight.contiguous(), conv.padding, conv.stride, conv.dilation, conv.groups, size)


class SamePadConv2d(nn.Module):
    """A TensorFlow-"same" convolution (+ ReLU / ReLU6) as one oneDNN call, NHWC in and out.

    "Same" pads ``(before, after)`` with ``after - before`` 0 or 1 (the odd pixel goes to the
    bottom/right), depending on the input's size. oneDNN (through PyTorch) pads
    symmetrically, so this pads ``after`` on both sides and grows the kernel by ``after -
    before`` zero rows/columns at its top/left: the extra padded rows meet zero weights, the
    output grid and every product are the ones of ``F.pad`` + ``conv2d``, and no padded copy
    of the map is written. One packed kernel per padding seen (it depends on each side's size
    modulo the stride: at most four at stride 2), built on first use. Dilation 1 only (a grown
    tap moves by the dilation)."""

    def __init__(self, conv: nn.Conv2d, act: str | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        if tuple(conv.dilation) != (1, 1):
            raise ValueError("SamePadConv2d: dilation 1 only")
        self.register_buffer("weight", conv.weight.detach())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach())
        self.stride, self.groups = tuple(conv.stride), conv.groups
        self.act, self.dtype = act, dtype
        self._layers: dict[tuple[int, int, int, int], FusedConv2d] = {}
        from timm.layers import get_same_padding  # the rule timm's Conv2dSame pads by

        self._same_padding = get_same_padding

    def _layer(self, pads: tuple[int, int, int, int]) -> FusedConv2d:
        top, bottom, left, right = pads
        weight = nn.functional.pad(self.weight, (right - left, 0, bottom - top, 0))
        out_ch, in_ch, kh, kw = weight.shape
        conv = nn.Conv2d(
            in_ch * self.groups, out_ch, (kh, kw), self.stride, (bottom, right),
            groups=self.groups, bias=self.bias is not None, device="meta",
        )  # fmt: skip
        conv.weight = nn.Parameter(weight, requires_grad=False)
        if self.bias is not None:
            conv.bias = nn.Parameter(self.bias, requires_grad=False)
        return FusedConv2d(conv, self.act, dtype=self.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: tuple[int, ...] = ()
        for size, kernel, stride in zip(
            x.shape[-2:], self.weight.shape[-2:], self.stride, strict=True
        ):
            total = self._same_padding(size, kernel, stride, 1)
            pads += (total // 2, total - total // 2)  # the odd pixel after, as timm's pad_same
        layer = self._layers.get(pads)
        if layer is None:
            layer = self._layers[pads] = self._layer(pads)
        return layer(x)

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        kernel = f"kernel_size=({kh}, {kw}), stride={self.stride}"
        return f"{i * self.groups}, {o}, {kernel}, padding='same', act={self.act}"


class ConvAsMatmul(nn.Module):
    """A convolution computed as one matrix product: ``rows (pixels, C*kh*kw) @ weight.T``.

    For 1x1 convolutions the rows are the NHWC map itself (a view); for large kernels on small
    maps (fc6) they are the im2col patches. The weight is a ``view`` of the convolution's, so
    nothing is copied. Output: NHWC, ``(N, O, OH, OW)`` with channels_last strides.
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        act: str | None = None,
        stream: bool = False,
        chunk_mib: float = 96,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        # an (O, K) view of the weight in whichever column order its layout gives (a copy in
        # another dtype)
        weight, self.channels_last_order = weight_matrix(conv.weight.detach())
        stream = stream and dtype == weight.dtype
        self.dtype = dtype
        self.register_buffer("weight", weight.to(dtype))
        bias = None if conv.bias is None else conv.bias.detach().to(dtype)
        self.register_buffer("bias", bias)
        self.kernel = tuple(conv.kernel_size)
        self.stride, self.padding = tuple(conv.stride), tuple(conv.padding)
        self.act, self.relu = act, act is not None
        # stream: output channels in chunks of about chunk_mib of weight (fc6: 4 chunks), each
        # chunk's pages dropped after use; smaller chunks mean smaller, less efficient products
        self.stream = stream and file_backed(self.weight)
        row_bytes = self.weight.shape[1] * self.weight.element_size()
        self.chunk = max(1, int(chunk_mib * 2**20) // row_bytes) if self.stream else None

    def _matmul(self, rows: torch.Tensor) -> torch.Tensor:
        attr, scalars = _FUSED_ACTS[self.act]
        if self.chunk is None:
            return torch.ops.mkldnn._linear_pointwise(
                rows, self.weight, self.bias, attr, scalars, ""
            )
        outs = []
        for i in range(0, self.weight.shape[0], self.chunk):
            w = self.weight[i : i + self.chunk]
            b = None if self.bias is None else self.bias[i : i + self.chunk]
            outs.append(torch.ops.mkldnn._linear_pointwise(rows, w, b, attr, scalars, ""))
            release_pages(w)
        return torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, oh, ow = im2col_rows(
            x.to(self.dtype), self.kernel, self.padding, self.stride, self.channels_last_order
        )
        out = self._matmul(rows)
        return out.view(x.shape[0], oh, ow, -1).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        dtype = "" if self.dtype == torch.float32 else f", dtype={self.dtype}"
        return f"{tuple(self.weight.shape)}, kernel_size={self.kernel}, act={self.act}{dtype}"


def _as_matmul(conv: nn.Conv2d) -> bool:
    """1x1 convolutions, and large kernels over many channels (fc6): inner products win there."""
    if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
        return False
    kh, kw = conv.kernel_size
    pointwise = (
        (kh, kw) == (1, 1) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0)
    )
    return pointwise or (kh * kw >= 25 and conv.in_channels >= 64)


def _tf_same(conv: nn.Module) -> bool:
    """timm's ``Conv2dSame`` (pads at run time, TensorFlow's "same"), dilation 1."""
    return (
        type(conv).__name__ == "Conv2dSame"
        and type(conv).__module__.startswith("timm.")
        and tuple(conv.dilation) == (1, 1)
    )


def _convertible(conv: nn.Module) -> bool:
    return _tf_same(conv) or (
        type(conv) in (nn.Conv2d, Conv2dAsMatmul)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _onednn_layer(conv: nn.Conv2d, act: str | None, stream: bool, dtype: torch.dtype) -> nn.Module:
    if _tf_same(conv):
        return SamePadConv2d(conv, act, dtype=dtype)
    layer = ConvAsMatmul if _as_matmul(conv) else FusedConv2d
    return layer(conv, act, stream=stream, dtype=dtype)


def _sequential_children(module: nn.Module) -> list[str] | None:
    """Names of children run one after the other on one tensor, or None for other modules."""
    if isinstance(module, nn.Sequential | IntermediateLayerGetter):
        return list(module._modules)
    return None


def _fuse_in_sequence(module: nn.Module, stream: bool, dtype: torch.dtype) -> None:
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
        # only the plain layer: a subclass (timm's BatchNormAct2d) may hold an activation
        if type(nxt) is nn.BatchNorm2d and not nxt.training and nxt.track_running_stats:
            module._modules[name] = conv = fuse_conv_bn_eval(conv, nxt)
            module._modules[following[0]] = nn.Identity()
            if following[0] in tapped:
                continue
            following = following[1:]
            nxt = module._modules[following[0]] if following else None
        if isinstance(nxt, nn.ReLU):
            module._modules[name] = _onednn_layer(conv, "relu", stream=stream, dtype=dtype)
            module._modules[following[0]] = nn.Identity()


# timm's EfficientNet / MobileNet blocks call their layers by name, not in a Sequential: each
# block type's (convolution, BatchNorm + activation) pairs, where its forward runs one on the other
_TIMM_PAIRS = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "EfficientNetFeatures": (("conv_stem", "bn1"),),
    "MobileNetV3": (("conv_stem", "bn1"),),
    "MobileNetV3Features": (("conv_stem", "bn1"),),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def _fuse_named_pairs(module: nn.Module, stream: bool, dtype: torch.dtype) -> None:
    """Fold each BatchNorm of a timm block into its convolution, with the activation timm's
    ``BatchNormAct2d`` carries fused into the oneDNN call (ReLU, ReLU6), in place; timm's
    ``Conv2dSame`` becomes a ``SamePadConv2d``. A convolution oneDNN does not run (a dilated
    ``Conv2dSame``) keeps its class with the BatchNorm folded in and the activation after it."""
    if not type(module).__module__.startswith("timm."):
        return
    for conv_name, bn_name in _TIMM_PAIRS.get(type(module).__name__, ()):
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            continue
        if bn.training or not bn.track_running_stats:
            continue
        act = getattr(bn, "act", nn.Identity())
        if type(act) not in _ACT_NAMES or not isinstance(
            getattr(bn, "drop", nn.Identity()), nn.Identity | nn.Dropout
        ):
            continue
        fused = fuse_conv_bn_eval(conv, bn)
        if _convertible(fused):
            setattr(module, conv_name, _onednn_layer(fused, _ACT_NAMES[type(act)], stream, dtype))
            setattr(module, bn_name, nn.Identity())
        else:
            setattr(module, conv_name, fused)
            setattr(module, bn_name, act)


def to_onednn(
    model: nn.Module, stream_weights: bool = False, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """A copy of ``model``, in eval mode, whose ``Conv2d`` layers run as oneDNN calls (``model``
    itself is left as it is, training flag included).

    Parameters that are used as they are (every ``ConvAsMatmul`` weight, the upsamplers, ...)
    are shared with ``model``, not copied. Feed it channels_last inputs for the best speed;
    any shape works. ``stream_weights``: weights that are file-backed (``load_model(path,
    mmap=True)``) are dropped from the resident set after each use (see the module docstring);
    others are unaffected. ``dtype=torch.bfloat16``: the converted layers compute in bf16
    (module docstring; no streaming). Raises ``RuntimeError`` where ``available()`` is false,
    ``ValueError`` for a dtype other than float32 and bfloat16.
    """
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"to_onednn computes in float32 or bfloat16, not {dtype}")
    if not available():
        raise RuntimeError("this PyTorch build has no oneDNN pointwise ops (torch.ops.mkldnn)")
    if dtype == torch.bfloat16 and not bf16_available():
        raise RuntimeError(
            "oneDNN has no bf16 kernels on this CPU (they need AVX-512 BW/VL/DQ or AVX-NE-CONVERT)"
        )
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    fast = copy.deepcopy(model, memo=shared).eval()  # new modules, the same tensors
    for module in list(fast.modules()):
        _fuse_in_sequence(module, stream_weights, dtype)
        _fuse_named_pairs(module, stream_weights, dtype)
    for module in list(fast.modules()):
        for name, child in list(module._modules.items()):
            if child is not None and _convertible(child):
                module._modules[name] = _onednn_layer(
                    child, None, stream=stream_weights, dtype=dtype
                )
    return fast.eval()  # the new layers too


def for_inference(
    model: nn.Module,
    device: torch.device | str,
    stream_weights: bool = False,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """What ``predict`` and ``evaluate`` run: ``to_onednn(model, stream_weights, dtype)`` on a
    CPU where it applies (oneDNN in this build, float32 weights), else ``model`` itself.
    ``dtype``: the converted layers' (``torch.bfloat16`` for ``precision="bf16"``; where
    ``bf16_available()`` is false, ``model`` itself, which the caller runs under autocast).

    Every call builds a new copy from the model's current weights; nothing is cached. The
    copy is held by whoever runs the loop over many images, for as long as the loop runs:
    one ``predict`` / ``iter_predict`` call builds one for all its images, one ``evaluate``
    call one for the whole dataset, and the server's
    :class:`~fcnseg.serve.model_runner.ModelRunner` one for its lifetime (its model does not
    change). A caller that labels images one call at a time can hold the copy itself and
    pass it with ``fast=False``. The copy shares the weights it uses as they are, but
    folded BatchNorm and packed 3x3 weights are copies, so after an optimiser step, a
    ``load_state_dict`` or a ``.to()`` a new call is what reflects the current weights.
    """
    if torch.device(device).type != "cpu" or not available():
        return model
    if dtype == torch.bfloat16 and not bf16_available():  # the caller's autocast runs it
        return model
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        return model
    return to_onednn(model, stream_weights=stream_weights, dtype=dtype)
