"""fc6 and fc7 as what they are: matrix products over image patches, forward and backward.

The convolutionalized classifier layers (Section 3.1) are fully connected layers slid over the
pool5 map: fc6 a 7x7x512 -> 4096 "convolution" on a map of a few dozen pixels, fc7 a 1x1
4096 -> 4096. A direct convolution kernel runs them far below the machine's matrix-product
speed; as one inner product over the im2col rows (oneDNN, ``torch.ops.mkldnn``) they run near
it, forward and backward (figures: ``python -m benchmarks.profile_layers``, recorded in
``benchmarks/README.md``). Model definitions hold plain ``nn.Conv2d``;
``fcnseg.accel.for_training`` swaps these in for CPU training.

``Conv2dAsMatmul`` is an ``nn.Conv2d`` (same parameters, same state dict) that takes this path
on the CPU in float32, with its own backward (the two products of the chain rule, then col2im
with ``F.fold``), and the ordinary convolution everywhere else: GPUs, autocast, TorchScript,
tracing and ONNX export, ``torch.compile``. Outputs agree with ``F.conv2d`` to float rounding.
"""

# no `from __future__ import annotations`: TorchScript compiles Conv2dAsMatmul.forward and
# needs real annotation objects (as in fcn.py)
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conv2dAsMatmul", "im2col_rows", "matmul_available", "weight_matrix"]


def matmul_available() -> bool:
    """True where PyTorch was built with oneDNN and exposes its CPU inner product op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def weight_matrix(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A ``(O, C, kh, kw)`` weight as an ``(O, K)`` matrix without a copy where its layout
    allows: columns ``(c, kh, kw)`` for a contiguous weight, ``(kh, kw, c)`` for a channels_last
    one (returned flag ``channels_last_order``). Other layouts are copied once, to the former.
    """
    out_ch = weight.shape[0]
    if weight.is_contiguous():
        return weight.reshape(out_ch, -1), False
    if weight.is_contiguous(memory_format=torch.channels_last):
        return weight.permute(0, 2, 3, 1).reshape(out_ch, -1), True
    return weight.contiguous().reshape(out_ch, -1), False


def im2col_rows(
    x: torch.Tensor,
    kernel: tuple[int, int],
    padding: tuple[int, int],
    stride=(1, 1),
    channels_last_order: bool = False,
) -> tuple[torch.Tensor, int, int]:
    """The rows of a convolution as a matrix product: ``(N*OH*OW, C*kh*kw)``, plus OH, OW.

    Columns are ordered ``(c, kh, kw)`` like ``F.unfold`` and a contiguous weight, or
    ``(kh, kw, c)`` with ``channels_last_order`` (see ``weight_matrix``). For a 1x1 kernel on a
    channels_last map the rows are a view (no copy).
    """
    n, c = x.shape[:2]
    nhwc = x.permute(0, 2, 3, 1)
    (kh, kw), (ph, pw), (sh, sw) = kernel, padding, stride
    if (kh, kw) == (1, 1) and (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
        return nhwc.reshape(-1, c), x.shape[-2], x.shape[-1]
    if ph or pw:
        nhwc = F.pad(nhwc, (0, 0, pw, pw, ph, ph))
    patches = nhwc.unfold(1, kh, sh).unfold(2, kw, sw)  # (N, OH, OW, C, kh, kw)
    oh, ow = patches.shape[1], patches.shape[2]
    if channels_last_order:
        patches = patches.permute(0, 1, 2, 4, 5, 3)  # (N, OH, OW, kh, kw, C)
    return patches.reshape(n * oh * ow, c * kh * kw), oh, ow


def _inner(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``rows @ weight.T + bias`` on oneDNN (``weight`` may be a transposed view)."""
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


class _ConvAsMatmul(torch.autograd.Function):
    """Stride-1 convolution as ``im2col(x) @ W.T``; backward recomputes the rows from ``x``
    (cheaper in memory than keeping them: fc6's rows are 98x its input)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        # returns the (N*OH*OW, O) matrix; the NHWC view of it is made by the caller (a view
        # made inside a Function could not be modified in place, as ReLU(inplace) does)
        w2, order = weight_matrix(weight)
        rows, _, _ = im2col_rows(x, weight.shape[2:], padding, channels_last_order=order)
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return _inner(rows, w2, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        out_ch, _, kh, kw = weight.shape
        g = g.contiguous()  # (N*OH*OW, O)
        w2, order = weight_matrix(weight)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_rows = _inner(g, w2.t(), None)  # (N*OH*OW, K) = g @ W
            if (kh, kw) == (1, 1) and ctx.padding == (0, 0):
                grad_x = grad_rows.view(n, h, w, c).permute(0, 3, 1, 2)
            else:  # col2im: every row's patch added back where it came from
                cols = grad_rows.view(n, -1, c * kh * kw)
                if order:  # F.fold wants (c, kh, kw) columns
                    cols = (
                        cols.view(n, -1, kh, kw, c)
                        .permute(0, 1, 4, 2, 3)
                        .reshape(n, -1, c * kh * kw)
                    )
                grad_x = F.fold(cols.transpose(1, 2), (h, w), (kh, kw), padding=ctx.padding)
        if ctx.needs_input_grad[1]:
            rows, _, _ = im2col_rows(x, (kh, kw), ctx.padding, channels_last_order=order)
            # dW = g.T @ rows, as an inner product of the transposed operands; laid out as
            # the weight is, so the optimiser's update needs no reorder either
            grad = _inner(g.t().contiguous(), rows.t().contiguous(), None)
            if order:
                grad_w = grad.view(out_ch, kh, kw, c).permute(0, 3, 1, 2)
            else:
                grad_w = grad.view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b, None


class Conv2dAsMatmul(nn.Conv2d):
    """``nn.Conv2d`` that runs as a matrix product on the CPU in float32 (see the module
    docstring); the same parameters, state dict and results as ``nn.Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and self._as_matmul(x):
            return self._matmul_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _matmul_forward(self, x: torch.Tensor) -> torch.Tensor:
        (ph, pw), (kh, kw) = self.padding, self.kernel_size
        oh, ow = x.shape[2] + 2 * ph - kh + 1, x.shape[3] + 2 * pw - kw + 1
        out = _ConvAsMatmul.apply(x, self.weight, self.bias, (ph, pw))
        return out.view(x.shape[0], oh, ow, -1).permute(0, 3, 1, 2)  # channels_last strides

    @torch.jit.unused
    def _as_matmul(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == 4
            and self.groups == 1
            and tuple(self.stride) == (1, 1)
            and tuple(self.dilation) == (1, 1)
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and not torch.onnx.is_in_onnx_export()
            and matmul_available()
        )
