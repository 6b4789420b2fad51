"""Bilinear upsampling by transposed convolution, and the grid arithmetic that aligns maps.

The FCN paper upsamples with "backwards strided convolution" initialised to bilinear
interpolation (Section 3.3). The Caffe reference builds the kernel in `surgery.py`
(`upsample_filt`: factor = (k + 1) // 2, centre = factor - 1 for odd k, factor - 0.5 for
even k) and puts it on the diagonal, so each class channel is upsampled independently.

Every feature map in fcnseg carries a *grid*: index i of a stride-s map sits at input
coordinate ``s * i + centre``. Knowing the grids of two maps is enough to compute the
crop that aligns them, which is exactly what Caffe's ``crop`` layer computes from the
layer geometry (offsets 19, 5, 27, 9, 31 in `voc-fcn*/net.py`).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Grid:
    """Where a feature map's pixels sit: index i is at input coordinate ``stride * i + centre``."""

    stride: int
    centre: float


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Bilinear interpolation weights for ``ConvTranspose2d(channels, channels, kernel_size)``.

    Returns a ``(channels, channels, k, k)`` tensor with the separable triangle filter on the
    diagonal (class c only feeds class c) and zeros elsewhere, as the reference `surgery.interp`.
    """
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    tri = 1 - (og - centre).abs() / factor
    filt = (tri[:, None] * tri[None, :]).float()
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    idx = torch.arange(channels)
    weight[idx, idx] = filt
    return weight


def kernel_size_for(factor: int, src: Grid, dst: Grid) -> int:
    """Smallest bilinear kernel whose sample points fall exactly on ``dst``'s pixel centres.

    The deconvolution's output o samples the source at ``(o - centre_k) / factor``; alignment
    with ``dst`` needs ``(dst.centre - src.centre) / dst.stride + centre_k`` to be an integer,
    so the kernel is even (2f, centre f - 0.5) for half-pixel offsets and odd (2f - 1) otherwise.
    """
    offset = (dst.centre - src.centre) / dst.stride
    frac = offset - math.floor(offset)
    if math.isclose(frac, 0.5):
        return 2 * factor
    if math.isclose(frac, 0.0) or math.isclose(frac, 1.0):
        return 2 * factor - 1
    raise ValueError(f"cannot align grids {src} -> {dst} with a bilinear kernel")


class BilinearUpsample(nn.Module):
    """Upsample a score map by an integer ``factor`` with a transposed convolution.

    ``learnable=False`` freezes the bilinear weights (the reference repository's choice);
    ``learnable=True`` lets them train (the CVPR paper's in-network upsampling).
    ``pad`` replicates that many border pixels first, so the result equals bilinear
    interpolation with clamped borders instead of fading to zero (fcnseg's default geometry;
    the Caffe geometry uses ``pad=0``).

    Input ``(N, C, h, w)`` on grid ``src``; output ``(N, C, (h + 2 pad - 1) f + k, ...)`` on
    ``self.out_grid`` (stride ``src.stride // factor``). Cropping to the target is the caller's job.
    """

    def __init__(
        self,
        channels: int,
        factor: int,
        kernel_size: int,
        src: Grid,
        *,
        pad: int = 0,
        learnable: bool = False,
    ) -> None:
        super().__init__()
        if src.stride % factor:
            raise ValueError(f"factor {factor} does not divide stride {src.stride}")
        self.factor, self.pad, self.learnable = factor, pad, learnable
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size, stride=factor, bias=False)
        with torch.no_grad():
            self.deconv.weight.copy_(bilinear_kernel(channels, kernel_size))
        self.deconv.weight.requires_grad_(learnable)
        stride = src.stride // factor
        kernel_centre = (kernel_size - 1) / 2
        self.out_grid = Grid(stride, src.centre - pad * src.stride - stride * kernel_centre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="replicate")
        if self.learnable:
            return self.deconv(x)
        # Frozen weights are diagonal (class c feeds class c only): a depthwise transposed
        # convolution gives the same result with 1/C of the work. Its (C, 1, k, k) kernel is
        # read off the (C, C, k, k) parameter on each call (C*k*k values), so it always follows
        # the weight (state-dict loads, .to(), meta-device builds) without a buffer to refresh.
        # (The diagonal as a strided view of the flattened weight: exporters see its shape.)
        w = self.deconv.weight
        c = w.shape[0]
        depthwise = w.reshape(c * c, 1, w.shape[2], w.shape[3])[:: c + 1]
        if not torch.jit.is_scripting() and self._under_autocast(x):
            return self._fp32(x, depthwise)
        return F.conv_transpose2d(x, depthwise, stride=self.factor, groups=c)

    # (unused by TorchScript, which has no autocast; its stubs need the annotations that
    # ``from __future__ import annotations`` would turn into strings, hence none here)
    @torch.jit.unused
    def _under_autocast(self, x: torch.Tensor) -> bool:
        return torch.is_autocast_enabled(x.device.type)

    @torch.jit.unused
    def _fp32(self, x: torch.Tensor, depthwise: torch.Tensor) -> torch.Tensor:
        # Autocast would run it in bf16, which the CPU has no fast kernel for (20x slower than
        # fp32 there). Its few class channels are cheap in fp32, and what it makes are scores,
        # which the loss and the metrics read in fp32 anyway.
        with torch.autocast(x.device.type, enabled=False):
            out = F.conv_transpose2d(
                x.float(), depthwise.float(), stride=self.factor, groups=depthwise.shape[0]
            )
        return out


def crop_offset(src: Grid, dst: Grid) -> int:
    """Index in ``src`` that sits on ``dst``'s index 0 (both maps at the same stride)."""
    if src.stride != dst.stride:
        raise ValueError(f"grids have different strides: {src} vs {dst}")
    offset = (dst.centre - src.centre) / src.stride
    if not math.isclose(offset, round(offset)):
        raise ValueError(f"grids {src} and {dst} are not aligned by an integer shift")
    return round(offset)
