"""Training from a recipe: ``train(cfg)`` (what ``fcnseg train`` runs) and ``train_staged(cfg)``.

The loop has the shape of torchvision's ``references/segmentation/train.py`` (per-pixel
cross-entropy with ignore 255, a per-step ``LambdaLR``, ``GradScaler`` for fp16, a checkpoint
holding model + optimiser + scheduler + scaler + epoch) and the evaluation cadence of the Caffe
reference ``solve.py`` (``solver.step(4000)`` then ``score.seg_tests``): evaluate every
``eval.every_steps`` and at the end.

Exact resumption. A run stopped at any checkpoint and resumed with ``resume=True`` produces the
same weights as an uninterrupted run (on the same device and thread count):

- the sample order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, so a resumed
  run skips the batches already seen in the current epoch;
- every sample's random augmentation is drawn from ``(seed, epoch, index)`` alone (a forked
  torch RNG around each ``__getitem__``), whatever the number of DataLoader workers;
- the model, optimiser, scheduler, scaler, global RNG states (torch, CUDA, numpy, python),
  step, epoch and position in the epoch are all in ``last.pt``.

Distributed data parallel (``torchrun --nproc-per-node N -m fcnseg train ...``). When torchrun's
environment describes more than one process, the trainer joins the process group
(:func:`~fcnseg.engine.distributed.init_distributed`: NCCL on GPUs, gloo on the CPU) and wraps
the model in ``DistributedDataParallel``. The run is defined by its global batch, so that the
same recipe gives the same weights whatever the number of processes:

- ``data.batch_size`` is the GLOBAL batch (all ranks together; it must be divisible by the
  world size). The global batch of step ``t`` is the same set of samples for any world size:
  rank ``r`` takes the ``r``-th contiguous slice of the batch drawn from ``(seed, epoch)``.
- the ``"mean"`` loss is the mean over the valid (non-ignore) pixels of the global batch: each
  rank sums its pixel losses and divides by the all-reduced global pixel count (class-weight
  sum), times the world size, so DDP's gradient averaging yields exactly the global mean
  (averaging per-rank means would weight pixels unequally when ranks hold different numbers
  of ignore pixels). ``"sum"`` divides by the global number of images the same way.
- with ``train.sync_bn`` BatchNorm layers use global-batch statistics (torch's SyncBatchNorm on
  CUDA, :class:`~fcnseg.engine.distributed.SyncBatchNorm2d` on the CPU); without it each
  rank normalises with its own slice's statistics (torchvision's default), which is not the
  single-process computation. Dropout masks are drawn per rank.
- checkpoints hold the unwrapped model, step, epoch and the position in the epoch in global
  batches, so a run resumes under another world size at the right sample.
- evaluation shards the val set over the ranks and all-reduces the confusion matrix.

Everything written to disk goes through :func:`~fcnseg.engine.distributed.is_main_process`.

The pieces live beside this file: :mod:`~fcnseg.engine.seeding` (global RNG seeding and
state), :mod:`~fcnseg.engine.sampling` (sample order and augmentation draws),
:mod:`~fcnseg.engine.run_log` (metrics log and curves), :mod:`~fcnseg.engine.staged` (the
32s -> 16s -> 8s recipe), :mod:`~fcnseg.engine.distributed` and
:func:`~fcnseg.engine.loss.global_batch_loss` (data parallelism).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fcnseg.accel.precision import (
    channels_last_pays,
    precision_autocast,
    precision_record,
    resolve_precision,
)
from fcnseg.accel.timing import time_interleaved
from fcnseg.accel.training import for_training
from fcnseg.config import Config, config_to_dict, save_config, training_precision
from fcnseg.data import build_dataset, build_transforms, pad_collate
from fcnseg.engine.checkpoint import read_checkpoint, save_model
from fcnseg.engine.distributed import (
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    convert_sync_batchnorm,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    mean_over_ranks,
)
from fcnseg.engine.evaluation import evaluate, json_safe
from fcnseg.engine.loss import build_loss, global_batch_loss
from fcnseg.engine.optim import build_optimizer, build_scheduler
from fcnseg.engine.run_log import EVAL_KEYS, MetricsLog, TrainWindow, write_curves
from fcnseg.engine.sampling import EpochBatches, SeededSamples
from fcnseg.engine.seeding import rng_state, seed_everything, set_rng_state, worker_init
from fcnseg.io.devices import resolve_device  # one device rule for training and inference
from fcnseg.io.images import set_max_image_pixels
from fcnseg.models import build_model_from_config, transfer_weights
from fcnseg.models.freezing import freeze_backbone_to_stride
from fcnseg.models.weights import check_compatible, read_fcn_weights

__all__ = [
    "Trainer",
    "TrainingDiverged",
    "seed_everything",
    "write_curves",
]


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the step was refused and the run stopped."""


