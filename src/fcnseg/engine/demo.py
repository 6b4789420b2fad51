"""The embedded default (``fcnseg demo``): the paper's staged FCN-32s -> 16s -> 8s recipe on
the generated ``shapes`` set, about two CPU minutes, no downloads.

It trains the three heads one after the other, each initialised from the previous one
(Long et al., Sec. 4.2: "we initialize [FCN-16s] with the parameters of FCN-32s", the
reference's ``surgery.transplant``; here :func:`fcnseg.models.transfer_weights`), then
control runs that say how much of each gain is the skip and how much the extra steps (the
first two by default, all three with ``controls=("continued", "alone")``):

- ``fcn32s_continued``: FCN-32s trained on from its checkpoint with FCN-16s's stage budget
  (same init, steps and schedule as FCN-16s, no skip);
- ``fcn16s_continued``: the same for FCN-16s against FCN-8s;
- ``fcn8s_alone``: FCN-8s from scratch for the steps of the whole staged line (is staging
  needed at all, or do the skips alone do it?).

Every run is evaluated on the held-out ``val`` split. The demo is bounded by wall time as
well as steps: the time left before the deadline is shared among the stages still to go in
proportion to their recipe minutes (minus the measured evaluation overhead), the controls get
what the stages leave (a control that could not repeat half its stage's steps is skipped and
the report says so), and each run's learning-rate schedule follows whichever of its steps and
minutes runs out first, so a slow or busy CPU ends on time with every schedule finished. It
writes to ``out``:

- ``metrics.json``: ``{"fcn32s": {pixel_acc, mean_acc, mean_iou, fw_iou, boundary_iou},
  "fcn16s": ..., "fcn8s": ..., "fcn32s_continued": ..., "fcn16s_continued": ...,
  "fcn8s_alone": ...}`` (fractions in [0, 1]);
- ``report.md``: the table, the skip-or-steps split, the commands, the machine and the time;
- ``figure.png``: the paper's Figure 4 layout (input | FCN-32s | FCN-16s | FCN-8s | truth)
  with a legend of the classes;
- ``curves.png``: loss and val scores against step, the stages one after the other and each
  control where it starts (needs matplotlib, the ``plots`` extra);
- one training folder per stage (``fcn32s/``, ``fcn16s/``, ``fcn8s/``) and per control
  (``controls/<name>/``).

``DEMO_RECIPE`` is the recipe; ``configs/shapes_demo.yaml`` holds the same values (a test
checks that they agree), so ``fcnseg train --config configs/shapes_demo.yaml`` trains the
staged line too.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fcnseg.config import Config, apply_overrides, config_from_dict, config_to_dict, stage_configs
from fcnseg.data import build_dataset, build_transforms, denormalize
from fcnseg.engine.checkpoint import load_model, read_checkpoint
from fcnseg.engine.evaluation import json_safe
from fcnseg.engine.trainer import Trainer
from fcnseg.metrics import class_labels

__all__ = ["DEFAULT_CONTROLS", "DEMO_RECIPE", "DEMO_SECONDS", "MODELS", "demo_runs", "run_demo"]

MODELS = ("fcn32s", "fcn16s", "fcn8s")
CONTROLS = ("fcn32s_continued", "fcn16s_continued", "fcn8s_alone")
CONTROL_KINDS = ("continued", "alone")
#: the controls ``fcnseg demo`` trains by default: the ones that split each gain into skip
#: and extra steps; ``alone`` doubles the training time (``--controls continued,alone``)
DEFAULT_CONTROLS = ("continued",)
REPORT_KEYS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou")
#: wall-time budget of the whole demo (training, evaluation, figure, report), seconds
DEMO_SECONDS = 140.0
_FINAL_RESERVE_S = 6.0  # the figure, curves and report after the last run
_FIRST_OVERHEAD_S = 6.0
_METRIC_NAMES = {
    "mean_iou": "mean IU",
    "boundary_iou": "boundary IoU",
}  # guess of one run's set-up + evaluation, until one is measured

# Tuned by measurement on 2 shared CPU cores (see report.md of a run). 128x128 images give a
# 4x4 stride-32 score map, so FCN-32s is visibly coarse and the small objects (6-13 px) need
# the stride-8 skip; the classes are learnt from local colour evidence in ~100 steps from
# scratch. Steps bound the run on a quiet machine, minutes on a busy or slow one (the LR
# schedule follows whichever runs out first, so both end decayed).
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
        "crop_size": [128, 128],
        "batch_size": 8,
        "workers": 0,
        "scale_range": [1.0, 1.0],
        "hflip": True,
        "color_jitter": 0.0,
        "base_size": None,
        "options": {"size": [128, 128]},
    },
    "train": {
        "optimizer": "adamw",
        "lr": 0.003,
        "momentum": 0.9,
        "weight_decay": 0.0001,
        "schedule": "poly",
        "warmup_steps": 10,
        "poly_power": 0.9,
        "loss_reduction": "mean",
        "class_weights": None,
        "bias_lr_mult": 1.0,
        "bias_decay": False,
        "grad_accum": 1,
        "clip_grad_norm": None,
        "max_steps": 120,
        "max_minutes": 0.5,
        "epochs": 100,
        "precision": "fp32",
        "seed": 0,
        "log_every": 10,
        "checkpoint_every": 1000,
        "device": "auto",
    },
    "eval": {"every_steps": None, "tta": None, "boundary_dilation": None},
    "out": "runs/demo",
    "stages": [
        {"name": "fcn32s", "model": {"arch": "fcn32s"}, "train": {}},
        {
            "name": "fcn16s",
            "model": {"arch": "fcn16s", "init_from": "previous"},
            "train": {"lr": 0.002, "max_steps": 60, "max_minutes": 0.25, "warmup_steps": 0},
        },
        {
            "name": "fcn8s",
            "model": {"arch": "fcn8s", "init_from": "previous"},
            "train": {"lr": 0.002, "max_steps": 80, "max_minutes": 0.35, "warmup_steps": 0},
        },
    ],
}


@dataclass
class DemoRun:
    """One training run of the demo: a stage of the staged line or a control.

    ``weight`` is its share of the time budget (its recipe minutes); ``offset`` the step at
    which it starts on the learning curves' step axis; ``parent`` the run it continues;
    ``mirrors`` the stages whose steps a control repeats (it trains as many as they took)."""

    name: str
    cfg: Config
    weight: float
    offset: int = 0
    parent: str | None = None
    mirrors: tuple[str, ...] = ()


def demo_runs(cfg: Config, controls: Sequence[str] = DEFAULT_CONTROLS) -> list[DemoRun]:
    """The staged line of ``cfg`` (its ``stages``) followed by the controls (module doc).

    Args:
        cfg: the demo recipe (with ``stages``).
        controls: which controls: ``"continued"`` (each coarser model trained on for the next
            stage's budget) and/or ``"alone"`` (the finest head from scratch for the whole
            line's steps).

    Returns:
        ``DemoRun`` per run in training order; each control's config is its stage's with the
        coarser arch (``*_continued``) or the last arch from scratch for the line's steps and
        minutes (``*_alone``); controls write to ``<out>/controls/<name>``.
    """
    stages = stage_configs(cfg)
    runs, offset = [], 0
    for name, stage_cfg in stages:
        runs.append(DemoRun(name, stage_cfg, stage_cfg.train.max_minutes or 1.0, offset))
        offset += stage_cfg.train.max_steps or 0
    unknown = set(controls) - set(CONTROL_KINDS)
    if unknown:
        raise ValueError(f"unknown demo controls {sorted(unknown)}; choose from {CONTROL_KINDS}")
    if len(stages) < 2:
        return runs
    line = list(runs)
    for prev, stage in zip(line, line[1:], strict=False):
        if "continued" not in controls:
            break
        d = config_to_dict(stage.cfg)  # the stage's init, steps and schedule ...
        d["model"]["arch"] = prev.cfg.model.arch  # ... without its skip
        name = f"{prev.name}_continued"
        d["out"] = str(Path(cfg.out) / "controls" / name)
        control = config_from_dict(d, trust_out=True)
        runs.append(DemoRun(name, control, stage.weight, stage.offset, prev.name, (stage.name,)))
    if "alone" not in controls:
        return runs
    d = config_to_dict(line[0].cfg)  # the first stage's schedule, from scratch ...
    d["model"]["arch"] = line[-1].cfg.model.arch  # ... with the finest head
    d["model"]["init_from"] = None
    d["train"]["max_steps"] = sum(r.cfg.train.max_steps or 0 for r in line) or None
    d["train"]["max_minutes"] = sum(r.cfg.train.max_minutes or 0 for r in line) or None
    name = f"{line[-1].name}_alone"
    d["out"] = str(Path(cfg.out) / "controls" / name)
    total = sum(r.weight for r in line)
    alone = config_from_dict(d, trust_out=True)
    runs.append(DemoRun(name, alone, total, mirrors=tuple(r.name for r in line)))
    return runs


def _train_within(run: DemoRun, seconds: float, progress: bool) -> tuple[dict, float]:
    """Train ``run`` with at most ``seconds`` of training; returns (summary, training s)."""
    run.cfg.train.max_minutes = max(seconds, 1.0) / 60.0
    trained = {"s": 0.0}

    def clock(trainer: Trainer) -> None:  # time to the last step (evaluation excluded)
        trained["s"] = trainer._elapsed()

    summary = Trainer(run.cfg, progress=progress, callbacks=[clock]).fit()
    return summary, trained["s"]


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


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}"


def _points(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:+.1f}"


def _coarse_to_fine_sentence(metrics: dict, margin: float = 0.02) -> str:
    """Whether FCN-8s > FCN-16s > FCN-32s held on mean IU and boundary IoU, by ``margin``."""

    def ordered(key: str, by: float) -> bool:
        a, b, c = (metrics[m][key] for m in MODELS)
        return None not in (a, b, c) and c - b >= by and b - a >= by

    nums = "; ".join(
        f"{_METRIC_NAMES[key]} " + " -> ".join(_pct(metrics[m][key]) for m in MODELS)
        for key in ("mean_iou", "boundary_iou")
    )
    values = [metrics[m][k] for m in MODELS for k in ("mean_iou", "boundary_iou")]
    if None in values or max(values) - min(values) < 0.005:
        verdict = (
            "The three models are indistinguishable (all within half a point): the run was "
            "too short (or the machine too busy) to test coarse to fine"
        )
    elif ordered("mean_iou", margin) and ordered("boundary_iou", margin):
        verdict = (
            f"Coarse to fine held by clear margins (each skip adds at least {100 * margin:.0f} "
            "points): FCN-8s > FCN-16s > FCN-32s on mean IU and on boundary IoU"
        )
    elif ordered("mean_iou", 0.0) and ordered("boundary_iou", 0.0):
        verdict = (
            "Coarse to fine held (FCN-8s >= FCN-16s >= FCN-32s on mean IU and boundary IoU), "
            f"but not everywhere by {100 * margin:.0f} points: the run was short or the "
            "machine busy"
        )
    else:
        verdict = "Coarse to fine did not hold in this run: it was too short or the machine busy"
    return f"{verdict} ({nums})."


def _split_sentences(metrics: dict, steps: dict) -> list[str]:
    """Rows ``| gain | total | skip | extra steps |`` of the control table (``None`` kept out)."""
    rows = []
    for coarse, fine in zip(MODELS, MODELS[1:], strict=False):
        control = f"{coarse}_continued"
        if control not in metrics:
            continue
        for key in ("mean_iou", "boundary_iou"):
            c, f, k = (metrics[n].get(key) for n in (coarse, fine, control))
            if None in (c, f, k):
                continue
            rows.append(
                f"| {coarse.replace('fcn', 'FCN-')} -> {fine.replace('fcn', 'FCN-')} "
                f"| {_METRIC_NAMES[key]} | {_points(f - c)} | {_points(f - k)} "
                f"| {_points(k - c)} |"
            )
    return rows


def _figure(out: Path, cfg: Config, checkpoints: dict[str, Path], n: int = 3) -> None:
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
            labels = class_labels(model.eval()(images))
            predictions[name.replace("fcn", "FCN-")] = list(labels)
    fig = comparison_figure(
        list(denormalize(images, first.preprocess)),
        predictions,
        [s[1] for s in samples],
        val.palette,
        scale=2,
        class_names=val.classes,
    )
    fig.save(out / "figure.png", optimize=True)  # small enough to commit beside a README


def _table(metrics: dict, steps: dict, names) -> str:
    head = "| model | steps | pixel acc | mean acc | mean IU | f.w. IU | boundary IoU |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        if name not in metrics:
            continue
        cells = " | ".join(_pct(metrics[name].get(k)) for k in REPORT_KEYS)
        rows.append(f"| {_title(name)} | {steps.get(name, 0)} | {cells} |")
    return "\n".join(rows)


def _title(name: str) -> str:
    label = name.replace("fcn", "FCN-")
    return label.replace("_continued", " continued").replace("_alone", " alone")


def _curves(out: Path, runs: list[DemoRun]) -> Path | None:
    from fcnseg.plots import MatplotlibMissing, learning_curves

    folders = {_title(r.name): Path(r.cfg.out) for r in runs}
    offsets = {_title(r.name): r.offset for r in runs}
    try:
        return learning_curves(
            folders, out / "curves.png", offsets=offsets, title="fcnseg demo on shapes"
        )
    except MatplotlibMissing as e:
        print(f"fcnseg demo: note: curves.png not written: {e}")
        return None


def run_demo(
    out: str | Path = "runs/demo",
    *,
    budget_seconds: float | None = DEMO_SECONDS,
    max_steps: int | None = None,
    controls: Sequence[str] = DEFAULT_CONTROLS,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> dict:
    """Train, evaluate and report the demo (see the module docstring).

    Args:
        out: output folder.
        budget_seconds: wall-time budget of the whole demo (default :data:`DEMO_SECONDS`);
            ``None``: the recipe's own ``max_minutes`` per run (steps bound it first on a
            quiet machine).
        max_steps: cap every run at this many steps (a quick check; ``*_alone`` gets the
            sum over the stages).
        controls: the control runs to train as well (:func:`demo_runs`; ``()``: none).
        overrides: extra ``key=value`` recipe overrides (as ``fcnseg train --set``).
        progress: show progress bars.

    Returns:
        ``{"metrics": {run: {metric: value}}, "steps": {run: int}, "table": str,
        "seconds": float, "out": str}``.

    Raises:
        ConfigError: a bad override. TrainingDiverged: a run's loss became NaN.
    """
    t0 = time.perf_counter()
    out = Path(out)
    recipe = copy.deepcopy(DEMO_RECIPE)
    sets = [f"out={out}"]
    if max_steps is not None:
        for i, stage in enumerate(recipe["stages"]):
            steps = stage["train"].get("max_steps") or recipe["train"]["max_steps"]
            sets.append(f"stages.{i}.train.max_steps={min(steps, max_steps)}")
    # ``out`` is the caller's explicit choice (it may be absolute)
    cfg = config_from_dict(apply_overrides(recipe, [*sets, *overrides]), trust_out=True)
    runs = demo_runs(cfg, controls=controls)
    deadline = None if budget_seconds is None else t0 + float(budget_seconds)

    summaries: dict[str, dict] = {}
    trained_s: dict[str, float] = {}
    overheads: list[float] = []
    skipped: list[str] = []
    for i, run in enumerate(runs):
        if deadline is None:
            seconds = 60.0 * (run.cfg.train.max_minutes or 1e6)
        else:
            # The line first: its stages share the time as if there were no controls, and
            # the controls share what the line leaves (skipped below if it is too little),
            # so a slow or busy CPU costs the controls, not FCN-8s.
            left = [r for r in runs[i:] if bool(r.mirrors) == bool(run.mirrors)]
            overhead = sum(overheads) / len(overheads) if overheads else _FIRST_OVERHEAD_S
            spare = deadline - time.perf_counter() - _FINAL_RESERVE_S - overhead * len(left)
            seconds = spare * run.weight / sum(r.weight for r in left)
        if run.mirrors:
            # a control repeats the steps its stages actually took (a busy CPU may have cut
            # them short); without about the time they took, it would not be comparable
            run.cfg.train.max_steps = sum(int(summaries[m]["step"]) for m in run.mirrors)
            if seconds < 0.5 * sum(trained_s[m] for m in run.mirrors):
                skipped.append(run.name)
                continue
        started = time.perf_counter()
        summaries[run.name], trained_s[run.name] = _train_within(run, seconds, progress)
        overheads.append(max(time.perf_counter() - started - trained_s[run.name], 0.0))
    runs = [r for r in runs if r.name not in skipped]
    train_seconds = time.perf_counter() - t0

    metrics: dict[str, dict] = {}
    checkpoints: dict[str, Path] = {}
    steps: dict[str, int] = {}
    stops: dict[str, str] = {}
    for run in runs:
        best = Path(run.cfg.out) / "best.pt"
        ckpt = read_checkpoint(best)  # its metrics: the val-split evaluation that made it best
        scores = ckpt.get("metrics") or {}
        metrics[run.name] = {k: scores.get(k) for k in REPORT_KEYS}
        checkpoints[run.name] = best
        steps[run.name] = int(summaries[run.name].get("step", 0))
        stops[run.name] = str(summaries[run.name].get("stop_reason"))
    # steps since the start of the line: a stage and the control that mirrors it add theirs
    # to those of the run they continue
    for name in MODELS[1:]:
        steps[name] += steps[MODELS[MODELS.index(name) - 1]]
    for run in runs:
        if run.parent is not None:
            steps[run.name] += steps[run.parent]
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
    _figure(out, cfg, {name: checkpoints[name] for name in MODELS})
    curves = _curves(out, runs)
    seconds = time.perf_counter() - t0
    table = _table(metrics, steps, MODELS)
    report = _report(cfg, out, runs, metrics, steps, stops, checkpoints, curves is not None)
    if skipped:
        report += (
            f"\nSkipped for want of time (the budget left could not repeat their stages' "
            f"steps): {', '.join(_title(n) for n in skipped)}.\n"
        )
    report += _timing(seconds, train_seconds, budget_seconds, max_steps, overrides, out)
    (out / "report.md").write_text(report)
    return {
        "metrics": metrics,
        "steps": steps,
        "table": table,
        "seconds": seconds,
        "out": str(out),
    }


def _report(cfg, out, runs, metrics, steps, stops, checkpoints, curves: bool) -> str:
    split_rows = _split_sentences(metrics, steps)
    alone = f"{MODELS[-1]}_alone"
    text = f"""# fcnseg demo: FCN-32s -> FCN-16s -> FCN-8s on `shapes`

