"""The comparison harness: latency, throughput, FLOPs, memory and efficiency of one configuration.

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
  process: ``run_benchmark(..., isolate=True)`` does that (``python -m benchmarks.harness``).

Peers (``peer="torchfcn-fcn8s"`` ...) are loaded by ``build_peer``: pytorch-fcn's ``torchfcn``
(``pip install --no-deps torchfcn``; its ``fcn`` helper is stubbed in ``sys.modules``) and
torchvision's ``fcn_resnet50`` (``benchmarks/peers.py``). They are benchmark-only extras
(``pip install fcnseg[bench]``), never runtime dependencies.

The timing, memory and training-step pieces are the package's own (``fcnseg.bench.measure``, what
``fcnseg bench`` runs); this module adds the peers, FLOPs, the GEMM peak and the machine.

Also here: ``bench_confusion_matrix`` (pixels/s of ``ConfusionMatrix.update``),
``bench_data_loading`` (decode + augment images/s of a dataset through a ``DataLoader``) and
``bench_onnxruntime`` (the same model exported to ONNX, run with ONNX Runtime's CPU provider).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.peers import PEERS, PeerUnavailable, build_peer, peers_for
from fcnseg.accel.precision import PRECISIONS, precision_dtype, resolve_precision
from fcnseg.accel.timing import Timer, time_interleaved
from fcnseg.bench import (
    build_fcnseg,
    config_name,
    format_table,
    machine_info,
    make_train_step,
    measure,
    memory_mapped_copy,
    ort_session,
    run_isolated,
)
from fcnseg.config import parse_size

__all__ = [
    "PEERS",
    "PeerUnavailable",
    "bench_confusion_matrix",
    "bench_data_loading",
    "bench_onnxruntime",
    "build_peer",
    "count_flops",
    "format_table",
    "gemm_kernels",
    "gemm_peak",
    "machine_info",
    "make_train_step",
    "ort_gemm_peak",
    "memory_mapped_copy",
    "parse_size",
    "peers_for",
    "run_benchmark",
    "time_interleaved",
]


# --------------------------------------------------------------------------- measuring


def gemm_kernels(
    device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32", n: int | None = None
) -> dict[str, Callable[[], Any]]:
    """The dense ``n x n`` matrix products this machine offers, by name, ready to time.

    ``torch.mm`` everywhere (MKL on CPU, cuBLAS on GPU); on a CPU whose PyTorch has oneDNN,
    also oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``), the kernel
    ``fcnseg.accel.onednn`` runs fc6/fc7 on. Which is faster depends on the CPU (on the
    project's AMD EPYC machine oneDNN's, by more than 2x: benchmarks/README.md).
    """
    from fcnseg.accel.onednn import available as onednn_available

    device = torch.device(device)
    dtype = precision_dtype(dtype) if isinstance(dtype, str) else dtype
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
    timer = Timer(device)
    rates = {
        name: 2 * n**3 / (statistics.median(timer.time(fn, warmup=2, repeat=repeat)) / 1e3) / 1e9
        for name, fn in gemm_kernels(device, dtype, n).items()
    }
    return rates if detail else max(rates.values())


def ort_gemm_peak(
    dtype: str = "int8", n: int = 2048, threads: int | None = None, repeat: int = 5
) -> float:
    """ONNX Runtime's dense matrix-product throughput on this CPU, in GOP/s (2 n^3 per product,
    median of ``repeat``): the limit an ONNX Runtime graph is compared with.

    ``"int8"`` times ``MatMulInteger`` (uint8 activations x int8 weights -> int32);
    ``"int8_conv"`` the same product as a 1x1 ``QLinearConv`` (n input and n output channels
    over n pixels, per-channel int8 weights, uint8 in and out): the kernel ONNX Runtime runs a
    QDQ graph's convolutions on, which is faster than ``MatMulInteger`` on some CPUs;
    ``"fp32"`` times ``MatMul``. The weights are a constant as in a network; ``threads``
    intra-op threads.

    Raises:
        ModuleNotFoundError: onnx / onnxruntime missing (``pip install fcnseg[export]``).
        ValueError: an unknown dtype.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fcnseg.bench import ort_session

    rng = np.random.default_rng(0)
    consts = []  # the quantization parameters of QLinearConv
    if dtype == "int8":
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 128, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        elem, out_elem = TensorProto.UINT8, TensorProto.INT32
    elif dtype == "int8_conv":
        a = rng.integers(0, 256, (1, n, 32, n // 32), dtype=np.uint8)
        b = rng.integers(-127, 128, (n, n, 1, 1), dtype=np.int8)
        consts = [
            numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
            numpy_helper.from_array(np.full(n, 0.01, np.float32), "b_scale"),
            numpy_helper.from_array(np.zeros(n, np.int8), "b_zero"),
            numpy_helper.from_array(np.array(0.5, np.float32), "y_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
        ]
        names = ["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "y_scale", "y_zero"]
        node = helper.make_node("QLinearConv", names, ["y"])
        elem = out_elem = TensorProto.UINT8
    elif dtype == "fp32":
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        elem = out_elem = TensorProto.FLOAT
    else:
        raise ValueError(f"dtype must be 'int8', 'int8_conv' or 'fp32', got {dtype!r}")
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("a", elem, list(a.shape))],
        [helper.make_tensor_value_info("y", out_elem, None)],
        initializer=[numpy_helper.from_array(b, "b"), *consts],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save(model, str(path))
        sess = ort_session(path, threads)
    times = Timer(torch.device("cpu")).time(lambda: sess.run(None, {"a": a}), 2, repeat)
    return 2 * n**3 / (statistics.median(times) / 1e3) / 1e9


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


def _build(
    model: str,
    backbone: str,
    num_classes: int,
    pad100: bool,
    peer: str | None,
    weights: str | None,
    device: str,
    context: str | None = None,
) -> nn.Module:
    if peer is not None:
        return build_peer(peer, num_classes)
    return build_fcnseg(model, backbone, num_classes, pad100, weights, device, context)


def run_benchmark(
    model: str = "fcn8s",
    *,
    backbone: str = "vgg16",
    size: str | tuple[int, int] = (500, 500),
    batch: int = 1,
    pad100: bool = False,
    num_classes: int = 21,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    optimize: bool | str = False,
    train: bool = False,
    inference: bool = True,
    train_batch: int | None = None,
    train_size: str | tuple[int, int] | None = None,
    peer: str | None = None,
    weights: str | None = None,
    context: str | None = None,
    warmup: int = 1,
    repeat: int = 5,
    train_repeat: int | None = None,
    peak: bool = True,
    isolate: bool = False,
    module: nn.Module | None = None,
) -> dict[str, Any]:
    """Measure one configuration and return its figures (see the module docstring for keys).

    Args:
        model, backbone, pad100, num_classes, weights, context: the fcnseg model (``build_model``).
        size: input ``(H, W)`` or ``"HxW"``; batch: images per forward.
        device: ``"cpu"`` or ``"cuda"``; precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or
            ``"auto"`` (the precision policy, :mod:`fcnseg.accel.precision`).
        channels_last: NHWC memory format for the model and the input.
        optimize: apply ``fcnseg.accel.optimize.optimize_for_inference`` (inference only):
            ``True`` times its candidates and keeps the fastest; a candidate's name
            (``"onednn"`` ...) builds just that one (a fair RSS figure: no other candidate's
            memory in the process).
        train: also time a training step (on ``train_batch`` x ``train_size``, default the
            inference batch and size); inference: time inference (on by default).
        peer: measure a peer (``PEERS``) instead of an fcnseg model.
        warmup, repeat, train_repeat: untimed and timed runs.
        peak: measure the GEMM peak in the same process (``gemm_peak_gflops``,
            ``peak_fraction``).
        isolate: run everything in a fresh ``python -m benchmarks.harness`` process (fair RSS).
        module: measure this module instead of building one (the library/test hook).

    Raises:
        ValueError: unknown names or impossible combinations; ``PeerUnavailable``.
    """
    kwargs = {k: v for k, v in locals().items() if k not in ("isolate", "module")}
    kwargs["size"] = parse_size(size)
    if train_size is not None:
        kwargs["train_size"] = parse_size(train_size)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if isolate:
        if module is not None:
            raise ValueError("isolate=True rebuilds the model; it cannot take module=")
        return run_isolated(kwargs, "benchmarks.harness")
    return _measure(module=module, **kwargs)


def _measure(
    model: str,
    backbone: str,
    size: tuple[int, int],
    batch: int,
    pad100: bool,
    num_classes: int,
    device: str,
    precision: str,
    channels_last: bool,
    optimize: bool | str,
    train: bool,
    inference: bool,
    train_batch: int | None,
    train_size: tuple[int, int] | None,
    peer: str | None,
    weights: str | None,
    context: str | None,
    warmup: int,
    repeat: int,
    train_repeat: int | None,
    peak: bool,
    module: nn.Module | None,
) -> dict[str, Any]:
    net = (
        module
        if module is not None
        else _build(model, backbone, num_classes, pad100, peer, weights, device, context)
    )
    timing = dict(
        size=size, batch=batch, num_classes=num_classes, device=device, precision=precision,
        channels_last=channels_last, optimize=optimize, train=train, inference=inference,
        train_batch=train_batch, train_size=train_size, warmup=warmup, repeat=repeat,
        train_repeat=train_repeat,
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        if optimize == "onednn_streamed" and module is None and peer is None:
            import tempfile

            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="fcnseg-bench-"))
            net = memory_mapped_copy(net, folder)  # the low-memory mode needs file-backed weights
        result = measure(net, **timing)
    result = {
        "name": peer or config_name(model, backbone, pad100, optimize, context),
        "model": peer or model,
        "backbone": None if peer else backbone,
        "pad100": None if peer else pad100,
        **result,
    }
    dev = torch.device(device)
    amp = precision_dtype(resolve_precision(precision, dev))
    if inference:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))
        x = x.to(dev).contiguous(memory_format=fmt)
        # counted after the timed runs, so the FLOP counter's own forward is not in the RSS peak
        result["gflops"] = count_flops(net, x) / 1e9
        result["achieved_gflops_per_s"] = result["gflops"] / (result["latency_ms"] / 1e3)
    if peak:
        # fp32 compares with the fp32 GEMM; autocast runs its GEMMs in the precision's dtype
        result["gemm_peak_gflops"] = gemm_peak(dev, amp)
        if "achieved_gflops_per_s" in result:
            result["peak_fraction"] = result["achieved_gflops_per_s"] / result["gemm_peak_gflops"]
    result["machine"] = machine_info()
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
    times = Timer(dev).time(lambda: cm.update(pred, target), warmup=2, repeat=repeat)
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
        sess = ort_session(onnx_path, threads)
    feed = {"images": x.numpy()}
    times = Timer(torch.device("cpu")).time(lambda: sess.run(None, feed), warmup, repeat)
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


def _main(argv: list[str]) -> int:
    """``python -m benchmarks.harness '<json kwargs>'``: one isolated measurement (JSON)."""
    kwargs = json.loads(argv[0])
    result = run_benchmark(**kwargs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
