"""``torch.compile`` of the CamVid training step: ``python -m benchmarks.compile_train_step``.

FCN-8s with global context, batch 8 of 176x240 (the CamVid recipe's step; ``--precision
bf16 --channels-last`` as the from-scratch ResNet-18 recipe runs on an AMX CPU; ``--backbone
efficientnet_lite0 --channels-last`` as the transfer recipes run): eager against inductor, timed
interleaved after compiling (whose time is printed). Inductor is tried
on the whole net and on the backbone alone; a variant that fails to compile prints its error's
first line instead of a time. This is the measurement behind training eagerly
(benchmarks/camvid.md, "Training speed on 2 cores").
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from torch import nn

import fcnseg
from benchmarks.harness import machine_info
from fcnseg.accel.timing import time_interleaved
from fcnseg.bench import make_train_step
from fcnseg.config import parse_size


def _compiled_variants(net: nn.Module) -> dict[str, nn.Module]:
    whole = copy.deepcopy(net)
    backbone_only = copy.deepcopy(net)
    backbone_only.backbone = torch.compile(backbone_only.backbone)
    return {"compile, whole net": torch.compile(whole), "compile, backbone": backbone_only}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", help="any fcnseg backbone name")
    parser.add_argument("--size", default="176x240")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true", help="NHWC, as the recipes")
    args = parser.parse_args(argv)
    h, w = parse_size(args.size, "--size")
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, h, w)
    target = torch.randint(0, 11, (args.batch, h, w))
    net = fcnseg.build_model(
        "fcn8s", backbone=args.backbone, num_classes=11, context="global", pad100=False
    )
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    print(machine_info(), f"{args.backbone}, {args.precision}, channels-last {args.channels_last}")
    steps: dict[str, Callable[[], None]] = {
        "eager": make_train_step(net, images, target, args.precision)
    }
    for name, variant in _compiled_variants(net).items():
        step = make_train_step(variant, images, target, args.precision)
        start = time.perf_counter()
        try:
            step()  # compiles forward and backward for this shape
        except Exception as e:  # any inductor failure is a result here, not a crash
            print(f"{name}: fails to compile: {str(e).strip().splitlines()[0]}")
            continue
        print(f"{name}: {time.perf_counter() - start:.1f} s to compile for {args.batch}x{h}x{w}")
        steps[name] = step
    times = time_interleaved(steps, rounds=args.rounds, warmup=1)
    for name, t in times.items():
        print(f"{name:>18}: {t['ms']:.0f} ms a step median, {t['ms_min']:.0f} ms min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
