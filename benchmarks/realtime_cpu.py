"""The real-time model on the CPU at 360x480, batch 1: what its TF-"same" stride-2 layers cost
and where the rest of an image's time goes, printed with the CPU's ISA (the figures behind
"The real-time model" in benchmarks/README.md):

    python -m benchmarks.realtime_cpu [--precision fp32] [--rounds 60]

0. the model's FLOPs (Lite0, Lite1, Lite2 backbones) and the machine's fp32 GEMM peak;
1. each stride-2 layer of EfficientNet-Lite0 (TensorFlow "same" padding, which timm's
   ``Conv2dSame`` applies at run time) at the size it sees in the real-time model: ``F.pad`` +
   convolution + ReLU6 (how the fast copy ran it before ``SamePadConv2d``) against one fused
   oneDNN call (``SamePadConv2d``), median of 50 calls each; then the whole oneDNN copy
   both ways, interleaved (the same host for both);
2. the whole model through the inference core (``Predictor``), one image per call: median and
   best of ``--rounds`` calls (a shared host varies by tens of percent from second to second;
   the median is the figure to quote, the best what the code can do), and the heaviest ops
   over 10 images (``torch.profiler``); and what turning its logits into labels costs,
   ``argmax(1)`` against ``max(1).indices`` (what fcnseg uses);
3. (where a C++ compiler exists) the same model compiled ahead of time in the same precision
   (``fcnseg.export.export_aoti``, what ``fcnseg export --format aoti [--precision bf16]``
   writes) against the inference core, ``--rounds`` interleaved rounds (the same host for
   both), with the compile time and its parity against fp32.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import fcnseg
from benchmarks.harness import count_flops, gemm_peak
from fcnseg.accel.onednn import SamePadConv2d, available, to_onednn
from fcnseg.accel.precision import cpu_isa
from fcnseg.accel.timing import Timer, time_interleaved
from fcnseg.export import AotiModel, export_aoti
from fcnseg.export.aoti import compiler_available
from fcnseg.inference.core import Predictor
from fcnseg.metrics import class_labels

SIZE = (360, 480)


def _calls_ms(fn, warmup: int = 5, repeat: int = 50) -> list[float]:
    return Timer(torch.device("cpu")).time(fn, warmup, repeat)


def _model(backbone: str = "efficientnet_lite0") -> torch.nn.Module:
    model = fcnseg.build_model(
        "fcn8s", backbone=backbone, num_classes=11, context="global", pad100=False
    ).eval()
    with torch.no_grad():  # score layers start at zero: give them values, so logits (and
        for name, p in model.named_parameters():  # the parity of step 3) are not all zero
            if name.startswith("score"):
                p.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(len(name)))
    return model


class _PadThenConv(torch.nn.Module):
    """How the fast copy ran a TF-"same" layer before ``SamePadConv2d``: ``F.pad``, an unfused
    convolution, the activation after it (the same weights)."""

    def __init__(self, fused: SamePadConv2d) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fused
        pads: tuple[int, ...] = ()
        for size, kernel, stride in zip(
            x.shape[-1:-3:-1], f.weight.shape[-1:-3:-1], f.stride[::-1], strict=True
        ):
            total = f._same_padding(size, kernel, stride, 1)
            pads += (total // 2, total - total // 2)
        y = F.conv2d(F.pad(x, pads), f.weight, f.bias, f.stride, 0, 1, f.groups)
        return {"relu6": F.relu6, "relu": F.relu}.get(f.act, lambda t: t)(y)


def pad_then_conv_copy(fast: torch.nn.Module) -> torch.nn.Module:
    """``fast`` with each ``SamePadConv2d`` run the old way, in place (for the comparison)."""
    for module in list(fast.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SamePadConv2d):
                setattr(module, name, _PadThenConv(child))
    return fast


def same_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """Each ``Conv2dSame`` of the model with the input it sees at 360x480 (hooks, one pass)."""
    seen = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a, name=name: seen.append((name, m, a[0])))
        for name, m in model.named_modules()
        if type(m).__name__ == "Conv2dSame"
    ]
    with torch.inference_mode():
        model(torch.randn(1, 3, *SIZE))
    for h in hooks:
        h.remove()
    return seen


def layer_table(model: torch.nn.Module) -> list[str]:
    rows = []
    for name, conv, x in same_layers(model):
        x = x.contiguous(memory_format=torch.channels_last)
        fused = SamePadConv2d(conv, act="relu6")
        with torch.inference_mode():
            before = statistics.median(_calls_ms(lambda c=conv, x=x: F.relu6(c(x))))
            after = statistics.median(_calls_ms(lambda f=fused, x=x: f(x)))
        k = "x".join(map(str, conv.kernel_size))
        shape = "x".join(map(str, x.shape[1:]))
        rows.append(
            f"   {name} ({k}, {shape}): pad + conv + ReLU6 {before:.2f} ms, one call {after:.2f} ms"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args(argv)
    print(f"CPU ISA {cpu_isa()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    x = torch.randn(1, 3, *SIZE)
    flops = {
        name: count_flops(_model(f"efficientnet_{name}"), x) / 1e9
        for name in ("lite0", "lite1", "lite2")
    }
    peak = gemm_peak("cpu", "fp32")
    print(
        "0. FCN-8s at 360x480, GFLOP: "
        + ", ".join(f"{k} {v:.2f}" for k, v in flops.items())
        + f"; fp32 GEMM peak {peak:.0f} GFLOP/s"
        + f" (lite0 at the peak: {flops['lite0'] / peak * 1e3:.1f} ms)"
    )
    model = _model()
    if available():
        print("1. TF-'same' stride-2 layers, 1 image at 360x480:")
        print("\n".join(layer_table(model)))
        new, old = to_onednn(model), pad_then_conv_copy(to_onednn(model))
        xl = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ab = time_interleaved(
                {"pad + conv": lambda: old(xl), "one call": lambda: new(xl)}, rounds=40
            )
        print(
            "   the whole oneDNN copy, 40 interleaved rounds: "
            + ", ".join(f"{k} median {v['ms']:.1f} ms" for k, v in ab.items())
        )
    with Predictor(model, device="cpu", precision=args.precision) as core, torch.inference_mode():
        times = _calls_ms(lambda: core.logits(x, normalized=True), repeat=args.rounds)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                core.logits(x, normalized=True)
        used = core.record["precision"]
    med, best = statistics.median(times), min(times)
    print(
        f"2. real-time Lite0 FCN-8s 360x480, {used} core: median {med:.1f} ms "
        f"({1e3 / med:.1f} img/s), best {best:.1f} ms ({1e3 / best:.1f} img/s), "
        f"{args.rounds} calls"
    )
    logits = torch.randn(1, 11, *SIZE)
    argmax_ms = statistics.median(_calls_ms(lambda: logits.argmax(1), repeat=20))
    labels_ms = statistics.median(_calls_ms(lambda: class_labels(logits), repeat=20))
    print(
        f"   labels from 1x11x360x480 logits: argmax(1) {argmax_ms:.1f} ms, "
        f"max(1).indices (fcnseg.metrics.class_labels) {labels_ms:.1f} ms"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    if compiler_available():
        aoti_against_core(model, x, args.rounds, used)
    return 0


def aoti_against_core(model: torch.nn.Module, x: torch.Tensor, rounds: int, precision: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # random weights on a random input: near-tied logits, so the argmax agreement is
        # printed, not enforced (a trained checkpoint's export enforces it)
        report = export_aoti(
            model, Path(tmp) / "rt.pt2", tuple(x.shape), precision=precision, min_agreement=0.0
        )
        package = AotiModel(report["path"])
        with Predictor(model, device="cpu", precision=precision) as core, torch.inference_mode():
            ab = time_interleaved(
                {
                    "core": lambda: core.logits(x, normalized=True),
                    "aoti": lambda: package(x),
                },
                rounds=rounds,
            )
    print(
        f"3. {precision} AOTInductor package ({report['isa']}, compiled in "
        f"{report['compile_s']} s, parity against fp32: max |diff| "
        f"{report['parity']['max_abs_diff']:.1e}, argmax "
        f"{100 * report['parity']['argmax_agreement']:.2f} %) against the {precision} core, "
        f"{rounds} interleaved rounds: "
        + ", ".join(
            f"{k} median {v['ms']:.1f} ms ({1e3 / v['ms']:.1f} img/s), best {v['ms_min']:.1f} ms"
            for k, v in ab.items()
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
