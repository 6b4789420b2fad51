"""Running a recipe: :func:`train` (what ``fcnseg train`` runs) and the paper's staged recipe
(FCN-32s -> 16s -> 8s) as one call, :func:`train_staged`. Built on :class:`Trainer`, which runs
one stage."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from fcnseg.config import Config, stage_configs
from fcnseg.engine.checkpoint import read_checkpoint
from fcnseg.engine.distributed import is_main_process
from fcnseg.engine.run_log import join_stage_logs, write_curves
from fcnseg.engine.trainer import Trainer

__all__ = ["stage_finished", "train", "train_staged"]


def train_staged(
    cfg: Config,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[Callable[[Trainer], None]] | None = None,
) -> dict:
    """The paper's staged recipe (FCN-32s -> 16s -> 8s) as one call.

    Runs :func:`~fcnseg.config.stage_configs` in order, each stage writing to
    ``<out>/<stage name>`` and initialised (``model.init_from``) from the previous stage's
    ``best.pt`` through :func:`~fcnseg.models.transfer_weights`; ``<out>/curves.png`` then
    shows the stages' learning curves one after the other, ``<out>/metrics.jsonl`` holds
    their logs (each event with its ``stage``) and ``<out>/best.pt`` is the last stage's:
    where a one-stage recipe leaves them. With ``resume``, finished
    stages (``last.pt`` at their step budget) are skipped and the interrupted one resumes.
    A recipe without stages is trained as one stage named ``main``.
    """
    summaries: dict[str, dict] = {}
    summary: dict = {}
    stages = stage_configs(cfg)
    for name, stage_cfg in stages:
        stage_resume = resume and (Path(stage_cfg.out) / "last.pt").is_file()
        if stage_resume and stage_finished(stage_cfg):
            summaries[name] = summary = {"out": stage_cfg.out, "stop_reason": "already finished"}
            continue
        summary = Trainer(
            stage_cfg, resume=stage_resume, progress=progress, callbacks=callbacks
        ).fit()
        summaries[name] = summary
    if is_main_process() and cfg.stages:
        _leave_result(Path(cfg.out), {name: Path(c.out) for name, c in stages})
    return {**summary, "stages": summaries}


def _leave_result(out: Path, runs: dict[str, Path]) -> None:
    """What a one-stage run leaves in ``out``, for the staged run as a whole: the stages'
    curves one after the other, their logs as one ``metrics.jsonl``, the last ``best.pt``."""
    logged = {k: v for k, v in runs.items() if (v / "metrics.jsonl").is_file()}
    write_curves(logged, out)
    join_stage_logs(logged, out)
    final = list(runs.values())[-1] / "best.pt"
    if final.is_file():
        partial = out / ".best.pt.tmp"
        shutil.copyfile(final, partial)
        os.replace(partial, out / "best.pt")


def stage_finished(cfg: Config) -> bool:
    """True when the stage's ``last.pt`` is at its step or epoch budget."""
    ckpt = read_checkpoint(Path(cfg.out) / "last.pt")
    t = cfg.train
    return (t.max_steps is not None and ckpt["step"] >= t.max_steps) or ckpt["epoch"] >= t.epochs


def train(
    cfg: Config,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[Callable[[Trainer], None]] | None = None,
) -> dict:
    """Train ``cfg`` (what ``fcnseg train`` runs); a staged recipe goes to :func:`train_staged`.

    Returns:
        the summary of :meth:`Trainer.fit` (for stages: of the last stage, with ``"stages"``
        mapping each stage name to its summary).

    Raises:
        TrainingDiverged: NaN/inf loss. ValueError / ConfigError / FileNotFoundError /
        CheckpointError: a bad recipe, missing data or a missing ``last.pt`` on resume.
    """
    if cfg.stages:
        return train_staged(cfg, resume=resume, progress=progress, callbacks=callbacks)
    return Trainer(cfg, resume=resume, progress=progress, callbacks=callbacks).fit()
