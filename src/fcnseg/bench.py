"""``fcnseg bench``: latency, throughput and memory of one fcnseg configuration.

``run_benchmark("fcn8s", backbone="vgg16", size=(500, 500))`` builds the model, times
inference (and, with ``train=True``, a training step) and returns a flat dict:

- ``params``; inference: ``latency_ms`` (median) and ``latency_ms_min`` over ``repeat`` timed runs
  after ``warmup`` runs, under ``torch.inference_mode``; ``images_per_s`` (from the median); CUDA
  events on GPU;
- training (``train=True``): ``train_step_ms`` (forward + cross-entropy + backward + SGD step,
  median and min) and ``train_images_per_s``;
- memory: ``peak_rss_mib`` on CPU, the peak resident set of the process while it ran inference
  (``VmHWM`` from ``/proc/self/status``, reset after the model is built where Linux allows, so it
  counts weights + activations, not the construction); ``peak_mem_mib`` on GPU
  (``torch.cuda.max_memory_allocated``). For a fair RSS figure run each configuration in a fresh
  process: ``run_benchmark(..., isolate=True)``.

The comparison harness (peers torchfcn and torchvision, FLOPs, the machine's GEMM peak, suites,
the figures of ``benchmarks/README.md``) is not part of the package: it lives in the repository's
``benchmarks/`` (``python -m benchmarks.run``) and builds on :func:`measure` below.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.accel.optimize import optimize_for_inference
from fcnseg.accel.precision import (
    channels_last_pays,
    cpu_flags,
    cpu_isa,
    precision_autocast,
    precision_record,
    resolve_precision,
)
from fcnseg.accel.timing import Timer
from fcnseg.accel.training import for_training
from fcnseg.config import parse_size
from fcnseg.engine.checkpoint import load_model, save_model
from fcnseg.export.int8 import export_onnx_int8
from fcnseg.inference import Predictor
from fcnseg.models import build_model

__all__ = [
    "bench_aoti_file",
    "bench_onnx_file",
    "build_fcnseg",
    "config_name",
    "format_table",
    "machine_info",
    "make_train_step",
    "max_rss_mib",
    "compare_runtimes",
    "measure",
    "memory_mapped_copy",
    "ort_session",
    "parse_size",
    "read_status_kib",
    "run_benchmark",
    "run_isolated",
    "vector_isa",
]


def make_train_step(
    net: nn.Module, images: torch.Tensor, target: torch.Tensor, precision: str = "fp32"
) -> Callable[[], None]:
    """One training step as a callable: forward, per-pixel cross-entropy (ignore 255),
    backward, SGD (momentum 0.9) step, on fixed ``images (N, 3, H, W)`` / ``target (N, H, W)``.
    Puts ``net`` in train mode. ``precision`` (resolved: fp32, bf16, fp16) autocasts as the
    trainer does (fp16 with a GradScaler)."""
    dev = images.device
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-10, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with precision_autocast(precision, dev):
            loss = F.cross_entropy(net(images), target, ignore_index=255)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def memory_mapped_copy(model: nn.Module, folder: str | Path) -> nn.Module:
    """``model`` saved to ``folder/model.pt`` and loaded back with ``mmap=True``: the same
    weights, file-backed, as the low-memory mode (``onednn_streamed``) needs them. The folder
    may be removed afterwards on Linux (mapped pages stay valid)."""
    path = save_model(model, Path(folder) / "model.pt")
    return load_model(path, mmap=True)


def read_status_kib(field: str) -> int | None:
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


def max_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _peak_rss_mib() -> float:
    hwm = read_status_kib("VmHWM")
    return max_rss_mib() if hwm is None else hwm / 1024  # not Linux: the lifetime peak


def vector_isa() -> dict[str, Any]:
    """The vector ISA the kernels run with: ``isa`` (ATen's choice, e.g. ``"AVX512"`` or
    ``"AVX2"``: lowered by ``ATEN_CPU_CAPABILITY``), ``cpu_avx512`` (whether the CPU has it)
    and the oneDNN / MKL caps in force (``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``)."""
    return {
        "isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_isa": cpu_isa(),  # AMX / AVX512-BF16 / AVX-512 / AVX2, after the caps
        "cpu_avx512": "avx512f" in cpu_flags(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "mkl_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
    }


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
        **vector_isa(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def measure(
    net: nn.Module,
    *,
    size: str | tuple[int, int] = (500, 500),
    batch: int = 1,
    num_classes: int = 21,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool | None = None,
    optimize: bool | str = False,
    train: bool = False,
    inference: bool = True,
    train_batch: int | None = None,
    train_size: str | tuple[int, int] | None = None,
    warmup: int = 1,
    repeat: int = 5,
    train_repeat: int | None = None,
) -> dict[str, Any]:
    """Time ``net`` (any module mapping ``(N, 3, H, W)`` to ``(N, C, H, W)``) on random inputs.

    Args:
        net: the module, moved to ``device`` (and to channels_last with ``channels_last``).
        size: input ``(H, W)`` or ``"HxW"``; batch: images per forward.
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``: the precision policy
            (:mod:`fcnseg.accel.precision`); inference runs through the inference core
            (:class:`fcnseg.inference.Predictor`), the training step autocasts as the trainer.
        channels_last: NHWC memory format for the model and the input; ``None``: where the
            policy says it pays (bf16 on the CPU).
        optimize: in fp32, run inference through ``fcnseg.accel.optimize_for_inference``:
            ``True`` times its candidates and keeps the fastest; a candidate's name builds just
            that one. In bf16: the inference core's fast copy (oneDNN layers, bf16 weights).
        train: also time a training step (``num_classes`` random labels, on ``train_batch`` x
            ``train_size``, default the inference batch and size); inference: time inference.
        warmup, repeat, train_repeat: untimed and timed runs.

    Returns:
        A dict: ``size``, ``batch``, ``device``, ``precision`` (resolved), ``cpu_isa`` (CPU),
        ``channels_last``, ``optimize``,
        ``params``; with inference ``latency_ms``, ``latency_ms_min``, ``images_per_s`` and
        ``peak_rss_mib`` (CPU) or ``peak_mem_mib`` (GPU); with train ``train_step_ms``,
        ``train_step_ms_min``, ``train_images_per_s``; on the CPU ``max_rss_mib``; ``machine``.

    Raises:
        ValueError: an unknown precision, or CUDA asked for without a GPU.
    """
    size = parse_size(size)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    precision = resolve_precision(precision, dev)
    if channels_last is None:
        channels_last = channels_last_pays(precision, dev)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    timer = Timer(dev)
    net = net.to(dev, memory_format=fmt).eval()
    result: dict[str, Any] = {
        "size": list(size),
        "batch": batch,
        **precision_record(precision, dev),
        "device": str(dev),
        "channels_last": channels_last,
        "optimize": optimize,
        "params": sum(p.numel() for p in net.parameters()),
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, *size, generator=gen).to(dev).contiguous(memory_format=fmt)

    if inference:
        runner = net
        if optimize and precision != "fp32":
            # the inference core's own fast copy in that precision (bf16: oneDNN layers with
            # pre-packed bf16 weights); optimize_for_inference's candidates are fp32
            result["optimize_choice"] = f"onednn_{precision}"
        elif optimize:
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
        rss_before = (read_status_kib("VmRSS") or 0) / 1024
        rss_reset = _reset_peak_rss()

        # the inference core, as predict / eval / serve run a model (inputs already normalised)
        fast = bool(optimize) and precision != "fp32"
        predictor = Predictor(runner, device=dev, precision=precision, fast=fast)
        if fast and predictor.net is runner:  # no fast copy in this precision on this CPU
            result["optimize_choice"] = "autocast"

        def infer() -> None:
            predictor.logits(x, normalized=True)

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
        predictor.close()
        del runner, predictor
        if optimize and precision == "fp32":
            for p, flag in zip(net.parameters(), trainable, strict=True):
                p.requires_grad_(flag)

    if train:
        tb = train_batch or batch
        ts = parse_size(train_size) if train_size is not None else size
        result["train_batch"], result["train_size"] = tb, list(ts)
        xt = torch.randn(tb, 3, *ts, generator=gen).to(dev).contiguous(memory_format=fmt)
        target = torch.randint(0, num_classes, (tb, *ts), generator=gen).to(dev)
        step = make_train_step(net, xt, target, precision)
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
    if dev.type == "cpu":
        result["max_rss_mib"] = max_rss_mib()  # whole process lifetime, construction included
    result["machine"] = machine_info()
    return result


def config_name(
    model: str, backbone: str, pad100: bool, optimize: bool | str, context: str | None = None
) -> str:
    """The row name of an fcnseg configuration (``fcnseg-fcn8s-vgg16-opt``,
    ``fcnseg-fcn8s-resnet18-global``)."""
    return (
        f"fcnseg-{model}-{backbone}"
        + ("-pad100" if pad100 else "")
        + (f"-{context}" if context else "")
        + ("-lowmem" if optimize == "onednn_streamed" else "-opt" if optimize else "")
    )


def build_fcnseg(
    model: str,
    backbone: str,
    num_classes: int,
    pad100: bool,
    weights: str | None,
    device: str,
    context: str | None = None,
) -> nn.Module:
    """The fcnseg model as training runs it (``fcnseg.accel.for_training``: fc6/fc7 as matrix
    products on the CPU), in eval mode; ``context`` as ``build_model``'s."""
    net = build_model(
        model,
        backbone=backbone,
        num_classes=num_classes,
        pad100=pad100,
        weights=weights,
        context=context,
    )
    return for_training(net, device).eval()


