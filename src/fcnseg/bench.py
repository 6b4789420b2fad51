"""Benchmark harness: latency, throughput, FLOPs, memory and efficiency of one configuration.

``run_benchmark(...)`` measures one (model, backbone, geometry, input size, batch, dtype,
device) configuration, or one of the peers fcnseg is compared with, and returns a flat dict:

- ``params``, ``gflops`` (per forward, ``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs
  per multiply-add, convolutions and matrix products only);
- inference: ``latency_ms`` (median) and ``latency_ms_min`` over ``repeat`` timed runs after
  ``warmup`` runs, under ``torch.inference_mode``; ``images_per_s`` (from the median);
  CUDA events on GPU;
- ``achieved_gflops_per_s`` and ``peak_fraction``: FLOPs / median latency, divided by the
  machine's dense GEMM throughput measured in the same process (``gemm_peak``: the faster of
  ``torch.mm`` and oneDNN's inner product);
- training (``train=True``): ``train_step_ms`` (forward + cross-entropy + backward + SGD step,
  median and min) and ``train_images_per_s``;
- memory: ``peak_rss_mib`` on CPU, the peak resident set of the process while it ran inference
  (``VmHWM`` from ``/proc/self/status``, reset after the model is built where Linux allows, so it
  counts weights + activations, not the construction); ``peak_mem_mib`` on GPU
  (``torch.cuda.max_memory_allocated``). For a fair RSS figure run each configuration in a fresh
  process: ``run_benchmark(..., isolate=True)`` does that (``python -m fcnseg.bench``).

Peers (``peer="torchfcn-fcn8s"`` ...) are loaded by ``build_peer``: pytorch-fcn's ``torchfcn``
(``pip install --no-deps torchfcn``; its ``fcn`` helper is stubbed in ``sys.modules``) and
torchvision's ``fcn_resnet50``. They are benchmark-only extras (``pip install fcnseg[bench]``),
never runtime dependencies.

Also here: ``bench_confusion_matrix`` (pixels/s of ``ConfusionMatrix.update``),
``bench_data_loading`` (decode + augment images/s of a dataset through a ``DataLoader``) and
``bench_onnxruntime`` (the same model exported to ONNX, run with ONNX Runtime's CPU provider).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = [
    "DTYPES",
    "PEERS",
    "PeerUnavailable",
    "autocast_for",
    "bench_confusion_matrix",
    "bench_data_loading",
    "bench_onnx_file",
    "bench_onnxruntime",
    "build_peer",
    "count_flops",
    "format_table",
    "gemm_kernels",
    "gemm_peak",
    "machine_info",
    "make_train_step",
    "memory_mapped_copy",
    "parse_size",
    "peers_for",
    "run_benchmark",
    "time_interleaved",
]


# --------------------------------------------------------------------------- peers


class PeerUnavailable(RuntimeError):
    """A peer's package is not installed (the message says how to install it)."""


TORCHFCN_ARCHS = {"fcn32s": "FCN32s", "fcn16s": "FCN16s", "fcn8s": "FCN8s"}


def _torchfcn_models() -> types.ModuleType:
    """``torchfcn.models`` without ``torchfcn``'s own ``__init__`` and without its ``fcn`` helper.

    The package ``__init__`` imports its trainer and datasets (scikit-image, pytz, ...) and each
    model module does ``import fcn`` only for ``fcn.data.cached_download`` of the Caffe weights.
    Neither is needed for the networks, so we register in ``sys.modules`` (never on disk) a stub
    ``fcn`` whose download refuses, and a bare ``torchfcn`` package object pointing at the
    installed folder.
    """
    if "torchfcn.models" in sys.modules:
        return sys.modules["torchfcn.models"]
    if "torchfcn" not in sys.modules:
        spec = importlib.util.find_spec("torchfcn")
        if spec is None or not spec.submodule_search_locations:
            raise PeerUnavailable("torchfcn is not installed: pip install --no-deps torchfcn")
        package = types.ModuleType("torchfcn")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["torchfcn"] = package
    if "fcn" not in sys.modules:

        def cached_download(*args: Any, **kwargs: Any) -> None:
            raise PeerUnavailable("fcnseg benchmarks use random weights; no torchfcn downloads")

        stub = types.ModuleType("fcn")
        stub.__doc__ = "stub of wkentaro/fcn inserted by fcnseg.bench (data.cached_download only)"
        stub.data = types.SimpleNamespace(cached_download=cached_download)
        sys.modules["fcn"] = stub
    return importlib.import_module("torchfcn.models")


