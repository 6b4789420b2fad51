"""Running a recipe: :func:`train` (what ``fcnseg train`` runs) and the paper's staged recipe
(FCN-32s -> 16s -> 8s) as one call, :func:`train_staged`. Built on :class:`Trainer`, which runs
one stage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fcnseg.config import Config, stage_configs
from fcnseg.engine.checkpoint import read_checkpoint
from fcnseg.engine.distributed import is_main_process
from fcnseg.engine.run_log import write_curves
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
    shows the stages' learning curves one after the other. With ``resume``, finished
    stages (``last.pt`` at their step budget) are skipped and the interrupted one resumes.
    A recipe without stages is trained as one stage named ``main``.
    """
    summaries: dict[str, dict] = {}
    summary: dict = {}
    for name, stage_cfg in stage_configs(cfg):
        stage_resume = resume and (Path(stage_cfg.out) / "last.pt").is_file()
        if stage_resume and stage_finished(stage_cfg):
            summaries[name] = summary = {"out": stage_cfg.out, "stop_reason": "already finished"}
            continue
        summary = Trainer(
            stage_cfg, resume=stage_resume, progress=progress, callbacks=callbacks
        ).fit()
        summaries[name] = summary
    if is_main_process() and cfg.stages:  # the stages one after the other, in one picture
        runs = {name: Path(stage_cfg.out) for name, stage_cfg in stage_configs(cfg)}
        write_curves({k: v for k, v in runs.items() if (v / "metrics.jsonl").is_file()}, cfg.out)
    return {**summary, "stages": summaries}


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