def run_benchmark(
    model: str = "fcn8s",
    *,
    backbone: str = "vgg16",
    pad100: bool = False,
    num_classes: int = 21,
    weights: str | None = None,
    context: str | None = None,
    optimize: bool | str = False,
    isolate: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Build one fcnseg configuration and :func:`measure` it (``kwargs`` go to ``measure``).

    Args:
        model, backbone, pad100, num_classes, weights, context: the model (``build_model``).
        optimize: see :func:`measure`; ``"onednn_streamed"`` first saves the model and loads
            it memory-mapped (the low-memory mode needs file-backed weights).
        isolate: measure in a fresh ``python -m fcnseg.bench`` process (a fair peak RSS).

    Returns:
        :func:`measure`'s dict plus ``name``, ``model``, ``backbone``, ``pad100``.

    Raises:
        ValueError: unknown names or impossible combinations.
    """
    config = dict(
        model=model, backbone=backbone, pad100=pad100, num_classes=num_classes, context=context
    )
    if isolate:
        for key in ("size", "train_size"):
            if kwargs.get(key) is not None:
                kwargs[key] = parse_size(kwargs[key])
        return run_isolated({**config, "weights": weights, "optimize": optimize, **kwargs})
    device = kwargs.get("device", "cpu")
    net = build_fcnseg(model, backbone, num_classes, pad100, weights, device, context)
    with tempfile.TemporaryDirectory(prefix="fcnseg-bench-") as mapped_dir:
        if optimize == "onednn_streamed":
            net = memory_mapped_copy(net, mapped_dir)
        result = measure(net, num_classes=num_classes, optimize=optimize, **kwargs)
    name = config_name(model, backbone, pad100, optimize, context)
    return {"name": name, **config, **result}


def run_isolated(kwargs: dict[str, Any], module: str = "fcnseg.bench") -> dict[str, Any]:
    """``module``'s ``run_benchmark(**kwargs)`` in a fresh ``python -m module`` process.

    Raises:
        RuntimeError: the process failed (the message holds its last line).
    """
    env = dict(os.environ)
    roots = [str(Path(__file__).resolve().parents[1]), os.getcwd()]  # fcnseg, and a checkout
    env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", module, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark subprocess failed ({proc.returncode}): {tail[0]}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- reporting

_COLUMNS = [
    ("name", "config", "{}"),
    ("size", "HxW", "{0[0]}x{0[1]}"),
    ("batch", "N", "{}"),
    ("precision", "precision", "{}"),
    ("cpu_isa", "CPU ISA", "{}"),
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


def ort_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (all graph optimisations, ``threads`` intra-op
    threads; default torch's)."""
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
    sess = ort_session(path, threads)
    gen = torch.Generator().manual_seed(0)
    feed = {"images": torch.randn(batch, 3, *size, generator=gen).numpy()}
    times = Timer(torch.device("cpu")).time(lambda: sess.run(None, feed), warmup, repeat)
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


def bench_aoti_file(path: str | Path, warmup: int = 2, repeat: int = 10) -> dict[str, Any]:
    """Time an AOTInductor package of ``fcnseg export --format aoti`` at the one size it was
    compiled for, on a random input (:class:`fcnseg.export.AotiModel`; it refuses a package
    compiled for instructions this CPU lacks).

    Returns a row for :func:`format_table`: ``name`` (the file name, ``[aoti ISA]``),
    ``size``, ``batch``, ``latency_ms`` (median), ``latency_ms_min``, ``images_per_s``,
    ``threads`` (this process's; the package's generated loops use ``compiled_threads``),
    ``precision`` (the package's) and ``cpu_isa`` (this CPU's).
    """
    from fcnseg.export.aoti import AotiModel

    package = AotiModel(path)
    n, _, h, w = package.size
    x = torch.randn(*package.size, generator=torch.Generator().manual_seed(0))
    times = Timer(torch.device("cpu")).time(lambda: package(x), warmup, repeat)
    med = statistics.median(times)
    return {
        "name": f"{Path(path).name} [aoti {package.isa}]",
        "size": [h, w],
        "batch": n,
        "latency_ms": med,
        "latency_ms_min": min(times),
        "images_per_s": n / (med / 1e3),
        "threads": torch.get_num_threads(),
        "compiled_threads": package.threads,
        "precision": package.precision,
        "cpu_isa": cpu_isa(),
    }


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


def compare_runtimes(
    model: nn.Module,
    size: tuple[int, int],
    calibration: str | Path,
    batches: Iterable[int] = (1, 8),
    *,
    threads: int = 2,
    warmup: int = 2,
    repeat: int = 10,
    calibration_count: int = 32,
    parity_data: tuple[str, str, str] | None = None,
    parity_count: int = 32,
    parity_scale: float = 1.0,
    reduce_range: bool | None = None,
    optimize: bool | str = True,
) -> dict:
    """One model, three runtimes, side by side: float32 PyTorch, float32 and int8 ONNX Runtime.

    The model is exported with :func:`fcnseg.export.export_onnx_int8` (calibrated on
    ``calibration`` at ``size``), then each batch size in ``batches`` is timed on the same random
    ``(N, 3, H, W)`` input shape by PyTorch (``fcnseg.accel.optimize_for_inference`` unless
    ``optimize`` is False; a candidate's name builds that one), by ONNX Runtime on the float32
    graph and on the int8 graph, all with ``threads`` threads (torch's own setting is restored
    afterwards). The ONNX files live in a temporary folder (``fcnseg export --int8`` keeps them).

    Args:
        model: an fcnseg model (its config gives the preprocessing for calibration).
        size: ``(H, W)`` of the timed inputs and of the calibration images.
        Other arguments: see :func:`fcnseg.export.export_onnx_int8` and :func:`measure`.

    Returns:
        ``rows`` (for :func:`format_table`: one per runtime and batch, each with
        ``runtime`` in ``"pytorch-fp32"``, ``"onnxruntime-fp32"``, ``"onnxruntime-int8"`` and
        ``speedup_vs_pytorch``), ``export`` (the :func:`fcnseg.export.export_onnx_int8`
        report, parity included) and ``machine``.

    Raises:
        ValueError: no batch sizes, a batch below 1, or a bad calibration folder.
        ModuleNotFoundError: onnx / onnxruntime missing (``pip install 'fcnseg[export]'``).
    """
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batches}")
    h, w = (int(v) for v in size)
    with _torch_threads(threads), tempfile.TemporaryDirectory(prefix="fcnseg-runtimes-") as tmp:
        report = export_onnx_int8(
            model,
            Path(tmp) / "model.int8.onnx",
            calibration,
            (1, 3, h, w),
            calibration_count=calibration_count,
            parity_data=parity_data,
            parity_count=parity_count,
            parity_scale=parity_scale,
            reduce_range=reduce_range,
            threads=threads,
        )
        name = f"{model.config['arch']}-{model.config['backbone']}"
        num_classes = int(model.config["num_classes"])
        rows = []
        for batch in batches:
            torch_row = measure(
                model, size=(h, w), batch=batch, num_classes=num_classes,
                optimize=optimize, warmup=warmup, repeat=repeat,
            )  # fmt: skip
            torch_row.pop("machine", None)
            group = [{**torch_row, "name": f"{name} pytorch-fp32", "runtime": "pytorch-fp32"}]
            for runtime, path in (("onnxruntime-fp32", report["fp32_path"]),
                                  ("onnxruntime-int8", report["path"])):  # fmt: skip
                row = bench_onnx_file(path, (h, w), batch, warmup, repeat, threads)
                group.append({**row, "name": f"{name} {runtime}", "runtime": runtime})
            for row in group:
                row["speedup_vs_pytorch"] = group[0]["latency_ms"] / row["latency_ms"]
            rows += group
    return {"rows": rows, "export": report, "machine": machine_info()}


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside, the caller's setting restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