def torchfcn_model(arch: str = "fcn8s", num_classes: int = 21) -> nn.Module:
    """pytorch-fcn's ``FCN32s/16s/8s(n_class=num_classes)``: the Caffe geometry (conv1_1 padding
    100), zero-started scores, bilinear deconvolutions, VGG16 convolutions at PyTorch's init."""
    if arch not in TORCHFCN_ARCHS:
        raise ValueError(f"torchfcn has {list(TORCHFCN_ARCHS)}, not {arch!r}")
    return getattr(_torchfcn_models(), TORCHFCN_ARCHS[arch])(n_class=num_classes)


class _OutOnly(nn.Module):
    """torchvision segmentation models return ``{"out": logits}``; the harness wants a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def torchvision_fcn_resnet50(num_classes: int = 21) -> nn.Module:
    """torchvision's ``fcn_resnet50`` (dilated ResNet-50, FCN head, bilinear upsampling) with
    random weights (``weights=None, weights_backbone=None``), returning the ``"out"`` logits."""
    from torchvision.models.segmentation import fcn_resnet50

    return _OutOnly(fcn_resnet50(weights=None, weights_backbone=None, num_classes=num_classes))


# peer name -> (builder(num_classes) -> module, description)
PEERS: dict[str, tuple[Callable[[int], nn.Module], str]] = {
    "torchfcn-fcn32s": (functools.partial(torchfcn_model, "fcn32s"), "torchfcn FCN32s"),
    "torchfcn-fcn16s": (functools.partial(torchfcn_model, "fcn16s"), "torchfcn FCN16s"),
    "torchfcn-fcn8s": (functools.partial(torchfcn_model, "fcn8s"), "torchfcn FCN8s"),
    "tv-fcn_resnet50": (torchvision_fcn_resnet50, "torchvision fcn_resnet50"),
}


def build_peer(name: str, num_classes: int = 21) -> nn.Module:
    """Build peer ``name`` (a key of ``PEERS``) with random weights, in eval mode.

    Raises:
        ValueError: unknown name.
        PeerUnavailable: its package is not installed.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {list(PEERS)}")
    return PEERS[name][0](num_classes).eval()


def peers_for(arch: str, backbone: str) -> list[str]:
    """The peers an fcnseg configuration is compared with: torchfcn's network of the same head
    for VGG16 (the reference port), and torchvision's fcn_resnet50 always."""
    names = []
    if backbone.startswith("vgg16"):
        names.append("torchfcn-" + ("fcn8s" if arch == "fcn8s_atonce" else arch))
    names.append("tv-fcn_resnet50")
    return names


# --------------------------------------------------------------------------- measuring


def parse_size(text: str | Iterable[int], name: str = "size") -> tuple[int, int]:
    """``"500x500"``, ``"360x480"`` (height x width), ``"512"`` or ``(h, w)`` -> ``(h, w)``.

    ``name`` (e.g. the command-line flag) starts the error message.
    """
    if not isinstance(text, str):
        h, w = text
        return int(h), int(w)
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name}: expected HxW such as 500x500, got {text!r}") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"{name}: expected HxW with positive sides, got {text!r}")
    return dims[0], dims[1]


