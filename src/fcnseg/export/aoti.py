"""AOTInductor: the model compiled ahead of time, for one input size and one CPU vector ISA.

``torch.compile`` (inductor, weights frozen) runs an FCN faster than any eager path on the CPU:
BatchNorm folded, every weight pre-packed for its kernel, the element-wise work between
convolutions (pads, adds, crops, the upsamplers) fused into generated C++ loops, and no Python
between layers. It pays for that with tens of seconds of compiling per input shape and a C++
toolchain, which a predictor cannot pay at its first call. AOTInductor pays it once, at export:
``export_aoti`` writes a ``.pt2`` package (a shared library and the weights) that
:class:`AotiModel` runs with no compiler and no Python model code (``torch._inductor.
aoti_load_package``), as TensorRT engines and ONNX Runtime's saved sessions do.

What a package is bound to, recorded in its metadata and checked:

- **the input size and batch** of the export (static shapes, which is what lets inductor plan
  every buffer); :class:`AotiModel` refuses another size in one line naming both;
- **the CPU vector ISA** inductor generated code for (``avx2``, ``avx512``, ``amx`` ...: the
  best the exporting CPU has, under ``ATEN_CPU_CAPABILITY`` where set): a package built on an
  AVX-512 machine would fault on an AVX2 one, so loading refuses it on a CPU without those
  instructions, naming both (re-export there, or export with ``ATEN_CPU_CAPABILITY=avx2``);
- **the thread count** its generated loops were written for (``torch.get_num_threads()`` at
  export); the convolutions follow the loading process's own setting.

The package takes *normalised* float32 images ``(N, 3, H, W)`` (the model's ``preprocess``, in
the metadata with the whole config) and returns float32 logits, as the ONNX and TorchScript
exports do; inside, the maps are channels-last. ``precision="bf16"`` (on a CPU with native
bf16: AMX or AVX512-BF16) compiles the model as autocast runs it, bf16 convolutions on fp32
master weights folded into bf16 constants, with the same float32 inputs and logits; its parity
is judged by the argmax (bf16 keeps 8 significant bits, so no fixed logit tolerance holds),
as the inference core's ``auto`` judges bf16.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from torch import nn

from fcnseg.accel.heap import retain_freed_memory
from fcnseg.accel.precision import cpu_has_bf16, precision_autocast
from fcnseg.export.formats import (
    ATOL,
    CONFIG_KEY,
    MIN_AGREEMENT,
    ExportedModel,
    _check_sizes,
    _config_json,
    _cpu_copy,
    _example,
    check_parity,
)
from fcnseg.inference.core import AUTO_MIN_AGREEMENT

__all__ = [
    "AOTI_KEY", "AotiError", "AotiModel", "compiler_available", "export_aoti", "inductor_isa",
]  # fmt: skip

AOTI_KEY = "fcnseg_aoti"  # metadata: size, precision, ISA, threads, torch version, machine

# the parity rule of each precision a package can have: (max |logit diff|, min argmax
# agreement); bf16 is judged by its labels alone, as the inference core's ``auto`` judges it
_PARITY = {"fp32": (ATOL, MIN_AGREEMENT), "bf16": (float("inf"), AUTO_MIN_AGREEMENT)}


class AotiError(ValueError):
    """A package that cannot run here (another ISA, another size, not an fcnseg package)."""


class _ChannelsLast(nn.Module):
    """Takes NCHW images of any layout; runs the model on channels-last maps (oneDNN's and
    inductor's fast layout), so callers never meet the package's internal strides. With
    ``precision="bf16"`` the model runs under bf16 autocast and its logits come back float32."""

    def __init__(self, model: nn.Module, precision: str = "fp32") -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)
        self.precision = precision

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with precision_autocast(self.precision, "cpu"):
            out = self.model(images.contiguous(memory_format=torch.channels_last))
        return out.float().contiguous()


@contextlib.contextmanager
def _quiet_torch_logs():
    """Silence torch's notices that are not the user's business here ("No CUDA runtime is
    found" when inductor loads its C++ helpers, "outdated pt2 file" on a file being refused):
    errors still pass, and fcnseg's own message says what went wrong."""
    names = ("torch.utils.cpp_extension", "torch._inductor.package.package")
    loggers = [logging.getLogger(n) for n in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def inductor_isa() -> str:
    """The vector ISA inductor generates CPU code for here (``"avx2"``, ``"avx512"``, the
    AMX and VNNI variants' flag lists, ``"asimd"`` ...), as its own ``pick_vec_isa`` decides."""
    with _quiet_torch_logs():
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        return str(pick_vec_isa())


def _missing_flags(isa: str) -> list[str]:
    """The instruction-set flags ``isa`` needs that this CPU lacks (x86; elsewhere the
    package's machine type must match)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    from torch._inductor.cpu_vec_isa import x86_isa_checker

    have = set(x86_isa_checker())
    return [flag for flag in isa.split() if flag not in have]


def compiler_available() -> bool:
    """Whether a C++ compiler is on the PATH (AOTInductor needs one to export, not to run)."""
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def export_aoti(
    model: nn.Module,
    path: str | Path,
    example_size: tuple[int, int, int, int] = (1, 3, 360, 480),
    *,
    precision: str = "fp32",
    atol: float | None = None,
    min_agreement: float | None = None,
) -> dict:
    """Compile ``model`` for ``example_size`` with AOTInductor and write the ``.pt2`` package.

    The weights are frozen into the package (inductor's ``freezing``); the package is then
    loaded back with :class:`AotiModel` and checked against the PyTorch model (in float32)
    on another random input of the same size (:func:`fcnseg.export.check_parity`).

    Args:
        precision: ``"fp32"`` or ``"bf16"`` (a CPU with AMX or AVX512-BF16 only).
        atol, min_agreement: the parity thresholds; default ``ATOL`` and ``MIN_AGREEMENT``
            for fp32, and for bf16 no logit bound with the argmax agreeing on
            ``AUTO_MIN_AGREEMENT`` (99 %) of the pixels, the inference core's bf16 rule.

    Returns:
        A report: ``format`` (``"aoti"``), ``path``, ``example_size``, ``precision``,
        ``isa``, ``threads``, ``compile_s``, ``bytes``, ``preprocess``, ``dynamic_shapes``
        (False) and ``parity``.

    Raises:
        ExportParityError: the package's logits differ from PyTorch's beyond the thresholds.
        AotiError: no C++ compiler here, or bf16 asked for on a CPU without native bf16.
        ValueError: a bad example size or precision.
    """
    if not compiler_available():
        raise AotiError("AOTInductor export needs a C++ compiler (g++ or clang++) on this machine")
    if precision not in _PARITY:
        raise ValueError(f"precision must be 'fp32' or 'bf16' for a package, got {precision!r}")
    if precision == "bf16" and not cpu_has_bf16():
        raise AotiError(
            "a bf16 package needs a CPU with native bf16 (AMX or AVX512-BF16); this one has "
            "none: export precision fp32"
        )
    default_atol, default_agreement = _PARITY[precision]
    atol = default_atol if atol is None else atol
    min_agreement = default_agreement if min_agreement is None else min_agreement
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _cpu_copy(model)
    example_size, _ = _check_sizes(net, example_size)
    meta = {
        CONFIG_KEY: _config_json(model),
        AOTI_KEY: json.dumps(
            {
                "size": list(example_size),
                "precision": precision,
                "isa": inductor_isa(),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
            }
        ),
    }
    start = time.perf_counter()
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp, _quiet_torch_logs():
        program = torch.export.export(
            _ChannelsLast(net, precision), (_example(example_size, seed=1),)
        )
        built = torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(Path(tmp) / "model.pt2"),
            inductor_configs={"freezing": True, "aot_inductor.metadata": meta},
        )
        shutil.move(built, path)
    compile_s = time.perf_counter() - start
    loaded = AotiModel(path)
    parity = check_parity(net, loaded, example_size, atol=atol, min_agreement=min_agreement, seed=2)
    return {
        "format": "aoti",
        "path": str(path),
        "example_size": list(example_size),
        "precision": loaded.precision,
        "isa": loaded.isa,
        "threads": loaded.threads,
        "compile_s": round(compile_s, 1),
        "bytes": path.stat().st_size,
        "preprocess": (getattr(model, "config", {}) or {}).get("preprocess"),
        "dynamic_shapes": False,
        "note": f"runs {example_size[0]}x3x{example_size[2]}x{example_size[3]} inputs only",
        "parity": parity,
    }


class AotiModel(ExportedModel):
    """A ``.pt2`` package of :func:`export_aoti`, called like the PyTorch model (as
    :class:`fcnseg.export.OnnxRuntimeModel` is for ONNX): ``logits = m(images)``.

    ``images``: normalised float32 ``(N, 3, H, W)`` of the package's size (``m.size``), any
    memory layout; another size is refused in one line. Attributes: ``config`` (the model's,
    so ``preprocess``, ``num_classes``, ``class_names``), ``size``, ``precision``, ``isa``,
    ``threads``.

    Loading calls :func:`fcnseg.accel.heap.retain_freed_memory` (process-wide): the package
    allocates its buffers on every call, and glibc would otherwise often hand them back to the
    kernel and fault them in again each time (``retain_memory=False`` leaves malloc as it is).

    Raises (at load): :class:`AotiError` for a file that is not an fcnseg package or that was
    compiled for instructions this CPU lacks; ``FileNotFoundError`` for no file.
    """

    def __init__(self, path: str | Path, retain_memory: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        if not zipfile.is_zipfile(self.path):
            raise AotiError(f"{self.path}: not an AOTInductor package (not a zip archive)")
        try:
            with _quiet_torch_logs():
                package = torch._inductor.aoti_load_package(str(self.path))
        except Exception as e:  # a zip that is not a package, a truncated file, ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise AotiError(f"{self.path}: not an AOTInductor package ({first[:200]})") from None
        meta = package.get_metadata()
        if AOTI_KEY not in meta:
            raise AotiError(f"{self.path}: an AOTInductor package, but not one fcnseg exported")
        info = json.loads(meta[AOTI_KEY])
        self.config: dict = json.loads(meta.get(CONFIG_KEY, "{}"))
        self.num_classes = int(self.config.get("num_classes", 0))
        self.size: tuple[int, ...] = tuple(info["size"])
        self.precision: str = info.get("precision", "fp32")
        self.isa: str = info["isa"]
        self.threads: int = int(info["threads"])
        if info.get("machine") != platform.machine():
            raise AotiError(
                f"{self.path}: compiled for {info.get('machine')}, this machine is "
                f"{platform.machine()}"
            )
        missing = _missing_flags(self.isa)
        if missing:
            raise AotiError(
                f"{self.path}: compiled for {self.isa!r}; this CPU lacks {missing}. Re-export "
                "on this machine (or with ATEN_CPU_CAPABILITY=avx2 for any x86-64 CPU)"
            )
        self._run = package
        if retain_memory:
            retain_freed_memory()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape) != self.size:
            raise AotiError(
                f"{self.path}: compiled for inputs {'x'.join(map(str, self.size))}, got "
                f"{'x'.join(map(str, images.shape))}; export again with that --size"
            )
        with torch.no_grad():  # the package reads the example's (contiguous NCHW) strides
            return self._run(images.float().contiguous())
