"""What the CamVid training loader costs per image pair, the figures behind "The decode cache
filled before the clock" in benchmarks/README.md:

    python -m benchmarks.loader_costs [--root ../shared/data/camvid] [--pairs 48]

1. decoding a pair (image PNG + label PNG, ``load_sample``);
2. the recipe's training augmentation of a decoded pair, step by step (``configs/
   camvid_fcn8s_lite0.yaml``: scale 0.75-1.25, crop 176x240, flip, colour jitter 0.4, to float),
   each figure the pipeline up to and including that step;
3. a cached ``__getitem__``: augmentation, normalisation and the label check.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision.transforms.v2 as v2
from torchvision import tv_tensors

from fcnseg.accel.precision import cpu_isa
from fcnseg.data.camvid import CamVidSegmentation
from fcnseg.data.transforms import build_transforms


def _per_pair_ms(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/camvid")
    ap.add_argument("--pairs", type=int, default=48)
    args = ap.parse_args(argv)
    transforms = build_transforms(
        True, crop_size=(176, 240), scale_range=(0.75, 1.25), hflip=True, color_jitter=0.4
    )
    ds = CamVidSegmentation(args.root, "train", transforms=transforms)
    n = min(args.pairs, len(ds))
    print(f"CPU ISA {cpu_isa()}, {torch.get_num_threads()} threads, {n} CamVid train pairs")
    raw: list = []
    ms = _per_pair_ms(lambda: raw.extend(ds.load_sample(i) for i in range(n)), n)
    print(f"1. decode (image + label PNG): {ms:.2f} ms a pair")
    steps = transforms.pipeline.transforms
    for k in range(1, len(steps) + 1):
        pipeline = v2.Compose(steps[:k])

        def run(pipeline=pipeline) -> None:
            for image, mask, _ in raw:
                pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))

        print(f"2. up to {type(steps[k - 1]).__name__}: {_per_pair_ms(run, n):.2f} ms a pair")
    ds.cache_decoded()
    ds.fill_cache()
    ms = _per_pair_ms(lambda: [ds[i] for i in range(n)], n)
    print(f"3. cached __getitem__ (augment + normalise + label check): {ms:.2f} ms a pair")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