class _Timer:
    """Wall-clock timing on CPU, CUDA events on GPU (milliseconds)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def time(self, fn: Callable[[], Any], warmup: int, repeat: int) -> list[float]:
        for _ in range(warmup):
            fn()
        self._sync()
        times = []
        for _ in range(repeat):
            if self.cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return times

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def autocast_for(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` to ``dtype`` on ``device``, or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def gemm_kernels(
    device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32", n: int | None = None
) -> dict[str, Callable[[], Any]]:
    """The dense ``n x n`` matrix products this machine offers, by name, ready to time.

    ``torch.mm`` everywhere (MKL on CPU, cuBLAS on GPU); on a CPU whose PyTorch has oneDNN,
    also oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``), the kernel
    ``fcnseg.models.onednn`` runs fc6/fc7 on. Which is faster depends on the CPU (on the
    project's AMD EPYC machine oneDNN's, by more than 2x: benchmarks/README.md).
    """
    from fcnseg.models.onednn import available as onednn_available

    device = torch.device(device)
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    kernels: dict[str, Callable[[], Any]] = {"torch.mm": lambda: torch.mm(a, b)}
    if device.type == "cpu" and onednn_available():
        kernels["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return kernels


def gemm_peak(
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "fp32",
    n: int | None = None,
    repeat: int = 5,
    detail: bool = False,
) -> float | dict[str, float]:
    """Dense matrix-product throughput of this machine in GFLOP/s (median of ``repeat`` runs).

    The faster of ``gemm_kernels`` (``torch.mm``, and oneDNN's inner product on CPU) on two
    ``n x n`` matrices (default 2048 on CPU, 8192 on GPU) in ``dtype``: 2 n^3 FLOPs each. This
    is the practical ceiling a convolution network's FLOPs are compared with
    (``peak_fraction``). ``detail=True`` returns ``{kernel name: GFLOP/s}`` instead.
    """
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    timer = _Timer(device)
    rates = {
        name: 2 * n**3 / (statistics.median(timer.time(fn, warmup=2, repeat=repeat)) / 1e3) / 1e9
        for name, fn in gemm_kernels(device, dtype, n).items()
    }
    return rates if detail else max(rates.values())


def time_interleaved(
    cases: dict[str, Callable[[], Any]],
    rounds: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Time several callables in alternation (round robin, ``rounds`` timed calls each).

    On a shared machine the load changes during a run; interleaving spreads it evenly over
    the cases so their *ratios* stay meaningful. Returns ``{name: {"ms": median, "ms_min": min}}``.
    """
    timer = _Timer(torch.device(device))
    for fn in cases.values():
        timer.time(fn, warmup, 0)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name] += timer.time(fn, 0, 1)
    return {n: {"ms": statistics.median(t), "ms_min": min(t)} for n, t in times.items()}


def make_train_step(
    net: nn.Module, images: torch.Tensor, target: torch.Tensor, dtype: str = "fp32"
) -> Callable[[], None]:
    """One training step as a callable: forward, per-pixel cross-entropy (ignore 255),
    backward, SGD (momentum 0.9) step, on fixed ``images (N, 3, H, W)`` / ``target (N, H, W)``.
    Puts ``net`` in train mode. ``dtype`` ``bf16``/``fp16`` autocasts (fp16 with a GradScaler)."""
    dev, amp = images.device, DTYPES[dtype]
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-10, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == torch.float16)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_for(dev, amp):
            loss = F.cross_entropy(net(images), target, ignore_index=255)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def memory_mapped_copy(model: nn.Module, folder: str | Path) -> nn.Module:
    """``model`` saved to ``folder/model.pt`` and loaded back with ``mmap=True``: the same
    weights, file-backed, as the low-memory mode (``onednn_streamed``) needs them. The folder
    may be removed afterwards on Linux (mapped pages stay valid)."""
    from fcnseg.engine.checkpoint import load_model, save_model

    path = save_model(model, Path(folder) / "model.pt")
    return load_model(path, mmap=True)