class Trainer:
    """One training run of one recipe (no stages: see :func:`train_staged`).

    Args:
        cfg: a resolved :class:`~fcnseg.config.Config` (``cfg.stages`` must be empty).
        resume: continue from ``<out>/last.pt`` (``FileNotFoundError`` if there is none).
        progress: show tqdm bars.
        callbacks: functions called as ``fn(trainer)`` after every optimiser step (after that
            step's logging, evaluation and checkpoint).

    After :meth:`fit`, ``trainer.model`` holds the final weights; ``<out>`` holds
    ``config.yaml``, ``last.pt``, ``best.pt``, ``metrics.jsonl``, ``metrics.csv``, ``tb/``
    and ``curves.png`` (loss and val metrics against step; needs matplotlib).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        resume: bool = False,
        progress: bool = True,
        callbacks: list[Callable[[Trainer], None]] | None = None,
    ) -> None:
        if cfg.stages:
            raise ValueError("Trainer runs one stage; use train_staged(cfg) for a staged recipe")
        self.cfg = cfg
        self.progress = progress
        self.callbacks = list(callbacks or [])
        self.out = Path(cfg.out)
        self._check_batching()
        self._join_processes()
        self._build_datasets()
        self.criterion = self._build_criterion()  # reads the masks before augmentation is set
        self._build_model(init=not resume)
        self._attach_transforms()
        self._plan_epochs()
        self._build_optimisation()
        self._reset_progress()
        if resume:
            self._load_last()
        self._wrap_data_parallel()

    # ------------------------------------------------------------------ set-up

    def _check_batching(self) -> None:
        t, d = self.cfg.train, self.cfg.data
        if t.grad_accum < 1:
            raise ValueError(f"train.grad_accum must be >= 1, got {t.grad_accum}")
        if d.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {d.batch_size}")

    def _join_processes(self) -> None:
        """Device, rank and world size; seeds the global generators."""
        t = self.cfg.train
        # Under torchrun: join the process group (NCCL for CUDA, gloo for the CPU);
        # LOCAL_RANK picks this rank's GPU. A no-op for a single process.
        self.device = init_distributed(resolve_device(t.device))
        self.rank, self.world_size = get_rank(), get_world_size()
        self.main = is_main_process()
        self.dtype = getattr(torch, t.dtype)
        seed_everything(t.seed)

    def _build_datasets(self) -> None:
        d, m = self.cfg.data, self.cfg.model
        if d.max_image_pixels:  # decompression-bomb guard (PIL's default otherwise)
            set_max_image_pixels(d.max_image_pixels)
        self.train_set = build_dataset(d.dataset, d.root, d.train_split, **d.options)
        self.val_set = build_dataset(d.dataset, d.root, d.val_split, **d.options)
        if d.cache:  # decoded now, before the clock: no step waits on a PNG
            for dataset in (self.train_set, self.val_set):
                dataset.cache_decoded()
                dataset.fill_cache()
        if len(self.train_set) == 0:
            raise ValueError(f"{d.dataset} {d.train_split}: no training samples")
        if self.train_set.num_classes != m.num_classes:
            raise ValueError(
                f"model.num_classes={m.num_classes} but {d.dataset} has "
                f"{self.train_set.num_classes} classes ({', '.join(self.train_set.classes)})"
            )

    def _build_criterion(self) -> torch.nn.Module:
        """The loss; ``median_freq`` weights count the training masks as stored, so this runs
        while the training set has no transforms yet (no second copy of the set is built)."""
        t = self.cfg.train
        frequency_weights = isinstance(t.class_weights, str)
        if frequency_weights and self.train_set.transforms is not None:
            raise RuntimeError("class-weight frequencies must be counted before augmentation")
        return build_loss(
            t.loss_reduction,
            t.class_weights,
            num_classes=self.cfg.model.num_classes,
            dataset=self.train_set if frequency_weights else None,
            ignore_index=self.train_set.ignore_index,
            seed=t.seed,
            ohem_thresh=t.ohem_thresh,
            ohem_min_kept=t.ohem_min_kept,
        ).to(self.device, dtype=self.dtype)

    def _build_model(self, init: bool) -> None:
        """The FCN (and ``model.init_from`` unless resuming), on the training device."""
        m, t = self.cfg.model, self.cfg.train
        description = {k: v for k, v in dataclasses.asdict(m).items() if k != "init_from"}
        self.model = build_model_from_config(
            {
                **description,
                "class_names": list(self.train_set.classes),
                "palette": self.train_set.palette,
            }
        )
        self.init_copied: list[str] = []
        if m.init_from and init:
            self.init_copied = self._copy_init_weights(m.init_from)
        self.frozen: list[str] = []
        if t.freeze_backbone_to_stride is not None:  # 0 and 1 are refused, not ignored
            self.frozen = freeze_backbone_to_stride(self.model, t.freeze_backbone_to_stride)
        if t.sync_bn:
            convert_sync_batchnorm(self.model, self.device)
        self.model.to(self.device, dtype=self.dtype)
        # the one precision policy (fcnseg.accel.precision): autocast over fp32 master weights
        requested = training_precision(t)
        self.precision = resolve_precision(requested, self.device)
        # auto on hardware with a low precision: bf16 is not faster for every network (depthwise
        # layers gain nothing on AMX), so the first batch times both (_choose_precision), as
        # the inference core's auto does; one process only (ranks would have to agree)
        self._auto_pending = (
            requested == "auto" and self.precision != "fp32" and self.world_size == 1
        )
        self.channels_last = t.channels_last or channels_last_pays(self.precision, self.device)
        self.model.config["trained_precision"] = precision_record(self.precision, self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        for_training(self.model, self.device)  # CPU: fc6/fc7 as matmuls (same state dict)

    def _copy_init_weights(self, path: str) -> list[str]:
        """Staged init: the parameters of ``path`` that fit this model (names copied)."""
        state, info = read_fcn_weights(path)
        if "config" in info:
            check_compatible(path, info["config"], self.model.config)
        copied = transfer_weights(self.model, state)
        if not copied:
            raise ValueError(f"model.init_from={path}: no parameter fits {self.cfg.model.arch}")
        return copied

    def _attach_transforms(self) -> None:
        d = self.cfg.data
        preprocess = self.model.preprocess
        self.train_set.transforms = build_transforms(
            train=True,
            crop_size=tuple(d.crop_size) if d.crop_size else None,
            scale_range=tuple(d.scale_range),
            hflip=d.hflip,
            color_jitter=d.color_jitter,
            preprocess=preprocess,
            ignore_index=self.train_set.ignore_index,
            base_size=d.base_size,
        )
        self.val_set.transforms = build_transforms(
            train=False, preprocess=preprocess, base_size=d.base_size
        )

    def _plan_epochs(self) -> None:
        """Global batch, steps per epoch and the run's step budget."""
        d, t = self.cfg.data, self.cfg.train
        # Whole images (crop_size null) are trained one at a time per process, as the paper
        # does (batch 1); crops are batched. data.batch_size is the global batch.
        self.batch_size = d.batch_size if d.crop_size else self.world_size
        if not d.crop_size and d.batch_size != self.batch_size:
            warnings.warn(
                f"data.crop_size is null: training on whole images, one per process (global "
                f"batch {self.batch_size}; data.batch_size={d.batch_size} applies to crops)",
                stacklevel=3,
            )
        if self.batch_size % self.world_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch: it must be divisible "
                f"by the {self.world_size} processes (each gets batch_size / world size)"
            )
        self.samples = SeededSamples(self.train_set, t.seed)
        full_batches = max(len(self.train_set) // self.batch_size, 1)
        self.steps_per_epoch = full_batches // t.grad_accum
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_set)} training samples make {full_batches} batches of "
                f"{self.batch_size}, fewer than train.grad_accum={t.grad_accum}"
            )
        self.batches_per_epoch = self.steps_per_epoch * t.grad_accum
        epoch_steps = t.epochs * self.steps_per_epoch
        self.total_steps = min(t.max_steps, epoch_steps) if t.max_steps else epoch_steps

    def _build_optimisation(self) -> None:
        """Optimiser, learning-rate schedule and gradient scaler."""
        t = self.cfg.train
        self.optimizer = build_optimizer(self.model, t)
        # max_minutes bounds the schedule too: its position is max(step, time) progress
        self._time_fraction = 0.0
        self.scheduler = build_scheduler(
            self.optimizer, t, self.total_steps, time_fraction=lambda: self._time_fraction
        )
        # fp16 on a GPU needs loss scaling; bf16 has fp32's range and needs none
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

    def _reset_progress(self) -> None:
        self.step = 0
        self.epoch = 0
        self.epoch_batches = 0  # batches of the current epoch already consumed
        self.best_mean_iou = -math.inf
        self.last_metrics: dict | None = None
        self.stop_reason = ""

    def _wrap_data_parallel(self) -> None:
        """The wrapper runs the training forward; ``self.model`` stays the plain FCN (what
        checkpoints, evaluation and callbacks see)."""
        self.net: torch.nn.Module = self.model
        if self.world_size == 1:
            return
        self.net = DistributedDataParallel(
            self.model, device_ids=[self.device] if self.device.type == "cuda" else None
        )
        if self.rank > 0:
            # Dropout masks differ between ranks; rank 0 keeps the seeded/restored stream
            # (the one checkpoints store).
            seq = np.random.SeedSequence([abs(self.cfg.train.seed), 2**31 + self.rank, self.step])
            torch.manual_seed(int(seq.generate_state(1)[0]))

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_extra(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "epoch_batches": self.epoch_batches,
            "rng": rng_state(),
            "metrics": json_safe(self.last_metrics) if self.last_metrics else None,
            "best_mean_iou": self.best_mean_iou if math.isfinite(self.best_mean_iou) else None,
            "train_config": config_to_dict(self.cfg),
        }

    def save_checkpoint(self, name: str = "last.pt") -> Path:
        """Write ``<out>/<name>`` atomically (main process only)."""
        path = self.out / name
        if self.main:
            save_model(self.model, path, **self._checkpoint_extra())
        return path

    def _load_last(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume: {path} does not exist")
        ckpt = read_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") and self.scaler.is_enabled():  # resumed across precisions: the
            self.scaler.load_state_dict(ckpt["scaler"])  # scale only exists for fp16
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        self.epoch_batches = int(ckpt.get("epoch_batches", 0))
        best = ckpt.get("best_mean_iou")
        self.best_mean_iou = -math.inf if best is None else float(best)
        self.last_metrics = ckpt.get("metrics")
        set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------ one step

    def _loader(self) -> DataLoader:
        d, t = self.cfg.data, self.cfg.train
        sampler = EpochBatches(
            len(self.train_set),
            self.batch_size,
            self.batches_per_epoch,
            t.seed,
            self.epoch,
            self.epoch_batches,
            rank=self.rank,
            world_size=self.world_size,
        )
        return DataLoader(
            self.samples,
            batch_sampler=sampler,
            num_workers=d.workers,
            collate_fn=functools.partial(pad_collate, ignore_index=self.train_set.ignore_index),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=worker_init,
            # An explicit generator: building an iterator never draws from the global RNG.
            generator=torch.Generator().manual_seed(t.seed),
        )

    def _autocast(self):
        return precision_autocast(self.precision, self.device)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """This rank's loss, such that DDP's gradient average is the gradient of the loss of
        the global batch (the per-rank criterion when there is one process)."""
        return global_batch_loss(self.criterion, logits, masks, self.world_size)

    def _global_value(self, loss: torch.Tensor) -> float:
        """The loss of the global batch as a float, identical on every rank."""
        value = loss.detach().float().reshape(1)
        if self.world_size > 1:
            value = all_reduce_sum(value.clone()) / self.world_size
        return float(value)

    def _forward_backward(self, images, masks, sync: bool) -> tuple[float, int]:
        """One micro-batch: forward, loss, backward (gradients all-reduced only when ``sync``).

        Returns the global batch's loss and image count. Raises :class:`TrainingDiverged`
        before the backward of a NaN/inf loss."""
        images = images.to(self.device, self.dtype, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        masks = masks.to(self.device, non_blocking=True)
        if self._auto_pending:
            timings = self._choose_precision(images, masks)
            self.log.write("auto_precision", self.step, chosen=self.precision, ms=timings)
        with nullcontext() if sync else self.net.no_sync():
            with self._autocast():
                logits = self.net(images)
            loss = self._loss(logits, masks)
            value = self._global_value(loss)  # the same on every rank
            if not math.isfinite(value):
                self.optimizer.zero_grad(set_to_none=True)
                raise self._diverged(value)
            self.scaler.scale(loss / self.cfg.train.grad_accum).backward()
        self.epoch_batches += 1
        return value, images.shape[0] * self.world_size

    def _choose_precision(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
        """``train.precision: auto`` where the hardware has a low precision: a forward and
        backward of this batch timed in fp32 and in the low precision (interleaved, after one
        untimed run each), the faster kept for the run. The model is left as it was (BatchNorm
        statistics restored, gradients cleared). Returns the median ms of each."""
        self._auto_pending = False
        low = self.precision
        saved = [b.detach().clone() for b in self.model.buffers()]

        def step(precision: str) -> None:
            with precision_autocast(precision, self.device):
                logits = self.net(images)
            self._loss(logits, masks).backward()

        measured = time_interleaved(
            {p: functools.partial(step, p) for p in ("fp32", low)}, rounds=2, device=self.device
        )
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, value in zip(self.model.buffers(), saved, strict=True):
                buffer.copy_(value)
        timings = {p: round(m["ms"], 1) for p, m in measured.items()}
        self.precision = low if timings[low] < timings["fp32"] else "fp32"
        self.model.config["trained_precision"] = precision_record(self.precision, self.device)
        return timings

    def _optimizer_step(self) -> float:
        """Apply the accumulated gradients and advance the schedule; returns the step's lr."""
        t = self.cfg.train
        if t.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], t.clip_grad_norm
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self._time_fraction = self._budget_fraction()
        self.scheduler.step()
        self.step += 1
        return lr

    def _diverged(self, loss: float) -> TrainingDiverged:
        t = self.cfg.train
        last = self.out / "last.pt"
        kept = f"last good checkpoint kept: {last}" if last.is_file() else "no checkpoint yet"
        hint = "the learning rate is likely too high"
        if t.loss_reduction == "sum":
            hint += (
                " for a sum-reduced loss (its gradients scale with the pixels per image: the "
                "reference uses lr 1e-10 with momentum 0.99; or use loss_reduction: mean)"
            )
        elif self.precision == "fp16":
            hint += " or fp16 overflowed (try train.precision=bf16)"
        return TrainingDiverged(
            f"loss is {loss} at step {self.step + 1}: step refused, training stopped; "
            f"{hint} (train.lr={t.lr}); {kept}"
        )

    # ------------------------------------------------------------------ after a step

    def _advance_epoch(self) -> bool:
        """Count the epoch done when its batches are; True at the end of an epoch."""
        if self.epoch_batches < self.batches_per_epoch:
            return False
        self.epoch += 1
        self.epoch_batches = 0
        return True

    def _out_of_budget(self) -> str:
        """The stop rule: why the run is over (``""`` while it is not)."""
        t = self.cfg.train
        if t.max_steps is not None and self.step >= t.max_steps:
            return f"max_steps={t.max_steps} reached"
        if self.epoch >= t.epochs:
            return f"epochs={t.epochs} done"
        # the clock is read once per step (_budget_fraction, the same on every rank), so the
        # step that stops the run is the one whose schedule position reached the end
        if t.max_minutes is not None and self._time_fraction >= 1.0:
            return f"max_minutes={t.max_minutes:.3g} reached"
        return ""

    def _budget_fraction(self) -> float:
        """Share of ``train.max_minutes`` spent since :meth:`fit` started (0 without a time
        budget); the mean over ranks under DDP, so every rank sets the same learning rate."""
        minutes = self.cfg.train.max_minutes
        if not minutes:
            return 0.0
        return mean_over_ranks((time.perf_counter() - self._t0) / (60.0 * minutes), self.device)

    def _log_due(self) -> bool:
        # every log_every steps, and the last (partial) window of the run
        every = self.cfg.train.log_every
        return self.step % every == 0 or self.step == self.total_steps or bool(self.stop_reason)

    def _log_train(self, lr: float, epoch: int) -> None:
        record = self._window.record(lr)
        self._bar.set_postfix(
            loss=f"{record['loss']:.4g}", lr=f"{lr:.3g}", img_s=f"{record['images_per_s']:.1f}"
        )
        self.log.write(
            "train", self.step, epoch=epoch, time_s=self._elapsed(), **record,
            **self.model.config["trained_precision"],  # precision, device, the CPU's ISA
        )  # fmt: skip
        self._window.reset()

    def _eval_due(self) -> bool:
        every = self.cfg.eval.every_steps
        return bool(every) and self.step % every == 0 and not self.stop_reason

    def _checkpoint_due(self, end_of_epoch: bool) -> bool:
        # every checkpoint_every steps, or at the end of each epoch when that is unset
        every = self.cfg.train.checkpoint_every
        return self.step % every == 0 if every else end_of_epoch

    def _train_mode(self) -> None:
        """Training mode; with ``train.freeze_bn`` the backbone's BatchNorm layers stay in
        eval mode (their ImageNet statistics are used and kept; scale and shift still learn)."""
        self.net.train()
        if self.cfg.train.freeze_bn:
            for m in self.model.backbone.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _after_step(self, loss: float, images: int, lr: float) -> bool:
        """Bookkeeping of one optimiser step: epoch count, stop rule, log, evaluation,
        checkpoint, callbacks. Returns True at the end of an epoch."""
        self._window.add(loss, images)
        self._bar.update(1)
        step_epoch = self.epoch
        end_of_epoch = self._advance_epoch()
        self.stop_reason = self._out_of_budget()
        if self._log_due():
            self._log_train(lr, step_epoch)
        if self._eval_due():
            self.run_eval()
            self._evaluated_at = self.step
            self._train_mode()
        if self._checkpoint_due(end_of_epoch):
            self.save_checkpoint()
        for fn in self.callbacks:
            fn(self)
        return end_of_epoch

    # ------------------------------------------------------------------ the run

    def run_eval(self) -> dict:
        """Score the current model on the val split; log it; save ``best.pt`` on a new best.

        Distributed: every rank scores its shard of the val set with rank 0's BatchNorm
        statistics (the weights rank 0 saves); the scores are those of the whole set."""
        broadcast_buffers(self.model)
        scores = evaluate(
            self.model,
            self.val_set,
            batch_size=1,
            device=self.device,
            tta=self.cfg.eval.tta,
            boundary_dilation=self.cfg.eval.boundary_dilation,
            progress=self.progress,
            precision=self.precision,
        )
        self.last_metrics = scores
        self.log.write(
            "eval", self.step, epoch=self.epoch, time_s=self._elapsed(),
            **{k: scores[k] for k in EVAL_KEYS},
        )  # fmt: skip
        miou = scores["mean_iou"]
        if not math.isnan(miou) and miou > self.best_mean_iou:
            self.best_mean_iou = miou
            self.save_checkpoint("best.pt")
        return scores

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self._t0, 3)

    def _train_epoch(self) -> None:
        """Optimiser steps over the rest of the current epoch, or until the stop rule holds."""
        accum = self.cfg.train.grad_accum
        step_loss, step_images = 0.0, 0
        for i, (images, masks) in enumerate(self._loader()):
            # a step starts on a batch index divisible by grad_accum (epochs hold whole steps)
            last_micro = (i + 1) % accum == 0
            # DDP: all-reduce gradients on the last micro-batch of a step only.
            value, n = self._forward_backward(images, masks, self.world_size == 1 or last_micro)
            step_loss += value / accum
            step_images += n
            if not last_micro:
                continue
            end_of_epoch = self._after_step(step_loss, step_images, self._optimizer_step())
            step_loss, step_images = 0.0, 0
            if self.stop_reason or end_of_epoch:
                return

    def _start_run(self) -> None:
        """The clock, ``config.yaml``, the metrics log, the progress bar."""
        cfg = self.cfg
        self._t0 = time.perf_counter()
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        self.log = MetricsLog(self.out, self.main)
        if self.init_copied:
            self.log.write(
                "init", self.step, init_from=cfg.model.init_from, copied=len(self.init_copied)
            )
        if self.frozen:  # which layers the stride cut reached, for the reader of the log
            self.log.write(
                "freeze", self.step, to_stride=cfg.train.freeze_backbone_to_stride,
                parameters=len(self.frozen), last=self.frozen[-1],
            )  # fmt: skip
        self._train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        self._bar = tqdm(
            total=self.total_steps, initial=self.step, desc=f"train {cfg.model.arch}",
            disable=not (self.progress and self.main), dynamic_ncols=True,
        )  # fmt: skip
        self._window = TrainWindow()
        self._evaluated_at = -1

    def fit(self) -> dict:
        """Train until ``max_steps``, ``max_minutes`` or ``epochs`` (the first reached),
        evaluating every ``eval.every_steps`` and at the end.

        Returns:
            ``{"step", "epoch", "stop_reason", "metrics" (last eval), "best_mean_iou",
            "out", "last", "best"}``.

        Raises:
            TrainingDiverged: the loss became NaN/inf (the step is not applied and no
                checkpoint is written, so ``last.pt`` stays the last good one).
        """
        self._start_run()
        try:
            self.stop_reason = self._out_of_budget()
            while not self.stop_reason:
                self._train_epoch()
            if self._evaluated_at != self.step:
                self.run_eval()
            self.save_checkpoint()
        finally:
            self._bar.close()
            self.log.close()
        if self.main and not (self.out / "best.pt").exists():
            self.save_checkpoint("best.pt")  # every eval was NaN: keep the final weights
        if self.main:
            write_curves(self.out, self.out)
        barrier()  # every rank returns once rank 0's files are written (the next stage reads them)
        return self._summary()

    def _summary(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "stop_reason": self.stop_reason,
            "metrics": self.last_metrics,
            "best_mean_iou": self.best_mean_iou if math.isfinite(self.best_mean_iou) else None,
            "out": str(self.out),
            "last": str(self.out / "last.pt"),
            "best": str(self.out / "best.pt"),
        }
