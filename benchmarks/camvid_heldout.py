"""One CamVid recipe variant, judged on data it did not tune on (issue 14).

CamVid's val (101 images) is sequence 0016E5, which also gives train 204 of its 367 images, so
val flatters a recipe. This script trains the variant on train **minus one sequence**
(``--hold-out``: 0001TP, the dusk sequence, 62 images; or 0006R0, daytime, 101 images; CamVid's
test split is 0001TP and Seq05VD) and scores its checkpoint on val (model selection) and on
the held-out images (the estimate), with the same commands a user runs:

    fcnseg train --config FILE --set data.options={exclude_sequences: [0001TP]} --set out=OUT ...
    fcnseg eval --checkpoint OUT/best.pt --split val --out OUT/val
    fcnseg eval --checkpoint OUT/best.pt --split train --data-option sequences=[0001TP] \
        --out OUT/heldout

Run (one at a time: a budget in minutes needs the cores to itself):

    python -m benchmarks.camvid_heldout NAME --config configs/camvid_fcn8s_lite0.yaml \
        --minutes 10 --set train.class_weights=null --set model.context=global

A staged recipe (``configs/camvid_staged_lite0.yaml``) runs the same way: it is scored on its
last stage's checkpoint, and ``--minutes`` is its total, shared by the stages in the
proportions the recipe gives them.

It appends one JSON line per variant to ``runs/camvid_heldout/results.jsonl`` and prints the
row; ``--table`` prints the markdown tables of every line there (for benchmarks/camvid.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fcnseg.bench import machine_info
from fcnseg.config import load_config, stage_configs
from fcnseg.plots import read_run_log

HELD_OUT = "0001TP"
ROOT = Path("runs/camvid_heldout")
CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
    "Pedestrian", "Bicyclist",
]  # fmt: skip


def _fcnseg(*args: str) -> None:
    cmd = [sys.executable, "-m", "fcnseg", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _isa() -> str:
    """The CPU's ISA as the kernels may use it (AMX, AVX512-BF16, AVX-512, AVX2; caps applied)."""
    from fcnseg.accel.precision import cpu_isa

    return cpu_isa()


def run_variant(
    name: str,
    config: str,
    minutes: float,
    sets: list[str],
    data_root: str,
    held_out: str = HELD_OUT,
) -> dict:
    out = ROOT / name
    started = time.time()
    train_args = ["train", "--config", config, "--set", f"data.root={data_root}"]
    train_args += ["--set", f"data.options={{exclude_sequences: [{held_out}]}}"]
    train_args += ["--set", f"out={out}"]
    for s in [*budget_overrides(config, sets, minutes), *sets]:
        train_args += ["--set", s]
    _fcnseg(*train_args, "--no-progress")
    trained_s = time.time() - started
    stage_outs = stage_folders(config, [*sets, f"out={out}"])
    scores = {}
    for label, extra in (
        ("val", ["--split", "val"]),
        ("heldout", ["--split", "train", "--data-option", f"sequences=[{held_out}]"]),
    ):
        _fcnseg(
            "eval", "--checkpoint", str(stage_outs[-1] / "best.pt"), "--root", data_root, *extra,
            "--out", str(out / label), "--no-progress",
        )  # fmt: skip
        scores[label] = json.loads((out / label / "metrics.json").read_text())
    logs = [read_run_log(folder) for folder in stage_outs]
    steps = sum(max((e["step"] for e in g["train"] + g["eval"]), default=0) for g in logs)
    log = {"train": [e for g in logs for e in g["train"]]}
    row = {
        "name": name, "config": config, "minutes": minutes, "sets": sets, "steps": steps,
        "images_per_s": _median_images_per_s(log), "wall_s": round(trained_s),
        "cpu": machine_info()["cpu"],
        "isa": _isa(), "held_out": held_out, "val": scores["val"], "heldout": scores["heldout"],
    }  # fmt: skip
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return row