def _onednn_flop_formulas() -> dict:
    """FlopCounterMode formulas for the oneDNN ops fcnseg calls directly (it only knows aten's):
    the inner product (fc6/fc7 as matrix products) and the fused convolution."""
    ops = getattr(torch.ops, "mkldnn", None)
    if ops is None or not hasattr(ops, "_linear_pointwise"):
        return {}

    def linear(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]

    def conv(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        # per output element: (C_in / groups) * kh * kw multiply-adds
        return 2 * math.prod(out_shape) * math.prod(w_shape[1:])

    formulas = {ops._linear_pointwise: linear}  # keyed by overload packet
    if hasattr(ops, "_convolution_pointwise"):
        formulas[ops._convolution_pointwise] = conv
    return formulas


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward of ``model`` on ``x`` (FlopCounterMode: 2 per multiply-add),
    the oneDNN ops that fcnseg calls directly included."""
    counter = FlopCounterMode(display=False, custom_mapping=_onednn_flop_formulas())
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops())


def _read_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _max_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _peak_rss_mib() -> float:
    hwm = _read_status_kib("VmHWM")
    return _max_rss_mib() if hwm is None else hwm / 1024  # not Linux: the lifetime peak


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU/GPU, threads, library versions, load."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _build(
    model: str,
    backbone: str,
    num_classes: int,
    pad100: bool,
    peer: str | None,
    weights: str | None,
) -> nn.Module:
    if peer is not None:
        return build_peer(peer, num_classes)
    from fcnseg.models import build_model

    return build_model(
        model, backbone=backbone, num_classes=num_classes, pad100=pad100, weights=weights
    ).eval()


def run_benchmark(
    model: str = "fcn8s",
    *,
    backbone: str = "vgg16",
    size: str | tuple[int, int] = (500, 500),
    batch: int = 1,
    pad100: bool = False,
    num_classes: int = 21,
    device: str = "cpu",
    dtype: str = "fp32",
    channels_last: bool = False,
    optimize: bool | str = False,
    train: bool = False,
    inference: bool = True,
    train_batch: int | None = None,
    train_size: str | tuple[int, int] | None = None,
    peer: str | None = None,
    weights: str | None = None,
    warmup: int = 1,
    repeat: int = 5,
    train_repeat: int | None = None,
    peak: bool = True,
    isolate: bool = False,
    module: nn.Module | None = None,
) -> dict[str, Any]:
    """Measure one configuration and return its figures (see the module docstring for keys).

    Args:
        model, backbone, pad100, num_classes, weights: the fcnseg model (``build_model``).
        size: input ``(H, W)`` or ``"HxW"``; batch: images per forward.
        device: ``"cpu"`` or ``"cuda"``; dtype: ``"fp32"``, or ``"bf16"``/``"fp16"`` (autocast).
        channels_last: NHWC memory format for the model and the input.
        optimize: apply ``fcnseg.models.optimize.optimize_for_inference`` (inference only):
            ``True`` times its candidates and keeps the fastest; a candidate's name
            (``"onednn"`` ...) builds just that one (a fair RSS figure: no other candidate's
            memory in the process).
        train: also time a training step (on ``train_batch`` x ``train_size``, default the
            inference batch and size); inference: time inference (on by default).
        peer: measure a peer (``PEERS``) instead of an fcnseg model.
        warmup, repeat, train_repeat: untimed and timed runs.
        peak: measure the GEMM peak in the same process (``gemm_peak_gflops``,
            ``peak_fraction``).
        isolate: run everything in a fresh ``python -m fcnseg.bench`` process (fair RSS).
        module: measure this module instead of building one (the library/test hook).

    Raises:
        ValueError: unknown names or impossible combinations; ``PeerUnavailable``.
    """
    kwargs = {k: v for k, v in locals().items() if k not in ("isolate", "module")}
    kwargs["size"] = parse_size(size)
    if train_size is not None:
        kwargs["train_size"] = parse_size(train_size)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if isolate:
        if module is not None:
            raise ValueError("isolate=True rebuilds the model; it cannot take module=")
        return _run_isolated(kwargs)
    return _measure(module=module, **kwargs)


def _run_isolated(kwargs: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "fcnseg.bench", json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark subprocess failed ({proc.returncode}): {tail[0]}")
    return json.loads(lines[-1])


def _measure(
    model: str,
    backbone: str,
    size: tuple[int, int],
    batch: int,
    pad100: bool,
    num_classes: int,
    device: str,
    dtype: str,
    channels_last: bool,
    optimize: bool | str,
    train: bool,
    inference: bool,
    train_batch: int | None,
    train_size: tuple[int, int] | None,
    peer: str | None,
    weights: str | None,
    warmup: int,
    repeat: int,
    train_repeat: int | None,
    peak: bool,
    module: nn.Module | None,
) -> dict[str, Any]:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    amp = DTYPES[dtype]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    timer = _Timer(dev)
    net = (
        module
        if module is not None
        else _build(model, backbone, num_classes, pad100, peer, weights)
    )
    mapped_dir = None
    if optimize == "onednn_streamed" and module is None and peer is None:
        import shutil
        import tempfile

        mapped_dir = tempfile.mkdtemp(prefix="fcnseg-bench-")
        net = memory_mapped_copy(net, mapped_dir)  # the low-memory mode needs file-backed weights
    net = net.to(dev, memory_format=fmt).eval()
    name = peer or (
        f"fcnseg-{model}-{backbone}"
        + ("-pad100" if pad100 else "")
        + ("-lowmem" if optimize == "onednn_streamed" else "-opt" if optimize else "")
    )
    result: dict[str, Any] = {
        "name": name,
        "model": peer or model,
        "backbone": None if peer else backbone,
        "pad100": None if peer else pad100,
        "size": list(size),
        "batch": batch,
        "device": str(dev),
        "dtype": dtype,
        "channels_last": channels_last,
        "optimize": optimize,
        "params": sum(p.numel() for p in net.parameters()),
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=gen).to(dev).contiguous(memory_format=fmt)

    if inference:
        runner = net
        if optimize:
            from fcnseg.models.optimize import optimize_for_inference

            trainable = [p.requires_grad for p in net.parameters()]  # restored for train
            runner = optimize_for_inference(
                net,
                channels_last=True if channels_last else None,
                candidate=optimize if isinstance(optimize, str) else None,
                example=x,
            )
            result["optimize_choice"] = runner.choice
            result["optimize_candidates_ms"] = runner.timings_ms
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        rss_before = (_read_status_kib("VmRSS") or 0) / 1024
        rss_reset = _reset_peak_rss()

        def infer() -> None:
            with torch.inference_mode(), autocast_for(dev, amp):
                runner(x)

        times = timer.time(infer, warmup, repeat)
        med = statistics.median(times)
        result.update(
            latency_ms=med,
            latency_ms_min=min(times),
            images_per_s=batch / (med / 1e3),
        )
        if dev.type == "cuda":
            result["peak_mem_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
        else:
            result["rss_before_mib"] = rss_before
            result["peak_rss_mib"] = _peak_rss_mib()
            result["peak_rss_is_inference_only"] = rss_reset
        del runner
        # counted after the timed runs, so the FLOP counter's own forward is not in the RSS peak
        result["gflops"] = count_flops(net, x) / 1e9
        result["achieved_gflops_per_s"] = result["gflops"] / (med / 1e3)
        if optimize:
            for p, flag in zip(net.parameters(), trainable, strict=True):
                p.requires_grad_(flag)

    if train:
        tb = train_batch or batch
        ts = train_size or size
        result["train_batch"], result["train_size"] = tb, list(ts)
        xt = torch.randn(tb, 3, *ts, generator=gen).to(dev).contiguous(memory_format=fmt)
        target = torch.randint(0, num_classes, (tb, *ts), generator=gen).to(dev)
        step = make_train_step(net, xt, target, dtype)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = timer.time(step, warmup, train_repeat or repeat)
        med = statistics.median(times)
        result.update(
            train_step_ms=med,
            train_step_ms_min=min(times),
            train_images_per_s=tb / (med / 1e3),
        )
        if dev.type == "cuda":
            result["train_peak_mem_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
        net.eval()

    if peak:
        # "fp32" on CPU/GPU compares with the fp32 GEMM; autocast runs its GEMMs in ``dtype``.
        result["gemm_peak_gflops"] = gemm_peak(dev, amp)
        if "achieved_gflops_per_s" in result:
            result["peak_fraction"] = result["achieved_gflops_per_s"] / result["gemm_peak_gflops"]
    if dev.type == "cpu":
        result["max_rss_mib"] = _max_rss_mib()  # whole process lifetime, construction included
    result["machine"] = machine_info()
    if mapped_dir is not None:
        shutil.rmtree(mapped_dir, ignore_errors=True)  # mapped pages stay valid on Linux
    return result


# --------------------------------------------------------------------------- other benches


def bench_confusion_matrix(
    num_classes: int = 21,
    shape: tuple[int, ...] = (8, 512, 512),
    device: str = "cpu",
    repeat: int = 7,
) -> dict[str, Any]:
    """Pixels/s of ``ConfusionMatrix.update`` on integer labels (5 % ignore pixels)."""
    from fcnseg.metrics import ConfusionMatrix

    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, num_classes, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.05] = 255
    pred = torch.randint(0, num_classes, shape, generator=gen)
    target, pred = target.to(dev), pred.to(dev)
    cm = ConfusionMatrix(num_classes)
    times = _Timer(dev).time(lambda: cm.update(pred, target), warmup=2, repeat=repeat)
    med = statistics.median(times)
    return {
        "name": "ConfusionMatrix.update",
        "pixels": math.prod(shape),
        "num_classes": num_classes,
        "ms": med,
        "mpixels_per_s": math.prod(shape) / (med / 1e3) / 1e6,
        "mpixels_per_s_max": math.prod(shape) / (min(times) / 1e3) / 1e6,
    }


def bench_data_loading(
    dataset: Any,
    batch_size: int,
    workers: int,
    batches: int = 20,
    collate_fn: Callable | None = None,
) -> dict[str, Any]:
    """Images/s of decode + augment through a ``DataLoader`` (shuffled, ``workers`` processes).

    The clock starts at the first batch (worker start-up is excluded, as it is paid once per
    epoch and overlaps training) and stops after ``batches`` more batches.
    """
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_fn,
        drop_last=True,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
    )
    seen, t0 = 0, None
    it = iter(loader)
    for i in range(batches + 1):
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, _ = next(it)
        if i == 0:
            t0 = time.perf_counter()
            continue
        seen += images.shape[0]
    elapsed = time.perf_counter() - t0
    return {
        "name": "data loading",
        "batch_size": batch_size,
        "workers": workers,
        "images": seen,
        "images_per_s": seen / elapsed,
    }


def bench_onnxruntime(
    net: nn.Module,
    size: tuple[int, int],
    batch: int = 1,
    warmup: int = 2,
    repeat: int = 10,
    path: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Export ``net`` to ONNX (TorchScript exporter, opset 17) and time it with ONNX Runtime's
    CPU provider. Returns latency, images/s and the max abs difference to PyTorch's output.

    Raises:
        ModuleNotFoundError: onnx / onnxruntime missing (``pip install fcnseg[export]``).
    """
    import tempfile

    import onnxruntime as ort

    net = net.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=gen)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(path) if path else Path(tmp) / "model.onnx"
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                net,
                (x,),
                str(onnx_path),
                input_names=["images"],
                output_names=["logits"],
                opset_version=17,
                dynamo=False,
            )
        sess = _ort_session(onnx_path, threads)
    feed = {"images": x.numpy()}
    times = _Timer(torch.device("cpu")).time(lambda: sess.run(None, feed), warmup, repeat)
    with torch.inference_mode():
        ref = net(x)
    diff = (torch.from_numpy(sess.run(None, feed)[0]) - ref).abs().max().item()
    med = statistics.median(times)
    return {
        "name": "onnxruntime-cpu",
        "size": list(size),
        "batch": batch,
        "latency_ms": med,
        "latency_ms_min": min(times),
        "images_per_s": batch / (med / 1e3),
        "max_abs_diff_vs_torch": diff,
        "onnxruntime": ort.__version__,
    }


