"""Context heads: image-level information fused into the FCN's stride-32 map before scoring.

The FCN paper's receptive fields are large but its predictions stay local; ParseNet and
PSPNet add what the whole image (or a few large regions of it) looks like:

- ``"global"``: :class:`GlobalContext` (Liu, Rabinovich, Berg, "ParseNet: Looking Wider to
  See Better", 2015). The map is average-pooled to one vector, both the vector and every
  local feature are L2-normalised with a learned per-channel scale (ParseNet Eqs. 2-4), the
  vector is unpooled (copied) back to the map's size and concatenated with the local features.
- ``"pyramid"``: :class:`PyramidContext` (Zhao et al., "Pyramid Scene Parsing Network",
  CVPR 2017): average pooling into 1x1, 2x2, 3x3 and 6x6 bins, a 1x1 convolution per level
  reducing to C/4 channels, bilinear upsampling back to the map's size, concatenated with it.

Both *concatenate*, as the papers do, so the module outputs ``out_channels = 2 C`` and the FCN's
``score_fr`` takes 2C inputs. (A 1x1 fusion back to C would keep ``score_fr`` unchanged but
costs 2C*C weights: 33 M for VGG16's 4096-channel fc7, a quarter of the whole net.)

Export: the modules use only ``ReduceMean``, ``Expand``, ``MatMul`` and elementwise ops in
ONNX, never ``Resize``: PSP's adaptive pooling and bilinear upsampling are separable linear maps
whose (bins x size) matrices are computed from the input's shape, so height and width stay
dynamic (see :func:`adaptive_pool_matrix` and :func:`bilinear_matrix`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONTEXT_HEADS",
    "GlobalContext",
    "L2NormScale",
    "PyramidContext",
    "PyramidLevel",
    "adaptive_pool_matrix",
    "bilinear_matrix",
    "build_context",
    "list_contexts",
]


class L2NormScale(nn.Module):
    """ParseNet's normalisation layer: ``y_c = gamma_c * x_c / ||x||_2`` over channels.

    ParseNet Eq. 2 (``x_hat = x / ||x||_2``, the norm taken over the channels of each pixel)
    and Eq. 4 (``y = gamma * x_hat``, one learned scale per channel). Without it, the pooled
    vector's scale differs from the local features' by orders of magnitude and the larger one
    dominates what the classifier learns (ParseNet Section 3.2).

    Input and output ``(N, C, H, W)``; an all-zero pixel stays zero (the norm is clamped at
    ``eps``, as ``F.normalize``).
    """

    def __init__(self, channels: int, scale: float = 10.0, eps: float = 1e-12) -> None:
        super().__init__()
        # ParseNet initialises the scale at 10 so normalised features are not too small for
        # a classifier trained with the usual learning rates.
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=1, eps=self.eps) * self.weight.view(1, -1, 1, 1)


class GlobalContext(nn.Module):
    """ParseNet global context ``[l2(x), unpool(l2(mean(x)))]``: ``(N, C, H, W) -> (N, 2C, H, W)``.

    The global vector is the spatial average of the map (ParseNet's global average pooling),
    normalised and scaled (:class:`L2NormScale`, its own scales), and copied to every pixel
    with ``expand_as`` (an ``Expand`` in ONNX: no interpolation is involved). Channels
    ``[:C]`` are the local features, ``[C:]`` the global ones.
    """

    def __init__(self, channels: int, scale: float = 10.0) -> None:
        super().__init__()
        self.in_channels = channels
        self.out_channels = 2 * channels
        self.norm_local = L2NormScale(channels, scale)
        self.norm_global = L2NormScale(channels, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.norm_global(x.mean(dim=(2, 3), keepdim=True))  # (N, C, 1, 1)
        local = self.norm_local(x)
        return torch.cat([local, pooled.expand_as(local)], dim=1)


def adaptive_pool_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, size)`` averaging weights equal to ``F.adaptive_avg_pool1d``'s bins.

    Bin k covers indices ``floor(k size / bins) <= j < ceil((k + 1) size / bins)`` (PyTorch's
    adaptive pooling rule); its row holds ``1 / count`` there and 0 elsewhere. ``like`` gives
    the dtype and device. The arithmetic runs on tensors made from ``torch.arange(size)``, so a
    traced graph keeps ``size`` dynamic.
    """
    j = torch.arange(size, device=like.device).unsqueeze(0)  # (1, size)
    k = torch.arange(bins, device=like.device).unsqueeze(1)  # (bins, 1)
    n = j[:, -1:] + 1  # == size, as a tensor
    start = torch.div(k * n, bins, rounding_mode="floor")
    end = torch.div((k + 1) * n + bins - 1, bins, rounding_mode="floor")
    inside = ((j >= start) & (j < end)).to(like.dtype)
    return inside / inside.sum(dim=1, keepdim=True)


def bilinear_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(size, bins)`` weights of 1-D linear interpolation from ``bins`` to ``size`` samples.

    The half-pixel convention of ``F.interpolate(..., align_corners=False)``: output i samples
    the input at ``(i + 0.5) bins / size - 0.5``, clamped to ``[0, bins - 1]``; that point is
    where adaptive bin centres sit, so pooling then upsampling is not shifted. Row i holds
    ``1 - t`` at ``floor`` and ``t`` at ``floor + 1``.
    """
    i = torch.arange(size, device=like.device).to(like.dtype)  # (size,)
    n = i[-1:] + 1  # == size, as a tensor
    src = ((i + 0.5) * bins / n - 0.5).clamp(min=0.0, max=float(bins - 1))
    lo = src.floor()
    t = (src - lo).unsqueeze(1)  # (size, 1)
    k = torch.arange(bins, device=like.device).to(like.dtype).unsqueeze(0)  # (1, bins)
    lo = lo.unsqueeze(1)
    hi = (lo + 1).clamp(max=float(bins - 1))
    return (k == lo).to(like.dtype) * (1 - t) + (k == hi).to(like.dtype) * t


class PyramidLevel(nn.Module):
    """One PSP level: ``bins x bins`` average pooling, 1x1 conv + ReLU, bilinear back to size.

    ``(N, C, H, W) -> (N, out_channels, H, W)``.
    """

    def __init__(self, channels: int, out_channels: int, bins: int) -> None:
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        pool_h = adaptive_pool_matrix(height, self.bins, x)
        pool_w = adaptive_pool_matrix(width, self.bins, x)
        y = F.relu(self.conv(pool_h @ x @ pool_w.t()))  # (N, out, bins, bins)
        return bilinear_matrix(height, self.bins, x) @ y @ bilinear_matrix(width, self.bins, x).t()


class PyramidContext(nn.Module):
    """PSPNet pyramid pooling: ``[x, level_b(x) for b in bins]``, ``(N, C, H, W) -> (N, 2C, H, W)``.

    With the default four bins (1, 2, 3, 6) each level has C / 4 channels (PSPNet Section 3.3),
    so the output has 2C. Pooling and upsampling are matrix products with
    :func:`adaptive_pool_matrix` / :func:`bilinear_matrix` (``P_h x P_w^T`` and ``U_h y U_w^T``),
    equal to ``F.adaptive_avg_pool2d`` and bilinear ``F.interpolate`` but exported as ``MatMul``.
    PSPNet puts batch norm after each 1x1 convolution; here it has a bias instead, because the
    1x1 level would normalise one value per image and fail at batch size 1.
    """

    def __init__(self, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = max(channels // len(bins), 1)
        self.in_channels = channels
        self.out_channels = channels + reduced * len(bins)
        # PyTorch's default init for the 1x1 reductions: their outputs meet a zero-started
        # score layer, so training starts from the plain FCN's logits (zero).
        self.levels = nn.ModuleList(PyramidLevel(channels, reduced, int(b)) for b in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = [x]
        for level in self.levels:
            out.append(level(x))
        return torch.cat(out, dim=1)


# name -> class; each takes the input channels and exposes ``out_channels``
CONTEXT_HEADS: dict[str, type[nn.Module]] = {
    "global": GlobalContext,
    "pyramid": PyramidContext,
}


def list_contexts() -> list[str]:
    """Names accepted by ``build_model(..., context=...)`` (besides ``None``)."""
    return list(CONTEXT_HEADS)


def build_context(name: str | None, channels: int) -> nn.Module | None:
    """The context head ``name`` over a ``channels``-channel map, or ``None`` for ``None``.

    Raises:
        ValueError: an unknown name.
    """
    if name is None:
        return None
    if name not in CONTEXT_HEADS:
        raise ValueError(f"unknown context {name!r}; choose one of {list_contexts()} or None")
    return CONTEXT_HEADS[name](channels)
