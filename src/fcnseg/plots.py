"""Charts with matplotlib: learning curves of training runs and per-class IoU bars.

matplotlib is an optional dependency (``pip install 'fcnseg[plots]'``; ``make demo`` and
``make test`` install it). It is imported only when a chart is drawn, with the ``Agg``
backend (files only, no display); without it :func:`require_matplotlib` raises
:class:`MatplotlibMissing`, one line that says how to install it.

A run directory is what :class:`fcnseg.engine.trainer.Trainer` writes: ``metrics.jsonl``,
one JSON object per event (``{"event": "train", "step", "loss", ...}`` every
``train.log_every`` steps, ``{"event": "eval", "step", "mean_iou", "boundary_iou", ...}``
at each evaluation). A staged run (``fcnseg train`` of a recipe with ``stages``, or
``fcnseg demo``) holds one such directory per stage; :func:`find_runs` finds them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "MatplotlibMissing",
    "find_runs",
    "iou_bar_chart",
    "learning_curves",
    "read_events",
    "read_run_log",
    "require_matplotlib",
]

#: val metrics drawn in the learning curves (fractions in [0, 1] in the log, percent drawn)
CURVE_METRICS = (("mean_iou", "mean IU"), ("boundary_iou", "boundary IoU"))


class MatplotlibMissing(ImportError):
    """matplotlib is not installed (it is the optional ``plots`` extra)."""


def require_matplotlib():
    """Import matplotlib with the file-only ``Agg`` backend and return ``matplotlib.pyplot``.

    Raises:
        MatplotlibMissing: matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        raise MatplotlibMissing(
            "matplotlib is needed for plots: pip install 'fcnseg[plots]' (or pip install "
            "matplotlib)"
        ) from None
    matplotlib.use("Agg", force=True)  # never open a window, whatever the environment says
    import matplotlib.pyplot as plt

    return plt


