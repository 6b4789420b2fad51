"""The one precision policy: ``precision = "fp32" | "bf16" | "fp16" | "auto"`` on every path.

bf16 and fp16 mean autocast with float32 master weights: the parameters, the optimiser, the
loss, softmax averaging (TTA) and the metrics stay float32, only the autocast-eligible layers
(convolutions, matrix products) compute in the low precision. ``auto`` chooses bf16 where the
hardware computes it natively (a CPU with AMX-BF16 or AVX512-BF16 that oneDNN and ATen are
allowed to use, a CUDA device that supports bf16) and fp32 elsewhere, so it is never slower
than fp32 on a CPU without bf16 units (where bf16 is emulated through fp32 and costs casts).
fp16 is a GPU precision; on the CPU it is refused. Where bf16 is native, the callers that run
a network then measure before they commit: the inference core and the trainer time both
precisions on their first batch and keep bf16 only where it is faster (and, for inference,
agrees with fp32), because depthwise layers gain nothing from AMX.

``cpu_isa()`` names the CPU's best vector ISA (``AMX``, ``AVX512-BF16``, ``AVX-512``, ``AVX2``)
as oneDNN may use it: ``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` capped to AVX2 make an
AMX machine compute, and report, as an AVX2 one. Every run log, checkpoint, bench row and serve
``/model`` answer records ``precision_record(...)``.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import get_args

import torch

from fcnseg.config import Precision

__all__ = [
    "PRECISIONS",
    "channels_last_pays",
    "cpu_flags",
    "cpu_has_bf16",
    "cpu_isa",
    "precision_autocast",
    "precision_dtype",
    "precision_record",
    "resolve_precision",
]

PRECISIONS: tuple[str, ...] = get_args(Precision)  # the recipe schema's names
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# oneDNN ISA caps below which it has no native bf16 kernels (its ONEDNN_MAX_CPU_ISA names)
_NO_BF16_CAPS = {
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``flags`` of ``/proc/cpuinfo``; empty where it cannot be read):
    the one reader of them (int8's VNNI check, bench's ISA record, the precision policy)."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return frozenset()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _capped_below_avx512() -> bool:
    return os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("avx2", "default")


def cpu_isa() -> str:
    """The CPU's best vector ISA as the kernels may use it: ``AMX``, ``AVX512-BF16``,
    ``AVX-512`` or ``AVX2`` (``other`` without AVX2), after the ISA caps in the environment."""
    flags = cpu_flags()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if _capped_below_avx512() or cap in ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"):
        return "AVX2" if "avx2" in flags else "other"
    if "amx_bf16" in flags and cap in ("", "ALL", "AVX512_CORE_AMX", "AVX10_1_512_AMX"):
        return "AMX"
    if "avx512_bf16" in flags and cap not in _NO_BF16_CAPS:
        return "AVX512-BF16"
    if "avx512f" in flags:
        return "AVX-512"
    return "AVX2" if "avx2" in flags else "other"


def cpu_has_bf16() -> bool:
    """True where the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16) and may use it."""
    return cpu_isa() in ("AMX", "AVX512-BF16")


def resolve_precision(precision: str | None, device: torch.device | str = "cpu") -> str:
    """``fp32``, ``bf16`` or ``fp16``: what ``precision`` means on ``device``.

    Raises:
        ValueError: an unknown name, or fp16 on the CPU (no fp16 kernels worth using there).
    """
    precision = precision or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 is for GPUs; on the CPU use bf16 (or auto)")
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    """The autocast dtype of a resolved precision (``torch.float32`` for fp32)."""
    return _DTYPES[precision]


def precision_autocast(precision: str, device: torch.device | str):
    """``torch.autocast`` to the resolved ``precision`` on ``device``; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def channels_last_pays(precision: str, device: torch.device | str) -> bool:
    """NHWC activations where they pay: bf16 on the CPU (oneDNN's bf16 convolutions are NHWC
    kernels; NCHW inputs are reordered at every layer). Figures: benchmarks/README.md."""
    return precision == "bf16" and torch.device(device).type == "cpu"


def precision_record(precision: str, device: torch.device | str = "cpu") -> dict:
    """What a log, checkpoint, bench row or ``/model`` answer records: the resolved precision,
    the device type and, on the CPU, its ISA."""
    device = torch.device(device)
    record = {"precision": precision, "device": device.type}
    if device.type == "cpu":
        record["cpu_isa"] = cpu_isa()
    return record
