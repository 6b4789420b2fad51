"""What a training run writes besides checkpoints: its metrics log and its learning curves.

``metrics.jsonl`` (one JSON object per event), ``metrics.csv`` (the same, one row per event)
and TensorBoard events under ``tb/`` (when ``torch.utils.tensorboard`` imports), written by
:class:`MetricsLog` on the main process only; :class:`TrainWindow` averages the loss and the
throughput between two ``train`` records; :func:`write_curves` draws ``curves.png``;
:func:`join_stage_logs` writes a staged run's stages as one ``metrics.jsonl``.
"""

from __future__ import annotations

import csv
import json
import os
import time
import warnings
from pathlib import Path

from fcnseg.engine.evaluation import json_safe
from fcnseg.plots import read_events

__all__ = [
    "CSV_COLUMNS", "EVAL_KEYS", "MetricsLog", "TrainWindow", "join_stage_logs", "write_curves",
]  # fmt: skip

EVAL_KEYS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou")
CSV_COLUMNS = ("event", "step", "epoch", "time_s", "loss", "lr", "images_per_s", *EVAL_KEYS)


class MetricsLog:
    """``metrics.jsonl``, ``metrics.csv`` and TensorBoard events in ``out``; a no-op unless
    ``enabled`` (only the main process writes)."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.out = out
        self.tb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out / "tb"))
        except Exception:  # tensorboard is optional (the "logging" extra)
            self.tb = None

    def write(self, event: str, step: int, **values) -> None:
        if not self.enabled:
            return
        record = {"event": event, "step": step, **values}
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(record)) + "\n")
        csv_path = self.out / "metrics.csv"
        new = not csv_path.exists()
        with open(csv_path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: record.get(k, "") for k in CSV_COLUMNS})
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and key not in ("epoch",):
                    self.tb.add_scalar(f"{event}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TrainWindow:
    """The optimiser steps since the last ``train`` record: their mean loss and images/s."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss, self.steps, self.images = 0.0, 0, 0
        self.started = time.perf_counter()

    def add(self, loss: float, images: int) -> None:
        self.loss += loss
        self.steps += 1
        self.images += images

    def record(self, lr: float) -> dict:
        """``{"loss", "lr", "images_per_s"}`` of the window."""
        dt = max(time.perf_counter() - self.started, 1e-9)
        return {"loss": self.loss / self.steps, "lr": lr, "images_per_s": self.images / dt}


def write_curves(runs: dict[str, Path] | Path, out_dir: str | Path) -> Path | None:
    """``<out_dir>/curves.png``: loss and val metrics against step (:mod:`fcnseg.plots`).

    ``runs`` is one run folder, or ``{stage name: folder}`` drawn one after the other. The
    picture is a by-product: without matplotlib (the ``plots`` extra) it is skipped with a
    warning and training is unaffected. Returns the path written, or ``None``.
    """
    from fcnseg.plots import MatplotlibMissing, learning_curves

    try:
        return learning_curves(runs, Path(out_dir) / "curves.png", chain=isinstance(runs, dict))
    except MatplotlibMissing as e:
        warnings.warn(f"{e}; {out_dir}/curves.png not written", stacklevel=2)
    except (OSError, ValueError) as e:  # a full disk or an empty log must not fail the run
        warnings.warn(f"{out_dir}/curves.png not written: {e}", stacklevel=2)
    return None


def join_stage_logs(runs: dict[str, Path], out_dir: str | Path) -> Path:
    """``<out_dir>/metrics.jsonl``: the stages' ``metrics.jsonl`` (each must exist) one after
    the other, each event with its ``stage`` name (steps count from 0 again in each stage),
    so a staged run's folder has the log where a one-stage run has it. Written atomically."""
    path = Path(out_dir) / "metrics.jsonl"
    partial = path.with_name(".metrics.jsonl.tmp")
    with open(partial, "w") as f:
        for name, folder in runs.items():
            for event in read_events(Path(folder) / "metrics.jsonl"):
                f.write(json.dumps({**event, "stage": name}) + "\n")
    os.replace(partial, path)
    return path