{_table(metrics, steps, MODELS)}

Scores in percent on the held-out `shapes` val split ({_val_text(cfg)}, whole images), from
each run's `best.pt`; steps count from the start of the staged line. Mean IU, pixel/mean
accuracy and f.w. IU are the paper's four metrics (one confusion matrix over the split);
boundary IoU (Cheng et al. 2021, band 2% of the diagonal) scores the contours only.

{_coarse_to_fine_sentence(metrics)}

![Figure 4 style: input, FCN-32s, FCN-16s, FCN-8s, ground truth](figure.png)
"""
    short = [
        f"{_title(r.name)} trained {steps[r.name] - steps.get(r.parent or '', 0)} of the "
        f"{_own_steps(r, steps)} steps it repeats before its share of the time ran out"
        for r in runs
        if r.mirrors and steps[r.name] - steps.get(r.parent or "", 0) < _own_steps(r, steps)
    ]
    if split_rows:
        text += f"""
## Skip or extra steps?

Each finer stage starts from the coarser one and trains on, so its gain mixes the skip and
the extra steps. The controls train the coarser model on from the same checkpoint with the
same steps and schedule, without the skip:

{_table(metrics, steps, CONTROLS)}

| gain | metric | total (points) | from the skip | from the extra steps |
|---|---|---:|---:|---:|
{chr(10).join(split_rows)}
"""
        if short:
            text += (
                "\nOn this run " + "; ".join(short) + ": a control with fewer steps "
                "understates what the steps give (run with a larger `--seconds` for equal "
                "steps).\n"
            )
        if alone in metrics and metrics[alone].get("mean_iou") is not None:
            a, f = metrics[alone]["mean_iou"], metrics[MODELS[-1]]["mean_iou"]
            text += (
                f"\n{_title(alone)} (from scratch, {steps.get(alone)} steps against the "
                f"line's {steps[MODELS[-1]]}, no staging) reaches {_pct(a)} mean IU against "
                f"{_pct(f)} for the staged FCN-8s: staging "
                f"{'gains' if f >= a else 'costs'} {abs(100 * (f - a)):.1f} points here.\n"
            )
    if curves:
        text += "\n![learning curves: loss and val scores against step](curves.png)\n"
    lines = "\n".join(
        f"- {_title(r.name)}: {steps[r.name]} steps in all ({stops[r.name]}), "
        f"`{checkpoints[r.name]}`"
        for r in runs
    )
    text += f"""
