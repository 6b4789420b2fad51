"""One configuration of fcnseg beside its peers, from a checkout (the package never imports
the harness):

    python -m benchmarks.compare_peers --model fcn8s --backbone vgg16 --size 500x500 [--optimize]
        [--train --train-size 360x480 --batch 2] [--precision bf16] [--isolate] [--json FILE]

Rows: fcnseg's model, then each peer of ``benchmarks.peers.peers_for`` (torchfcn's network of the
same head for VGG16, torchvision's fcn_resnet50) with the same input, precision, device and
memory format; FLOPs and the GEMM peak of the machine beside each (``benchmarks.harness``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.harness import format_table, peers_for, run_benchmark
from fcnseg.accel.precision import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fcn8s")
    p.add_argument("--backbone", default="vgg16")
    p.add_argument("--size", default="500x500")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--pad100", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--optimize", nargs="?", const=True, default=False)
    p.add_argument("--train", action="store_true")
    p.add_argument("--train-size", default=None)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--isolate", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    common = dict(
        size=args.size, batch=args.batch, device=args.device, precision=args.precision,
        channels_last=args.channels_last, train=args.train, train_size=args.train_size,
        repeat=args.repeat, isolate=args.isolate,
    )  # fmt: skip
    rows = [
        run_benchmark(
            args.model, backbone=args.backbone, pad100=args.pad100, optimize=args.optimize,
            **common,
        )
    ]  # fmt: skip
    rows += [run_benchmark(peer=peer, **common) for peer in peers_for(args.model, args.backbone)]
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
