"""``torch.compile`` against the oneDNN copy: ``python -m benchmarks.compile_check``.

FCN-8s VGG16 at 500x500, batch 1, fp32: inductor with ``freezing=True`` on the channels_last
eager model, against ``optimize_for_inference(candidate="onednn")``, timed interleaved after
the compilation (whose time is printed too). This is the measurement behind leaving
``torch.compile`` out of ``optimize_for_inference``'s candidates (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import time

import torch

import fcnseg
from benchmarks.harness import machine_info
from fcnseg.accel.timing import time_interleaved
from fcnseg.config import parse_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="500x500")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant weights: prepacking and conv fusion
    h, w = parse_size(args.size, "--size")
    torch.manual_seed(0)
    x = torch.randn(1, 3, h, w).contiguous(memory_format=torch.channels_last)
    eager = fcnseg.build_model("fcn8s").eval().to(memory_format=torch.channels_last)
    fast = fcnseg.optimize_for_inference(fcnseg.build_model("fcn8s"), candidate="onednn")
    print(machine_info())
    with torch.inference_mode():
        compiled = torch.compile(eager)
        start = time.perf_counter()
        compiled(x)
        print(f"torch.compile: {time.perf_counter() - start:.1f} s to compile for {h}x{w}")
        times = time_interleaved(
            {"torch.compile": lambda: compiled(x), "onednn": lambda: fast(x)},
            rounds=args.rounds,
            warmup=1,
        )
    for name, t in times.items():
        print(f"{name:>14}: {t['ms']:.0f} ms median, {t['ms_min']:.0f} ms min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