def budget_overrides(config: str, sets: list[str], minutes: float) -> list[str]:
    """``--set`` items giving the recipe ``minutes`` of training in all: ``train.max_minutes``
    for a one-stage recipe; for a staged one, each stage its share of ``minutes`` in the
    proportions of the stages' own ``train.max_minutes`` (a top-level value would give
    every stage the whole budget)."""
    cfg = load_config(config, sets)
    if not cfg.stages:
        return [f"train.max_minutes={minutes}"]
    own = [stage.train.max_minutes for _, stage in stage_configs(cfg)]
    if any(m is None for m in own):
        raise SystemExit(f"{config}: every stage needs train.max_minutes to share --minutes")
    return [f"stages.{i}.train.max_minutes={minutes * m / sum(own):.4g}" for i, m in enumerate(own)]


def stage_folders(config: str, overrides: list[str]) -> list[Path]:
    """The run folders a recipe trains into: ``[out]``, or each stage's ``out/<name>`` in
    order for a staged recipe (scored on its last stage's ``best.pt``; its steps are the
    stages' sum). A staged recipe's stages keep their own ``train.max_minutes``."""
    cfg = load_config(config, overrides)
    return [Path(stage.out) for _, stage in stage_configs(cfg)]


def _median_images_per_s(log: dict[str, list[dict]]) -> float | None:
    rates = [e["images_per_s"] for e in log["train"] if "images_per_s" in e]
    return round(statistics.median(rates), 2) if rates else None


def _images_per_s(row: dict) -> float | None:
    """The row's median training speed; rows written before it was recorded read it from the
    run folder when that is still there."""
    if "images_per_s" in row:
        return row["images_per_s"]
    try:
        return _median_images_per_s(read_run_log(ROOT / row["name"]))
    except FileNotFoundError:
        return None


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | held out | --set | steps | train img/s (median) | val mIoU | held-out mIoU "
        "| held-out pixel acc | held-out boundary IoU | held-out min class |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        iu = r["heldout"]["iou"]
        worst = min(range(len(iu)), key=lambda c: iu[c] if iu[c] is not None else 1.0)
        speed = _images_per_s(r)
        lines.append(
            f"| {r['name']} | {r.get('held_out', HELD_OUT)} | {' '.join(r['sets']) or '(recipe)'} "
            f"| {r['steps']} | {'-' if speed is None else f'{speed:.1f}'} "
            f"| {_pct(r['val']['mean_iou'])} | **{_pct(r['heldout']['mean_iou'])}** "
            f"| {_pct(r['heldout']['pixel_acc'])} | {_pct(r['heldout'].get('boundary_iou'))} "
            f"| {CLASSES[worst] if len(iu) == len(CLASSES) else worst} {_pct(iu[worst])} |"
        )
    lines += ["", "| held-out IU per class | " + " | ".join(r["name"] for r in rows) + " |"]
    lines.append("|---|" + "---|" * len(rows))
    for c, cls in enumerate(CLASSES):
        cells = " | ".join(_pct(r["heldout"]["iou"][c]) for r in rows)
        lines.append(f"| {cls} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", help="the variant's name (its run folder)")
    p.add_argument("--config", default="configs/camvid_fcn8s_lite0.yaml")
    p.add_argument("--minutes", type=float, default=20.0, help="train.max_minutes")
    p.add_argument("--set", action="append", default=[], help="recipe overrides KEY=VALUE")
    p.add_argument("--root", default="../shared/data/camvid", help="CamVid folder")
    p.add_argument(
        "--hold-out", default=HELD_OUT, help="the train sequence held out (0001TP, 0006R0)"
    )
    p.add_argument("--table", action="store_true", help="print the tables of results.jsonl")
    a = p.parse_args(argv)
    if a.table:
        rows = [json.loads(x) for x in (ROOT / "results.jsonl").read_text().splitlines()]
        print(table(rows))
        return 0
    if not a.name:
        p.error("a variant name is needed (or --table)")
    row = run_variant(a.name, a.config, a.minutes, a.set, a.root, a.hold_out)
    print(table([row]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
