"""The embedded default (``fcnseg demo``): the paper's staged FCN-32s -> 16s -> 8s recipe on
the generated ``shapes`` set, a few CPU minutes, no downloads.

It trains the three heads one after the other, each initialised from the previous one
(Long et al., Sec. 4.2: "we initialize [FCN-16s] with the parameters of FCN-32s", the
reference's ``surgery.transplant``; here :func:`fcnseg.models.transfer_weights`), evaluates
each on the held-out ``val`` split, and writes to ``out``:

- ``metrics.json``: ``{"fcn32s": {pixel_acc, mean_acc, mean_iou, fw_iou, boundary_iou}, ...}``
- ``report.md``: the table, the commands, the machine, the time taken, and whether
  coarse-to-fine held;
- ``figure.png``: the paper's Figure 4 layout (input | FCN-32s | FCN-16s | FCN-8s | truth);
- one training folder per stage (``fcn32s/``, ``fcn16s/``, ``fcn8s/``).

``DEMO_RECIPE`` is the recipe; ``configs/shapes_demo.yaml`` holds the same values (a test
checks that they agree), so ``fcnseg train --config configs/shapes_demo.yaml`` trains it too.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from pathlib import Path

import torch

from fcnseg.config import apply_overrides, config_from_dict, stage_configs
from fcnseg.data import build_dataset, build_transforms, denormalize
from fcnseg.engine.checkpoint import load_model, read_checkpoint
from fcnseg.engine.evaluation import json_safe
from fcnseg.engine.trainer import train_staged

__all__ = ["DEMO_RECIPE", "MODELS", "run_demo"]

MODELS = ("fcn32s", "fcn16s", "fcn8s")
REPORT_KEYS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou")

# Tuned by measurement on 2 shared CPU cores (see report.md of a run): 96x96 images keep a
# 3x3 stride-32 map, so FCN-32s is visibly coarse; staged init makes the finer heads cheap.
DEMO_RECIPE: dict = {
    "model": {
        "arch": "fcn32s",
        "backbone": "resnet18",
        "num_classes": 7,
        "pad100": False,
        "weights_backbone": None,
        "weights": None,
        "learnable_upsampling": False,
        "init_from": None,
    },
    "data": {
        "dataset": "shapes",
        "root": None,
        "train_split": "train",
        "val_split": "val",
        "crop_size": [96, 96],
        "batch_size": 8,
        "workers": 0,
        "scale_range": [1.0, 1.0],
        "hflip": True,
        "color_jitter": 0.0,
        "base_size": None,
        "options": {"size": [96, 96]},
    },
    "train": {
        "optimizer": "adamw",
        "lr": 0.003,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "schedule": "cosine",
        "warmup_steps": 10,
        "poly_power": 0.9,
        "loss_reduction": "mean",
        "class_weights": "median_freq",
        "bias_lr_mult": 1.0,
        "bias_decay": False,
        "grad_accum": 1,
        "clip_grad_norm": None,
        "max_steps": 800,
        "max_minutes": 4.0,
        "epochs": 100,
        "amp": False,
        "seed": 0,
        "log_every": 10,
        "checkpoint_every": None,
        "device": "auto",
    },
    "eval": {"every_steps": None, "tta": None, "boundary_dilation": None},
    "out": "runs/demo",
    "stages": [
        {"name": "fcn32s", "model": {"arch": "fcn32s"}, "train": {}},
        {
            "name": "fcn16s",
            "model": {"arch": "fcn16s", "init_from": "previous"},
            "train": {"lr": 0.001, "max_steps": 400, "max_minutes": 2.0, "warmup_steps": 0},
        },
        {
            "name": "fcn8s",
            "model": {"arch": "fcn8s", "init_from": "previous"},
            "train": {"lr": 0.001, "max_steps": 400, "max_minutes": 2.0, "warmup_steps": 0},
        },
    ],
}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs "
        f"(torch uses {torch.get_num_threads()} threads){gpu}; Python "
        f"{platform.python_version()}, torch {torch.__version__}"
    )


def _coarse_to_fine_sentence(metrics: dict) -> str:
    def ordered(key: str) -> bool:
        a, b, c = (metrics[m][key] for m in MODELS)
        return c >= b >= a

    miou, biou = ordered("mean_iou"), ordered("boundary_iou")
    nums = "; ".join(
        f"{key.replace('_', ' ')} " + " -> ".join(f"{100 * metrics[m][key]:.1f}" for m in MODELS)
        for key in ("mean_iou", "boundary_iou")
    )
    spread = max(
        abs(metrics[m][k] - metrics[n][k])
        for m in MODELS
        for n in MODELS
        for k in ("mean_iou", "boundary_iou")
    )
    if spread < 0.005:  # within half a point: nothing to order
        verdict = (
            "The three models are indistinguishable (all within 0.5 points): the run was too "
            "short (or the machine too busy) to test coarse-to-fine"
        )
    elif miou and biou:
        verdict = "Coarse-to-fine held: FCN-8s >= FCN-16s >= FCN-32s on mean IU and boundary IoU"
    elif miou or biou:
        held = "mean IU" if miou else "boundary IoU"
        other = "boundary IoU" if miou else "mean IU"
        verdict = f"Coarse-to-fine held on {held} but not on {other} in this run"
    else:
        verdict = (
            "Coarse-to-fine did not hold in this run (neither metric is ordered 8s >= 16s >= 32s)"
        )
    return (
        f"{verdict} ({nums}). Each finer model also continued training from the coarser "
        "one (the paper's staged recipe), so part of any gain is the extra training steps, "
        "not only the skip."
    )


def _figure(out: Path, cfg, checkpoints: dict[str, Path], n: int = 4) -> None:
    from fcnseg.viz import comparison_figure

    models = {name: load_model(path) for name, path in checkpoints.items()}
    first = next(iter(models.values()))
    d = cfg.data
    val = build_dataset(
        d.dataset, d.root, d.val_split,
        transforms=build_transforms(train=False, preprocess=first.preprocess), **d.options,
    )  # fmt: skip
    samples = [val[i] for i in range(min(n, len(val)))]
    images = torch.stack([s[0] for s in samples])
    predictions = {}
    with torch.no_grad():
        for name, model in models.items():
            labels = model(images).argmax(1)
            predictions[name.replace("fcn", "FCN-")] = list(labels)
    fig = comparison_figure(
        list(denormalize(images, first.preprocess)),
        predictions,
        [s[1] for s in samples],
        val.palette,
        scale=2,
    )
    fig.save(out / "figure.png")


def _table(metrics: dict) -> str:
    head = "| model | pixel acc | mean acc | mean IU | f.w. IU | boundary IoU |"
    rows = [head, "|---|---:|---:|---:|---:|---:|"]
    for name in MODELS:
        m = metrics[name]
        cells = " | ".join(f"{100 * m[k]:.1f}" for k in REPORT_KEYS)
        rows.append(f"| {name.replace('fcn', 'FCN-')} | {cells} |")
    return "\n".join(rows)


def run_demo(
    out: str | Path = "runs/demo",
    *,
    minutes: float | None = None,
    max_steps: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> dict:
    """Train, evaluate and report the demo (see the module docstring).

    Args:
        out: output folder.
        minutes: total training-time budget, shared among the stages in the recipe's
            proportions (default: the recipe's, about 4 minutes of training).
        max_steps: cap every stage at this many steps (a quick check).
        overrides: extra ``key=value`` recipe overrides (as ``fcnseg train --set``).
        progress: show progress bars.

    Returns:
        ``{"metrics": {model: {metric: value}}, "table": str, "seconds": float, "out": str}``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    recipe = copy.deepcopy(DEMO_RECIPE)
    sets = [f"out={out}"]
    stage_minutes = [
        (s["train"].get("max_minutes") or recipe["train"]["max_minutes"]) for s in recipe["stages"]
    ]
    for i, stage in enumerate(recipe["stages"]):
        if minutes is not None:
            share = stage_minutes[i] / sum(stage_minutes)
            sets.append(f"stages.{i}.train.max_minutes={minutes * share}")
        if max_steps is not None:
            steps = stage["train"].get("max_steps") or recipe["train"]["max_steps"]
            sets.append(f"stages.{i}.train.max_steps={min(steps, max_steps)}")
    # ``out`` is the caller's explicit choice (it may be absolute)
    cfg = config_from_dict(apply_overrides(recipe, [*sets, *overrides]), trust_out=True)
    summary = train_staged(cfg, progress=progress)
    train_seconds = time.perf_counter() - t0

    metrics: dict[str, dict] = {}
    checkpoints: dict[str, Path] = {}
    steps: dict[str, int] = {}
    for name, stage_cfg in stage_configs(cfg):
        best = Path(stage_cfg.out) / "best.pt"
        ckpt = read_checkpoint(best)  # its metrics: the val-split evaluation that made it best
        scores = ckpt.get("metrics") or {}
        metrics[name] = {k: scores.get(k) for k in REPORT_KEYS}
        checkpoints[name] = best
        steps[name] = int(ckpt.get("step", 0))
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    _figure(out, cfg, checkpoints)
    seconds = time.perf_counter() - t0

    table = _table({k: {m: (v if v is not None else float("nan")) for m, v in d.items()}
                    for k, d in metrics.items()})  # fmt: skip
    stage_lines = "\n".join(
        f"- {name}: {steps[name]} steps ({summary['stages'][name].get('stop_reason')}), "
        f"`{checkpoints[name]}`"
        for name in MODELS
    )
    flags = " ".join(f"--set {s}" for s in overrides)
    command = "fcnseg demo" + (f" --minutes {minutes}" if minutes is not None else "")
    command += f" --max-steps {max_steps}" if max_steps is not None else ""
    command += f" --out {out}" if str(out) != "runs/demo" else ""
    report = f"""# fcnseg demo: FCN-32s -> FCN-16s -> FCN-8s on `shapes`

{_table(metrics) if all(v is not None for d in metrics.values() for v in d.values()) else table}

Scores in percent on the held-out `shapes` val split ({cfg.data.options.get("size")} images,
whole images), from each stage's `best.pt`. Mean IU, pixel/mean accuracy and f.w. IU are the
paper's four metrics (one confusion matrix over the split); boundary IoU (Cheng et al. 2021,
band 2% of the diagonal) scores the contours only.

{_coarse_to_fine_sentence(metrics)}

## Commands

    {command}{(" " + flags) if flags else ""}
    # the same recipe by hand (configs/shapes_demo.yaml holds it):
    fcnseg train --config configs/shapes_demo.yaml --set out={out}
    fcnseg eval --checkpoint {checkpoints["fcn8s"]}

## Stages (staged init: 16s from 32s, 8s from 16s)

{stage_lines}

## Machine and time

- {_machine()}
- wall time {seconds:.0f} s in all ({train_seconds:.0f} s training and evaluation,
  the rest the figure and this report)

![Figure 4 style: input, FCN-32s, FCN-16s, FCN-8s, ground truth](figure.png)
"""
    (out / "report.md").write_text(report)
    return {"metrics": metrics, "table": table, "seconds": seconds, "out": str(out)}