def _ort_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bench_onnx_file(
    path: str | Path,
    size: tuple[int, int],
    batch: int = 1,
    warmup: int = 2,
    repeat: int = 10,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time an existing ONNX file (float32 or int8, e.g. from ``fcnseg export --int8``) with
    ONNX Runtime's CPU provider on a random ``(batch, 3, H, W)`` input.

    Returns a row for :func:`format_table`: ``name`` (the file name, ``[int8]`` when it
    holds ``QuantizeLinear`` nodes), ``size``, ``batch``, ``latency_ms`` (median),
    ``latency_ms_min``, ``images_per_s``, ``threads``, ``onnxruntime``.

    Raises:
        FileNotFoundError: no such file.
        ModuleNotFoundError: onnx / onnxruntime missing (``pip install 'fcnseg[export]'``).
    """
    from fcnseg.export import require_onnx

    onnx, ort = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    graph = onnx.load(str(path), load_external_data=False).graph
    int8 = any(node.op_type == "QuantizeLinear" for node in graph.node)
    threads = threads or torch.get_num_threads()
    sess = _ort_session(path, threads)
    gen = torch.Generator().manual_seed(0)
    feed = {"images": torch.randn(batch, 3, *size, generator=gen).numpy()}
    times = _Timer(torch.device("cpu")).time(lambda: sess.run(None, feed), warmup, repeat)
    med = statistics.median(times)
    return {
        "name": f"{path.name}{' [int8]' if int8 else ''}",
        "size": list(size),
        "batch": batch,
        "latency_ms": med,
        "latency_ms_min": min(times),
        "images_per_s": batch / (med / 1e3),
        "threads": threads,
        "onnxruntime": ort.__version__,
    }


# --------------------------------------------------------------------------- reporting

_COLUMNS = [
    ("name", "config", "{}"),
    ("size", "HxW", "{0[0]}x{0[1]}"),
    ("batch", "N", "{}"),
    ("params", "Mparams", "{:.1f}", 1e-6),
    ("gflops", "GFLOPs", "{:.1f}"),
    ("latency_ms", "ms (med)", "{:.1f}"),
    ("latency_ms_min", "ms (min)", "{:.1f}"),
    ("images_per_s", "img/s", "{:.2f}"),
    ("peak_fraction", "% GEMM", "{:.0%}"),
    ("train_step_ms", "train ms", "{:.0f}"),
    ("train_images_per_s", "train img/s", "{:.2f}"),
    ("peak_rss_mib", "RSS MiB", "{:.0f}"),
    ("max_rss_mib", "max RSS", "{:.0f}"),
    ("peak_mem_mib", "GPU MiB", "{:.0f}"),
]
_RATIO_KEYS = ["latency_ms", "images_per_s", "train_images_per_s", "peak_rss_mib", "gflops"]


def _cell(row: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and scale != 1.0:
        value = value * scale
    return fmt.format(value)


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """A text (or Markdown) table of ``run_benchmark`` results, then the ratios of the first
    row (fcnseg) to every other row (its peers): latency, images/s, train images/s, RSS, FLOPs.
    """
    cols = [c for c in _COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    header = [c[1] for c in cols]
    body = [[_cell(r, c[0], *c[2:]) for c in cols] for r in rows]
    lines = _render(header, body, markdown)
    if len(rows) > 1:
        base = rows[0]
        keys = [k for k in _RATIO_KEYS if base.get(k)]
        rheader = [f"{base['name']} / peer"] + [f"{k} ratio" for k in keys]
        rbody = []
        for peer in rows[1:]:
            cells = [peer["name"]]
            for k in keys:
                cells.append(f"{base[k] / peer[k]:.2f}" if peer.get(k) else "-")
            rbody.append(cells)
        lines += [""] + _render(rheader, rbody, markdown)
    return "\n".join(lines)


def _render(header: list[str], body: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return out + ["| " + " | ".join(row) + " |" for row in body]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header)] + [fmt.format(*row) for row in body]


def _main(argv: list[str]) -> int:
    """``python -m fcnseg.bench '<json kwargs>'``: one isolated measurement, JSON on stdout."""
    kwargs = json.loads(argv[0])
    result = run_benchmark(**kwargs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
