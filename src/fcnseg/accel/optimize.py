"""Inference-time speed-ups, measured and kept only where they win.

``optimize_for_inference(model, example=x)`` returns a module computing the same logits (within
1e-5 relative in fp32) faster. The candidates (timed against each other, interleaved in one
process; figures in ``benchmarks/README.md``, from ``python -m benchmarks.run``):

- ``onednn`` (``fcnseg.accel.onednn``): every convolution as a direct oneDNN call chosen by
  its shape: fc6/fc7 and 1x1 layers as inner products, 3x3 layers pre-packed with their ReLU
  fused, BatchNorm folded; NHWC; any input shape; fc6/fc7 shared with the model. Usually the
  fastest for VGG16.
- ``channels_last``: eager NHWC (oneDNN runs NHWC natively).
- ``frozen`` / ``frozen_channels_last``: trace + ``torch.jit.freeze`` (+
  ``torch.jit.optimize_for_inference`` for NCHW): BatchNorm folding, conv + ReLU fusion,
  oneDNN weight pre-packing (a second copy of the weights). The FCN head computes its crops in
  Python (not scriptable), so the trace is specialised to the example's shape; other shapes run
  the eager model. Small backbones (MobileNetV3) can prefer it.
- ``torch.inference_mode``: always (no autograd bookkeeping, no version counters).
- ``torch.compile`` (inductor, ``freezing=True``): a few percent faster than ``onednn`` on VGG16
  (``python -m benchmarks.compile_check``) after seconds of compiling per input shape, with a
  pre-packed second copy of every weight; not a candidate.

Since the best combination depends on the backbone and the CPU, with an ``example`` the
candidates are timed on it and the fastest is kept (as ``cudnn.benchmark`` does for kernels).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from fcnseg.accel.onednn import available as onednn_available
from fcnseg.accel.onednn import to_onednn
from fcnseg.accel.timing import time_interleaved


class OptimizedModel(nn.Module):
    """Inference wrapper: ``forward(images (N, 3, H, W)) -> logits (N, C, H, W)``.

    Runs under ``torch.inference_mode``, converts inputs to the model's memory format, and uses
    the frozen TorchScript graph when the input has the traced shape, dtype and device.
    Attributes ``model`` (the eager module) and ``frozen`` (the graph or ``None``).
    """

    def __init__(
        self,
        model: nn.Module,
        memory_format: torch.memory_format,
        frozen: torch.jit.ScriptModule | None = None,
        frozen_key: tuple | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.memory_format = memory_format
        self.frozen = frozen
        self._frozen_key = frozen_key
        self.choice: str | None = None  # the candidate's name (``CANDIDATES``) when chosen
        self.timings_ms: dict[str, float] = {}  # median ms of each timed candidate

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = images.contiguous(memory_format=self.memory_format)
            if self.frozen is not None and _key(x) == self._frozen_key:
                return self.frozen(x)
            return self.model(x)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # config, preprocess, class_names, num_classes ... of the wrapped FCN
            return getattr(super().__getattr__("model"), name)


def _tensors_of(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor, bool]]:
    """Every parameter's and buffer's current tensor, to undo in-place conversions."""
    saved = []
    for module in model.modules():
        saved += [(module, n, p.data, True) for n, p in module._parameters.items() if p is not None]
        saved += [(module, n, b, False) for n, b in module._buffers.items() if b is not None]
    return saved


def _restore_tensors(saved: list[tuple[nn.Module, str, torch.Tensor, bool]]) -> None:
    for module, name, tensor, is_parameter in saved:
        if is_parameter:
            module._parameters[name].data = tensor
        else:
            module._buffers[name] = tensor


def _key(x: torch.Tensor) -> tuple:
    return (tuple(x.shape), x.dtype, x.device)


@dataclass(frozen=True)
class Candidate:
    """One way to run the model: NHWC or not, oneDNN layers or not, traced + frozen or not."""

    name: str
    channels_last: bool
    freeze: bool = False
    onednn: bool = False
    stream: bool = False  # onednn only: drop file-backed weights' pages after use


# What ``optimize_for_inference`` chooses from. Order matters only for ties.
CANDIDATES = (
    Candidate("onednn", channels_last=True, onednn=True),
    # the model as it is: timed too, so the choice can never be slower than not optimizing
    # (on AVX2-only CPUs oneDNN's NHWC kernels can lose to the plain NCHW ones)
    Candidate("eager", channels_last=False),
    Candidate("channels_last", channels_last=True),
    Candidate("frozen", channels_last=False, freeze=True),
    Candidate("frozen_channels_last", channels_last=True, freeze=True),
)
# Chosen by name only (``candidate=``): the low-memory variant of ``onednn`` for weights
# memory-mapped from a checkpoint (``fcnseg.load_model(path, mmap=True)``); as fast within a
# few percent, far less resident memory.
LOW_MEMORY = Candidate("onednn_streamed", channels_last=True, onednn=True, stream=True)
# Every candidate a caller can name (``candidate=``, ``fcnseg bench --optimize NAME``).
NAMED = {c.name: c for c in (*CANDIDATES, LOW_MEMORY)}


def _build_candidate(
    model: nn.Module, candidate: Candidate, example: torch.Tensor | None
) -> OptimizedModel:
    fmt = torch.channels_last if candidate.channels_last else torch.contiguous_format
    if candidate.onednn:
        # a new module tree sharing the untransformed tensors; works for every input shape
        return OptimizedModel(to_onednn(model, stream_weights=candidate.stream), fmt)
    model = model.to(memory_format=fmt)
    if not candidate.freeze:
        return OptimizedModel(model, fmt)
    x = example.contiguous(memory_format=fmt)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning (shape-specialised crops), deprecations
        frozen = torch.jit.freeze(torch.jit.trace(model, x, check_trace=False))
        if not candidate.channels_last:
            # oneDNN blocked layout end to end: measured faster for NCHW, slower for NHWC
            frozen = torch.jit.optimize_for_inference(frozen)
        for _ in range(2):  # the profiling executor specialises on the first calls
            frozen(x)
    return OptimizedModel(model, fmt, frozen, _key(x))


def optimize_for_inference(
    model: nn.Module,
    *,
    channels_last: bool | None = None,
    freeze: bool | None = None,
    onednn: bool | None = None,
    candidate: str | None = None,
    example: torch.Tensor | None = None,
    rounds: int = 3,
) -> OptimizedModel:
    """Make ``model`` faster for inference without changing its outputs beyond 1e-4 relative.

    Args:
        model: an FCN (or any image -> tensor module); switched to ``eval()`` and its
            parameters to ``requires_grad=False`` in place.
        channels_last: store weights and run convolutions in NHWC. ``None``: chosen (below).
        freeze: trace + ``torch.jit.freeze`` (+ ``torch.jit.optimize_for_inference`` for NCHW)
            for ``example``'s shape: BatchNorm folding, oneDNN fusion and weight pre-packing.
            Other shapes, dtypes or devices run the eager model. ``None``: chosen (below).
        onednn: run every convolution as a direct oneDNN call chosen by its shape
            (``fcnseg.accel.onednn``: 1x1 and fc6-like layers as inner products, ReLU fused,
            BatchNorm folded); CPU fp32, any input shape. ``None``: chosen (below).
        candidate: build this one of ``CANDIDATES`` by name, without timing the others
            (overrides the three options above); or ``"onednn_streamed"`` (``LOW_MEMORY``):
            ``onednn`` whose file-backed weights (``load_model(path, mmap=True)``) stay out of
            the resident set between uses.
        example: a representative input ``(N, 3, H, W)`` on the model's device; needed by
            ``freeze`` and by the automatic choice.
        rounds: timed calls per candidate for the automatic choice.

    With ``example`` and the options left ``None``, the candidates in ``CANDIDATES`` that the
    options allow (oneDNN layers; channels_last eager; NCHW frozen + oneDNN graph; channels_last
    frozen) are timed on ``example`` in alternation and the fastest is kept (VGG16 and
    MobileNetV3 prefer the oneDNN layers on the project's machine; see benchmarks/README.md).
    Without ``example``: the oneDNN layers where the build has them and the model is on the
    CPU, else channels_last eager. The choice's name is in ``result.choice``, each timed
    candidate's median in ``result.timings_ms``.

    Memory: the ``onednn`` copy shares the model's weights; a frozen candidate, once built,
    keeps its pre-packed weights in TorchScript's global compilation unit even when it is not
    chosen (for VGG16 that is hundreds of MiB). Where memory matters pass ``freeze=False`` or
    ``candidate="onednn"`` (or ``"onednn_streamed"``).

    Returns:
        An ``OptimizedModel`` that forwards attribute access (``config``, ``preprocess`` ...)
        to ``model``.

    Raises:
        ValueError: ``freeze=True`` without ``example``; ``onednn=True`` where it cannot run.
    """
    chosen = None
    if candidate is not None:
        if candidate not in NAMED:
            raise ValueError(f"unknown candidate {candidate!r}; choose one of {list(NAMED)}")
        chosen = NAMED[candidate]
        freeze, onednn = chosen.freeze, chosen.onednn
    if freeze and example is None:
        raise ValueError("freeze=True traces the model: pass example=<an input tensor>")
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if example is not None:
        on_cpu = on_cpu and example.device.type == "cpu"
    if onednn and not (on_cpu and onednn_available()):
        raise ValueError("oneDNN layers need a CPU model and a PyTorch build with oneDNN")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if chosen is not None:  # built as named, nothing timed
        best = _build_candidate(model, chosen, example)
        best.choice = chosen.name
        return best
    allowed = [
        c
        for c in CANDIDATES
        if channels_last in (None, c.channels_last)
        and freeze in (None, c.freeze)
        and onednn in (None, c.onednn)
        and (example is not None or not c.freeze)
        and (not c.onednn or (on_cpu and onednn_available()))
    ]
    if not allowed:  # a combination no candidate has (e.g. NCHW eager): build it as asked
        allowed = [Candidate("custom", bool(channels_last), bool(freeze), bool(onednn))]
    if example is None or len(allowed) == 1:
        best = _build_candidate(model, allowed[0], example)
        best.choice = allowed[0].name
        return best
    layout = _tensors_of(model)  # the candidates change the model's memory format in place
    built = {c: _build_candidate(model, c, example) for c in allowed}
    times = time_interleaved(
        {c.name: (lambda m=m: m(example)) for c, m in built.items()},
        rounds=rounds,
        warmup=1,
        device=example.device,
    )
    choice = min(allowed, key=lambda c: times[c.name]["ms"])
    best = built[choice]
    del built
    if choice.onednn:
        # give the model back its own tensors, which the oneDNN copy shares: otherwise the
        # weights would be held twice (once in each memory format)
        _restore_tensors(layout)
    else:
        best.model = best.model.to(memory_format=best.memory_format)  # the candidates share it
    best.choice = choice.name
    best.timings_ms = {name: t["ms"] for name, t in times.items()}
    return best
