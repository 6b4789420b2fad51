"""Where each feature map's pixels sit in the input, traced through the network's layers.

A map's pixel grid is ``Grid(stride, centre)``: pixel i is centred at input coordinate
``stride * i + centre``. Each layer moves it by arithmetic on its hyper-parameters:

- a convolution or pooling window (kernel k, stride t, padding p, dilation d) centres output
  j on its input's ``t j - p + d (k - 1) / 2``, so ``stride' = stride t`` and
  ``centre' = centre + stride (d (k - 1) / 2 - p)``;
- a padding layer with ``left`` pixels moves the centre by ``-stride left``;
- any other op whose output has its input's height and width (ReLU, BatchNorm, residual sums,
  concatenation, squeeze-excitation products) keeps the grid of that input.

The backbone runs once on the meta device (no arithmetic, no memory, the real weights
untouched) under a ``TorchFunctionMode`` that carries the grid of every tensor, and the grids of
the maps its ``forward`` returns are read off. A new backbone therefore declares only its taps;
its geometry (the Caffe ``pad100`` shift, AlexNet's lopsided 'same' fc6) follows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from fcnseg.models.upsampling import Grid

__all__ = ["trace_grids"]

_WINDOWS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_PADS = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _GridTrace(TorchFunctionMode):
    """Carries ``(stride, centre_y, centre_x)`` from every op's inputs to its outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.grids: dict[int, tuple[int, float, float]] = {}
        self._alive: list[torch.Tensor] = []  # keeps ids unique while the trace runs

    def get(self, t) -> tuple[int, float, float] | None:
        return self.grids.get(id(t)) if isinstance(t, torch.Tensor) else None

    def put(self, t: torch.Tensor, grid: tuple[int, float, float]) -> None:
        self.grids[id(t)] = grid
        self._alive.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.dim() == 4 and self.get(out) is None:
            for t in _tensors(args, kwargs):
                grid = self.get(t)
                if grid is not None and t.dim() == 4 and t.shape[-2:] == out.shape[-2:]:
                    self.put(out, grid)
                    break
        return out

    def after_layer(self, module: nn.Module, inputs: tuple, output) -> None:
        grid = self.get(inputs[0]) if inputs else None
        if grid is None or not isinstance(output, torch.Tensor):
            return
        stride, cy, cx = grid
        if isinstance(module, _PADS):
            left, _, top, _ = module.padding
            self.put(output, (stride, cy - stride * top, cx - stride * left))
            return
        k = _pair(module.kernel_size)
        t = _pair(module.stride if module.stride is not None else module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
        p = module.padding
        if p == "valid":
            p = (0, 0)
        elif p == "same":  # stride 1; torch pads the odd remainder on the far side
            p = tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))
        p = _pair(p)
        if t[0] != t[1]:
            raise ValueError(f"{type(module).__name__}: stride {t} differs between the axes")
        cy += stride * (d[0] * (k[0] - 1) / 2 - p[0])
        cx += stride * (d[1] * (k[1] - 1) / 2 - p[1])
        self.put(output, (stride * t[0], cy, cx))


def _tensors(args, kwargs) -> Iterator[torch.Tensor]:
    for a in (*args, *(kwargs or {}).values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (x for x in a if isinstance(x, torch.Tensor))


def trace_grids(backbone: nn.Module, size: int = 224) -> dict[int, Grid]:
    """The pixel grid of each map ``backbone(x)`` returns (``{stride: tensor}``), by key.

    Runs ``backbone`` on a meta ``(1, 3, size, size)`` input with meta copies of its parameters
    and buffers (``torch.func.functional_call``), so it costs no arithmetic and works whether the
    backbone's own tensors are on the CPU, a GPU or the meta device.

    Raises:
        ValueError: a returned map's grid cannot be traced (an op that resizes without being a
            known window or padding layer), or differs between the two axes.
    """
    tensors = {**dict(backbone.named_parameters()), **dict(backbone.named_buffers())}
    meta = {n: torch.empty_like(t, device="meta") for n, t in tensors.items()}
    trace = _GridTrace()
    hooks = [
        m.register_forward_hook(trace.after_layer)
        for m in backbone.modules()
        if isinstance(m, _WINDOWS + _PADS)
    ]
    x = torch.empty(1, 3, size, size, device="meta")
    was_training = backbone.training
    try:
        backbone.eval()
        with trace, torch.no_grad():
            trace.put(x, (1, 0.0, 0.0))
            out = functional_call(backbone, meta, (x,))
    finally:
        backbone.train(was_training)
        for h in hooks:
            h.remove()
    grids: dict[int, Grid] = {}
    for key, feature in out.items():
        grid = trace.get(feature)
        if grid is None:
            name = type(backbone).__name__
            raise ValueError(f"{name}: the grid of the stride-{key} map cannot be traced")
        stride, cy, cx = grid
        if cy != cx:
            raise ValueError(f"{type(backbone).__name__}: stride-{key} centres differ ({cy}, {cx})")
        grids[int(key)] = Grid(stride, cx)
    return grids
