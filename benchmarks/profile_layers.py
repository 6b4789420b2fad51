"""Where the time goes, layer by layer: ``python -m benchmarks.profile_layers``.

Profiles (``torch.profiler``, self CPU time per op and input shape) one forward of FCN-8s VGG16
at 500x500 as eager fcnseg, as the oneDNN copy (``fcnseg.accel.onednn``) and as torchfcn, and
one training step at 2x360x480, and fc6 alone both ways. The per-layer figures quoted in
benchmarks/README.md come from this command. Options: ``--size``, ``--train-size``, ``--top``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from benchmarks.harness import machine_info
from benchmarks.peers import build_peer
from fcnseg.accel.onednn import to_onednn
from fcnseg.accel.training import for_training
from fcnseg.bench import make_train_step
from fcnseg.config import parse_size
from fcnseg.models import build_model


def _table(fn, top: int) -> str:
    fn()
    fn()  # warm: oneDNN primitives are created on the first calls
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    rows = sorted(
        prof.key_averages(group_by_input_shape=True),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    total = sum(e.self_cpu_time_total for e in rows) / 1e3
    lines = [f"total {total:.1f} ms", f"{'ms':>9}  {'calls':>5}  op  input shapes"]
    for e in rows[:top]:
        shapes = str(e.input_shapes)[:90]
        lines.append(f"{e.self_cpu_time_total / 1e3:9.1f}  {e.count:5d}  {e.key}  {shapes}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="500x500")
    parser.add_argument("--train-size", default="360x480")
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args(argv)
    h, w = parse_size(args.size, "--size")
    th, tw = parse_size(args.train_size, "--train-size")
    print(machine_info())
    torch.manual_seed(0)
    x = torch.randn(1, 3, h, w)
    eager = build_model("fcn8s").eval()
    fast = to_onednn(eager)
    peer = build_peer("torchfcn-fcn8s").eval()
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for name, fn in [
            ("fcnseg eager", lambda: eager(x)),
            ("fcnseg onednn", lambda: fast(x_nhwc)),
            ("torchfcn", lambda: peer(x)),
        ]:
            print(f"\n## inference {h}x{w}: {name}\n{_table(fn, args.top)}")
    images = torch.randn(2, 3, th, tw)
    target = torch.randint(0, 21, (2, th, tw))
    for name, net in [
        ("fcnseg", for_training(build_model("fcn8s"), "cpu")),
        ("torchfcn", build_peer("torchfcn-fcn8s")),
    ]:
        step = make_train_step(net, images, target)
        print(f"\n## training step 2x{th}x{tw}: {name}\n{_table(step, args.top)}")
    # fc6 alone, as a direct convolution and as the model runs it: forward at the inference
    # size, forward + backward at the training size
    fc6 = for_training(build_model("fcn32s"), "cpu").backbone.fc6  # as the trainer runs it
    pool5_infer = torch.randn(1, 512, (h + 31) // 32, (w + 31) // 32)
    with torch.inference_mode():
        for name, fn in [
            ("direct convolution", lambda: F.conv2d(pool5_infer, fc6.weight, fc6.bias, padding=3)),
            ("Conv2dAsMatmul", lambda: fc6(pool5_infer)),
        ]:
            print(f"\n## fc6 forward on {tuple(pool5_infer.shape)}: {name}\n{_table(fn, 3)}")
    pool5 = torch.randn(2, 512, (th + 31) // 32, (tw + 31) // 32, requires_grad=True)

    def direct() -> None:
        F.conv2d(pool5, fc6.weight, fc6.bias, padding=3).sum().backward()

    def as_matmul() -> None:
        fc6(pool5).sum().backward()

    for name, fn in [("direct convolution", direct), ("Conv2dAsMatmul", as_matmul)]:
        print(f"\n## fc6 forward + backward on {tuple(pool5.shape)}: {name}\n{_table(fn, 4)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