## Runs

{lines}
"""
    return text


def _own_steps(run: DemoRun, steps: dict) -> int:
    """Steps of the stages a control repeats (``steps`` counts from the start of the line)."""
    previous = {m: MODELS[MODELS.index(m) - 1] for m in MODELS[1:]}
    return sum(steps[m] - steps.get(previous.get(m, ""), 0) for m in run.mirrors)


def _val_text(cfg: Config) -> str:
    d = cfg.data
    val = build_dataset(d.dataset, d.root, d.val_split, **d.options)
    size = "x".join(str(v) for v in d.options.get("size", ()))
    return f"{len(val)} images" + (f" of {size} px" if size else "")


def _timing(seconds, train_seconds, budget, max_steps, overrides, out) -> str:
    flags = " ".join(f"--set {s}" for s in overrides)
    command = "fcnseg demo"
    command += f" --seconds {budget:g}" if budget not in (None, DEMO_SECONDS) else ""
    command += " --no-time-limit" if budget is None else ""
    command += f" --max-steps {max_steps}" if max_steps is not None else ""
    command += f" --out {out}" if str(out) != "runs/demo" else ""
    command += f" {flags}" if flags else ""
    budget_text = f"budget {budget:g} s" if budget is not None else "no time budget"
    return f"""
## Commands

    {command}
    # the staged line by hand (configs/shapes_demo.yaml holds it):
    fcnseg train --config configs/shapes_demo.yaml --set out={out}
    fcnseg eval --checkpoint {out}/fcn8s/best.pt --out {out}/eval
    fcnseg plot {out}/fcn32s {out}/fcn16s {out}/fcn8s --out {out}/stages.png

## Machine and time

- {_machine()}
- ISA: {_isa()}; load average at the end {_load()}
- wall time {seconds:.0f} s in all ({budget_text}; {train_seconds:.0f} s training and
  evaluation, the rest the figure, curves and this report)
"""


def _isa() -> str:
    """The SIMD level torch dispatches to, and the env vars that cap it (if set)."""
    try:
        level = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        level = "unknown"
    caps = [
        f"{k}={os.environ[k]}"
        for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
        if k in os.environ
    ]
    return f"torch CPU capability {level}" + (f" ({', '.join(caps)})" if caps else "")


def _load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "unknown"