def read_run_log(run_dir: str | Path) -> dict[str, list[dict]]:
    """The events of one run directory's ``metrics.jsonl``.

    Returns:
        ``{"train": [{"step", "loss", ...}, ...], "eval": [{"step", "mean_iou", ...}, ...]}``
        in file order (other events are dropped; a torn last line is skipped).

    Raises:
        FileNotFoundError: ``run_dir/metrics.jsonl`` does not exist.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (is {run_dir} a training run folder?)")
    events: dict[str, list[dict]] = {"train": [], "eval": []}
    for record in read_events(path):
        if record.get("event") in events:
            events[record["event"]].append(record)
    return events


def read_events(path: str | Path) -> list[dict]:
    """Every event of a ``metrics.jsonl`` file, in file order; a blank line, or a partial
    one (a run killed mid-write, then resumed), is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def find_runs(run_dir: str | Path) -> dict[str, Path]:
    """The run directories under ``run_dir``, by name, in training order.

    Its sub-folders that hold ``metrics.jsonl`` (the stages of a staged run, whose joined log
    ``run_dir/metrics.jsonl`` restarts its steps at each stage), ordered by when each
    started (its ``config.yaml``, written as a run starts, else its log); else ``run_dir``
    itself when it holds ``metrics.jsonl``.

    Raises:
        FileNotFoundError: neither ``run_dir`` nor any sub-folder holds ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    subs = sorted(p.parent for p in run_dir.glob("*/metrics.jsonl")) if run_dir.is_dir() else []
    if not subs and (run_dir / "metrics.jsonl").is_file():
        return {run_dir.resolve().name: run_dir}
    if not subs:
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl in it or in its sub-folders")

    def started(p: Path) -> float:
        first = p / "config.yaml" if (p / "config.yaml").is_file() else p / "metrics.jsonl"
        return first.stat().st_mtime

    return {p.name: p for p in sorted(subs, key=started)}


def _axes_style(ax) -> None:
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def learning_curves(
    runs: Mapping[str, str | Path] | str | Path,
    out: str | Path,
    *,
    chain: bool | None = None,
    offsets: Mapping[str, int] | None = None,
    title: str | None = None,
) -> Path:
    """Draw loss and val metrics against step, one line per run, to ``out`` (PNG).

    Args:
        runs: ``{label: run_dir}``, or one folder (a run or a staged run: :func:`find_runs`).
        out: the PNG to write (parent folders are created).
        chain: draw each run after the previous one on the step axis (the stages of one staged
            recipe, each initialised from the previous); default: true when ``runs`` is one
            staged folder, else false (separate runs, all from step 0).
        offsets: the step at which each run starts on the step axis (overrides ``chain``;
            e.g. a control run continued from a stage's checkpoint starts where it did).
        title: the figure title (default: none).

    Returns:
        ``Path(out)``. The figure has two panels: training loss (log scale) and the val
        metrics (mean IU solid, boundary IoU dashed, in percent), one colour per run,
        1000x400 pixels.

    Raises:
        MatplotlibMissing: matplotlib is not installed.
        FileNotFoundError: a run folder has no ``metrics.jsonl``.
        ValueError: no run has any logged event.
    """
    if isinstance(runs, str | Path):
        found = find_runs(runs)
        chain = len(found) > 1 if chain is None else chain
        runs = found
    chain = bool(chain)
    logs = {label: read_run_log(path) for label, path in runs.items()}
    if not any(log["train"] or log["eval"] for log in logs.values()):
        raise ValueError(f"nothing logged yet in {', '.join(str(p) for p in runs.values())}")
    plt = require_matplotlib()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    offset = 0
    for i, (label, log) in enumerate(logs.items()):
        colour = colours[i % len(colours)]
        if offsets is not None:
            offset = int(offsets.get(label, 0))
        train = [r for r in log["train"] if _finite(r.get("loss"))]
        if train:
            steps = [offset + r["step"] for r in train]
            ax_loss.plot(steps, [r["loss"] for r in train], color=colour, label=label)
        for key, _ in CURVE_METRICS:
            points = [r for r in log["eval"] if _finite(r.get(key))]
            if points:
                ax_val.plot(
                    [offset + r["step"] for r in points],
                    [100 * r[key] for r in points],
                    color=colour,
                    linestyle="-" if key == "mean_iou" else "--",
                    marker="o" if key == "mean_iou" else "s",
                    markersize=4,
                    label=label if key == "mean_iou" else None,  # colour = run, style = metric
                )
        if chain and offsets is None:
            last = [r["step"] for r in log["train"] + log["eval"]]
            offset += max(last, default=0)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step" + (" (stages one after the other)" if chain else ""))
    ax_loss.set_ylabel("training loss")
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("val mean IU (solid) / boundary IoU (dashed), %")
    ax_val.set_ylim(0, 100)
    ax_val.set_xlim(left=0)  # the same step axis as the loss panel
    for ax in (ax_loss, ax_val):
        _axes_style(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return _save(plt, fig, out)


def iou_bar_chart(
    iou: Sequence[float | None],
    class_names: Sequence[str],
    out: str | Path,
    *,
    mean_iou: float | None = None,
    title: str | None = None,
) -> Path:
    """A horizontal bar per class: its IoU in percent (classes absent from the split, IoU
    ``None``/NaN, are marked "n/a"), with the mean IU as a vertical line.

    Args:
        iou: per-class IoU fractions (``ConfusionMatrix.compute()["iou"]``).
        class_names: one name per class.
        out: the PNG to write.
        mean_iou: drawn as a line when given.
        title: the figure title.

    Returns:
        ``Path(out)``; the figure is 700 pixels wide, 0.3 inch per class high (min 2.5").

    Raises:
        MatplotlibMissing: matplotlib is not installed.
        ValueError: ``iou`` and ``class_names`` differ in length.
    """
    if len(iou) != len(class_names):
        raise ValueError(f"{len(iou)} IoU values for {len(class_names)} class names")
    plt = require_matplotlib()
    values = [100 * float(v) if _finite(v) else 0.0 for v in iou]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(values) + 1.0)), dpi=100)
    ys = list(range(len(values)))[::-1]  # first class on top
    ax.barh(ys, values, color="#4c72b0")
    for y, v, raw in zip(ys, values, iou, strict=True):
        ax.text(v + 1, y, f"{v:.1f}" if _finite(raw) else "n/a", va="center", fontsize=8)
    ax.set_yticks(ys, [str(n) for n in class_names], fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    if mean_iou is not None and _finite(mean_iou):
        ax.axvline(
            100 * mean_iou, color="#c44e52", linestyle="--", label=f"mean IU {100 * mean_iou:.1f}"
        )
        ax.legend(fontsize=8, loc="lower right")
    _axes_style(ax)
    if title:
        ax.set_title(title)
    return _save(plt, fig, out)


def _save(plt, fig, out: str | Path) -> Path:
    """Lay out, write ``out`` (creating its folder) and free the figure."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
