"""Is bf16 right, not only fast? One trained checkpoint scored in fp32 and in bf16 on the same
images in one pass: each precision's mean IU, the change, and the share of pixels whose label
agrees (``fcnseg eval --precision bf16`` against ``--precision fp32``, without running it twice):

    python -m benchmarks.precision_parity --checkpoint runs/.../best.pt \
        --dataset camvid --root ../shared/data/camvid --split val [--tta 0.75,1.0,flip]

The TTA default is the one stored in the checkpoint's recipe. Both runs go through the inference
core (``fcnseg.inference.Predictor``) exactly as ``fcnseg eval`` does.

With ``--aoti FILE`` (an ``fcnseg export --format aoti [--precision bf16]`` package of the same
checkpoint) the package takes the low side's place: one full-size pass each (a package runs
one size, so no TTA), the package against the fp32 core.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fcnseg.accel.precision import cpu_isa
from fcnseg.data import build_dataset, build_transforms
from fcnseg.engine.checkpoint import load_model, read_checkpoint
from fcnseg.inference import Predictor
from fcnseg.metrics import ConfusionMatrix, class_labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="camvid")
    p.add_argument("--root", default="../shared/data/camvid")
    p.add_argument("--split", default="val")
    p.add_argument("--tta", default=None, help="default: the recipe's eval.tta")
    p.add_argument("--low", default="bf16", help="the precision compared with fp32")
    p.add_argument("--aoti", default=None, help="a package of the checkpoint, in --low's place")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    recipe = read_checkpoint(args.checkpoint).get("train_config") or {}
    tta = args.tta if args.tta is not None else (recipe.get("eval") or {}).get("tta")
    model = load_model(args.checkpoint)
    dataset = build_dataset(
        args.dataset, args.root, args.split,
        transforms=build_transforms(train=False, preprocess=model.preprocess),
    )  # fmt: skip
    matrices = {k: ConfusionMatrix(model.num_classes, ignore_index=255) for k in ("fp32", "low")}
    agree = counted = 0
    seconds = {"fp32": 0.0, "low": 0.0}
    if args.aoti:
        from fcnseg.export import AotiModel

        package = AotiModel(args.aoti)
        args.low, tta = f"aoti_{package.precision}", None
    cores = {
        "fp32": Predictor(model, device="cpu", precision="fp32", tta=tta),
        "low": Predictor(model, device="cpu", precision=args.low, tta=tta, fast=False)
        if not args.aoti
        else _PackageLabels(package),
    }
    for i in range(len(dataset)):
        image, mask = dataset[i]
        labels = {}
        for key, core in cores.items():
            started = time.perf_counter()
            labels[key] = core.labels(image[None], normalized=True)[0]
            seconds[key] += time.perf_counter() - started
            matrices[key].update(labels[key][None], mask[None])
        valid = mask != 255
        agree += int((labels["fp32"] == labels["low"])[valid].sum())
        counted += int(valid.sum())
    scores = {k: m.compute() for k, m in matrices.items()}
    result = {
        "checkpoint": args.checkpoint,
        "split": f"{args.dataset} {args.split} ({len(dataset)} images)",
        "tta": tta,
        "cpu_isa": cpu_isa(),
        "low": args.low,
        "mean_iou_fp32": scores["fp32"]["mean_iou"],
        f"mean_iou_{args.low}": scores["low"]["mean_iou"],
        "mean_iou_change_points": 100 * (scores["low"]["mean_iou"] - scores["fp32"]["mean_iou"]),
        "pixel_agreement": agree / max(counted, 1),
        "seconds_fp32": seconds["fp32"],
        f"seconds_{args.low}": seconds["low"],
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


class _PackageLabels:
    """A package called like the core's ``labels`` (normalised images in, labels out)."""

    def __init__(self, package) -> None:
        self.package = package

    def labels(self, images: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        return class_labels(self.package(images))


if __name__ == "__main__":
    raise SystemExit(main())
