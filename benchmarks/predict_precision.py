"""``fcnseg.predict(model, images, precision=...)`` timed per image, precisions alternated:

    python -m benchmarks.predict_precision [--backbone vgg16] [--size 500x500] [--images 12]

What a user of the Python API gets (the issue 26 aim: VGG16 FCN-8s at 500x500, bf16 against
fp32): each ``predict`` call builds the inference core (and its fast copy) once for its images,
so the build is in the figure. Random weights and random uint8 images: speed only. Each round
runs every precision once, after one untimed single-image call; the best round is reported.
"""

from __future__ import annotations

import argparse
import time

import torch

import fcnseg
from fcnseg.accel.precision import cpu_isa
from fcnseg.config import parse_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fcn8s")
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--size", default="500x500")
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precisions", default="fp32,bf16")
    args = p.parse_args(argv)
    h, w = parse_size(args.size)
    torch.manual_seed(0)
    model = fcnseg.build_model(args.model, backbone=args.backbone, num_classes=args.num_classes)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for _ in range(args.images)]
    precisions = args.precisions.split(",")
    best = {name: float("inf") for name in precisions}
    for _ in range(args.rounds):
        for name in precisions:
            fcnseg.predict(model, images[:1], precision=name)  # untimed: first-shape set-up
            started = time.perf_counter()
            fcnseg.predict(model, images, precision=name)
            ms = (time.perf_counter() - started) / len(images) * 1e3
            best[name] = min(best[name], ms)
            print(f"{name}: {ms:.0f} ms an image", flush=True)
    first = precisions[0]
    for name in precisions:
        print(f"best {name}: {best[name]:.0f} ms an image, {best[first] / best[name]:.2f}x {first}")
    print(f"{args.model} {args.backbone} {h}x{w}, {args.images} images a call; CPU ISA "
          f"{cpu_isa()}, {torch.get_num_threads()} threads")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
