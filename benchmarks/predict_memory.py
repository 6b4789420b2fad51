"""Whole-process memory of ``fcnseg predict``: ``python -m benchmarks.predict_memory``.

Saves a VGG16 FCN-8s checkpoint (random weights, 21 classes) and one 500x500 image in a
temporary folder, then runs ``fcnseg predict`` on it in a fresh process, with and without
``--low-memory``, and prints each run's peak resident set over its whole life
(``ru_maxrss`` of the child: import, checkpoint loading and inference) and its wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import fcnseg


def _run(args: list[str]) -> tuple[float, float]:
    """(max RSS MiB, wall s) of one command, run under a fresh probe process so that the
    children's maximum is that command's alone."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
        "time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", probe, *args], check=True, capture_output=True)
    rss, wall = out.stdout.decode().split()
    return float(rss), float(wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500, help="square image side")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fcnseg-predict-memory-") as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        fcnseg.save_model(fcnseg.build_model("fcn8s", backbone="vgg16"), root / "vgg16.pt")
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "image.png")
        command = [
            sys.executable, "-m", "fcnseg", "predict", "--checkpoint", str(root / "vgg16.pt"),
            str(root / "image.png"), "--out", str(root / "out"), "--device", "cpu",
            "--no-progress",
        ]  # fmt: skip
        print(f"fcnseg predict, VGG16 FCN-8s, one {args.size}x{args.size} image")
        for label, extra in [("default", []), ("--low-memory", ["--low-memory"])]:
            rss, wall = _run(command + extra)
            print(f"{label:>13}: max RSS {rss:6.0f} MiB, {wall:4.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
