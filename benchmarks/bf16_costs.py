"""Where bf16 time goes on the CPU: the figures behind the training and real-time notes in
benchmarks/README.md ("fp32 and bf16 on an Intel Xeon with AMX"), each printed with the CPU's
ISA:

    python -m benchmarks.bf16_costs

1. a training step alone (ResNet-18 FCN-8s + global context, 8x176x240, channels-last,
   AdamW as ``build_optimizer`` makes it, no loader) in fp32 and under bf16 autocast;
2. one AdamW step over the same parameters, torch's per-tensor loop against ``fused=True``;
3. the fixed x8 bilinear upsampler (an 8x11x23x31 score map) forward + backward in fp32
   channels-last, and its depthwise transposed convolution as bf16 autocast would run it;
4. the real-time model (Lite0 FCN-8s + global, 360x480, batch 1) through the inference core in
   bf16: wall time per image and its heaviest ops (``torch.profiler``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

import fcnseg
from fcnseg.accel.precision import cpu_isa, precision_autocast
from fcnseg.accel.timing import Timer
from fcnseg.config import TrainConfig
from fcnseg.engine import build_optimizer
from fcnseg.inference.core import Predictor
from fcnseg.models.upsampling import BilinearUpsample, Grid


def _ms(fn: Callable[[], object], warmup: int = 3, repeat: int = 10) -> float:
    return statistics.median(Timer(torch.device("cpu")).time(fn, warmup, repeat))


def train_step_ms(precision: str) -> float:
    torch.manual_seed(0)
    model = fcnseg.build_model(
        "fcn8s", backbone="resnet18", num_classes=11, context="global", pad100=False
    )
    model.train().to(memory_format=torch.channels_last)
    opt = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3))
    x = torch.randn(8, 3, 176, 240).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 11, (8, 176, 240))

    def step() -> None:
        with precision_autocast(precision, "cpu"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _ms(step)


def adamw_ms(fused: bool) -> float:
    model = fcnseg.build_model(
        "fcn8s", backbone="resnet18", num_classes=11, context="global", pad100=False
    )
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-3, fused=fused, foreach=None if fused else False)
    return _ms(opt.step)


def upsample_ms(autocast: bool) -> float:
    up = BilinearUpsample(11, 8, 16, Grid(8, 0.0))
    w = up.deconv.weight.detach()
    depthwise = w.reshape(121, 1, 16, 16)[::12].contiguous()
    x = torch.randn(8, 11, 23, 31).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()

    def run() -> None:  # what autocast makes of the layer without its fp32 guard, or fp32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = F.conv_transpose2d(x, depthwise, stride=8, groups=11)
        out.float().sum().backward()

    return _ms(run)


def realtime_bf16() -> tuple[float, str]:
    model = fcnseg.build_model(
        "fcn8s", backbone="efficientnet_lite0", num_classes=11, context="global", pad100=False
    ).eval()
    x = torch.randn(1, 3, 360, 480)
    with Predictor(model, device="cpu", precision="bf16") as core, torch.inference_mode():
        ms = _ms(lambda: core.logits(x, normalized=True), warmup=5, repeat=30)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                core.logits(x, normalized=True)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
    return ms, table


def main() -> int:
    print(f"CPU ISA {cpu_isa()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    fp32, bf16 = train_step_ms("fp32"), train_step_ms("bf16")
    print(f"1. training step, ResNet-18 FCN-8s 8x176x240: fp32 {fp32:.0f} ms, bf16 {bf16:.0f} ms")
    print(f"2. AdamW step: per-tensor loop {adamw_ms(False):.1f} ms, fused {adamw_ms(True):.1f} ms")
    print(
        f"3. x8 upsampler fwd+bwd: fp32 {upsample_ms(False):.1f} ms, "
        f"bf16 autocast {upsample_ms(True):.1f} ms"
    )
    ms, table = realtime_bf16()
    print(f"4. real-time Lite0 FCN-8s 360x480, bf16 core: {ms:.1f} ms an image (10 images below)")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
