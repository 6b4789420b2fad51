"""fp32 against bf16, side by side in one run, each row naming the CPU and its ISA:

    python -m benchmarks.precision [--quick] [--json benchmarks/results/precision-DATE.json]

Rows: a training step and inference for VGG16 FCN-8s at 500x500 (training on 2x360x480 crops),
ResNet-18 FCN-8s with global context at 360x480 (training on the CamVid recipe's 8x176x240) and
the real-time model (EfficientNet-Lite0 FCN-8s, global context) at 360x480, batch 1, in each
precision of the policy (``fcnseg.accel.precision``; bf16 = autocast over fp32 weights, channels
-last where the policy says it pays); each beside the machine's own GEMM peak in that precision
(``peak_fraction``). torchfcn's VGG16 FCN-8s and torchvision's fcn_resnet50 run in the same
precision where they are installed. int8 is ``fcnseg bench --int8`` (ONNX Runtime).

Every figure comes from ``benchmarks.harness.run_benchmark`` (what ``fcnseg bench --precision``
measures, plus FLOPs and the peak).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.harness import PeerUnavailable, format_table, run_benchmark
from fcnseg.accel.precision import cpu_isa

CONFIGS = {
    "vgg16 fcn8s 500x500": dict(
        model="fcn8s", backbone="vgg16", size=(500, 500), train_batch=2, train_size=(360, 480),
        optimize=True, peers=("torchfcn-fcn8s", "tv-fcn_resnet50"),
    ),
    "resnet18 fcn8s 360x480": dict(
        model="fcn8s", backbone="resnet18", context="global", size=(360, 480), num_classes=11,
        train_batch=8, train_size=(176, 240), optimize=True, peers=(),
    ),
    "realtime lite0 fcn8s 360x480": dict(
        model="fcn8s", backbone="efficientnet_lite0", context="global", size=(360, 480),
        num_classes=11, train_batch=8, train_size=(176, 240), optimize=True, peers=(),
    ),
}  # fmt: skip


def run(precisions: list[str], repeat: int, quick: bool) -> list[dict]:
    rows = []
    for label, cfg in CONFIGS.items():
        cfg = dict(cfg)
        peers = cfg.pop("peers")
        if quick:
            cfg.update(size=(128, 128), train_size=(96, 128), train_batch=1)
        for precision in precisions:
            # fp32: optimize_for_inference's fastest candidate; bf16: the core's bf16 fast copy
            row = run_benchmark(
                **cfg, precision=precision, train=True,
                repeat=repeat, train_repeat=max(2, repeat // 2), isolate=True,
            )  # fmt: skip
            row["config"] = label
            rows.append(row)
            print(_line(row), flush=True)
            for peer in peers:
                try:
                    p = run_benchmark(
                        peer=peer, size=cfg["size"], precision=precision, train=False,
                        repeat=repeat, isolate=True,
                    )  # fmt: skip
                except (PeerUnavailable, RuntimeError) as e:  # isolated: the error comes back
                    if "PeerUnavailable" not in str(e) and not isinstance(e, PeerUnavailable):
                        raise
                    print(f"  {peer}: skipped ({str(e).splitlines()[-1]})")
                    continue
                p["config"] = label
                rows.append(p)
                print(_line(p), flush=True)
    return rows


def _line(r: dict) -> str:
    train = r.get("train_images_per_s")
    return (
        f"{r.get('config')}: {r['name']} {r['precision']} ({r.get('cpu_isa')}): "
        f"{r.get('latency_ms', float('nan')):.1f} ms, {r.get('images_per_s', 0):.1f} img/s, "
        f"{100 * (r.get('peak_fraction') or 0):.0f} % of the {r['precision']} GEMM peak"
        + (f"; train {train:.1f} img/s" if train else "")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check of the pipeline")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = run(args.precisions.split(","), args.repeat, args.quick)
    print()
    print(format_table(rows, markdown=True))
    machine = rows[0]["machine"]
    print(f"\n{machine['cpu']} ({cpu_isa()}), {machine['torch_threads']} threads, "
          f"torch {machine['torch']}")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
