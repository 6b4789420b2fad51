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
"""

from __future__ import annotations

import csv
import functools
import json
import math
import random
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from fcnseg.accel.training import for_training
from fcnseg.config import Config, config_to_dict, save_config, stage_configs
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
)
from fcnseg.engine.evaluation import evaluate, json_safe
from fcnseg.engine.loss import SegmentationLoss, build_loss
from fcnseg.engine.optim import build_optimizer, build_scheduler
from fcnseg.io.devices import resolve_device  # one device rule for training and inference
from fcnseg.io.images import set_max_image_pixels
from fcnseg.models import build_model, transfer_weights
from fcnseg.models.weights import check_compatible, read_fcn_weights

__all__ = [
    "Trainer",
    "TrainingDiverged",
    "resolve_device",
    "seed_everything",
    "train",
    "train_staged",
    "write_curves",
]

EVAL_KEYS = ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou")
CSV_COLUMNS = ("event", "step", "epoch", "time_s", "loss", "lr", "images_per_s", *EVAL_KEYS)


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the step was refused and the run stopped."""


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's and python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy/python from it
    # (the torch.utils.data "randomness in multi-process data loading" recipe).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed from ``(seed, epoch, index)`` (``index`` -1: the epoch's order)."""
    return int(np.random.SeedSequence([abs(seed), epoch, index + 1]).generate_state(1)[0])


class _SeededSamples(Dataset):
    """Wraps a dataset; item ``(epoch, i)`` is ``dataset[i]`` with its random transforms drawn
    from a torch RNG seeded by ``(seed, epoch, i)`` (the global RNG is left untouched)."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_sample_seed(self.seed, epoch, index))
            return self.dataset[index]


class _EpochBatches(Sampler):
    """Batches of ``(epoch, index)`` keys: the permutation of epoch ``e`` is a function of
    ``(seed, e)``; an epoch is ``num_batches`` full batches (the remainder is dropped, as
    torchvision's reference does with ``drop_last=True``), the first ``skip`` of which are
    left out (resuming mid-epoch).

    ``batch_size`` is the global batch; with ``world_size`` > 1 rank ``rank`` gets the
    ``rank``-th contiguous slice of ``batch_size // world_size`` keys of each global batch, so
    the union over ranks of step ``t`` is the same set of samples for any world size."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        num_batches: int,
        seed: int,
        epoch: int,
        skip: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} ranks")
        self.n, self.batch_size, self.num_batches = n, batch_size, num_batches
        self.seed, self.epoch, self.skip = seed, epoch, skip
        self.rank, self.world_size = rank, world_size

    def __iter__(self):
        g = torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.n, generator=g).tolist()
        local = self.batch_size // self.world_size
        for b in range(self.skip, self.num_batches):
            start = b * self.batch_size + self.rank * local
            yield [(self.epoch, i) for i in order[start : start + local]]

    def __len__(self) -> int:
        return max(self.num_batches - self.skip, 0)


def _rng_state() -> dict:
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": version, "state": list(state), "gauss": gauss},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _MetricsLog:
    """``metrics.jsonl`` (one JSON object per event), ``metrics.csv`` and TensorBoard events
    (when ``torch.utils.tensorboard`` imports). Only the main process writes."""

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
        t = cfg.train
        if t.grad_accum < 1:
            raise ValueError(f"train.grad_accum must be >= 1, got {t.grad_accum}")
        if cfg.data.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
        # Under torchrun: join the process group (NCCL for CUDA, gloo for the CPU);
        # LOCAL_RANK picks this rank's GPU. A no-op for a single process.
        self.device = init_distributed(resolve_device(t.device))
        self.rank, self.world_size = get_rank(), get_world_size()
        self.main = is_main_process()
        seed_everything(t.seed)

        # ---- data
        d = cfg.data
        if d.max_image_pixels:  # decompression-bomb guard (PIL's default otherwise)
            set_max_image_pixels(d.max_image_pixels)
        ds_kwargs = dict(d.options)
        self.train_set = build_dataset(d.dataset, d.root, d.train_split, **ds_kwargs)
        self.val_set = build_dataset(d.dataset, d.root, d.val_split, **ds_kwargs)
        if len(self.train_set) == 0:
            raise ValueError(f"{d.dataset} {d.train_split}: no training samples")
        if self.train_set.num_classes != cfg.model.num_classes:
            raise ValueError(
                f"model.num_classes={cfg.model.num_classes} but {d.dataset} has "
                f"{self.train_set.num_classes} classes ({', '.join(self.train_set.classes)})"
            )

        # ---- model (+ staged init)
        m = cfg.model
        self.model = build_model(
            m.arch,
            backbone=m.backbone,
            num_classes=m.num_classes,
            pad100=m.pad100,
            weights_backbone=m.weights_backbone,
            weights=m.weights,
            learnable_upsampling=m.learnable_upsampling,
            class_names=list(self.train_set.classes),
            palette=self.train_set.palette,
            context=m.context,
        )
        self.init_copied: list[str] = []
        if m.init_from and not resume:
            state, info = read_fcn_weights(m.init_from)
            if "config" in info:
                check_compatible(m.init_from, info["config"], self.model.config)
            self.init_copied = transfer_weights(self.model, state)
            if not self.init_copied:
                raise ValueError(f"model.init_from={m.init_from}: no parameter fits {m.arch}")
        if t.sync_bn:
            convert_sync_batchnorm(self.model, self.device)
        self.dtype = getattr(torch, t.dtype)
        self.model.to(self.device, dtype=self.dtype)
        for_training(self.model, self.device)  # CPU: fc6/fc7 as matmuls (same state dict)
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
        # Whole images (crop_size null) are trained one at a time per process, as the paper
        # does (batch 1); crops are batched. data.batch_size is the global batch.
        self.batch_size = d.batch_size if d.crop_size else self.world_size
        if not d.crop_size and d.batch_size != self.batch_size:
            warnings.warn(
                f"data.crop_size is null: training on whole images, one per process (global "
                f"batch {self.batch_size}; data.batch_size={d.batch_size} applies to crops)",
                stacklevel=2,
            )
        if self.batch_size % self.world_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch: it must be divisible "
                f"by the {self.world_size} processes (each gets batch_size / world size)"
            )
        self.samples = _SeededSamples(self.train_set, t.seed)
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

        # ---- optimisation
        raw_train = build_dataset(d.dataset, d.root, d.train_split, **ds_kwargs)
        self.criterion = build_loss(
            t.loss_reduction,
            t.class_weights,
            num_classes=m.num_classes,
            dataset=raw_train if isinstance(t.class_weights, str) else None,
            ignore_index=self.train_set.ignore_index,
            seed=t.seed,
        ).to(self.device, dtype=self.dtype)
        self.optimizer = build_optimizer(self.model, t)
        # max_minutes bounds the schedule too: its position is max(step, time) progress
        self._time_fraction = 0.0
        self.scheduler = build_scheduler(
            self.optimizer, t, self.total_steps, time_fraction=lambda: self._time_fraction
        )
        self.amp_dtype = None
        if t.amp:
            if self.device.type == "cuda":
                self.amp_dtype = torch.float16 if t.amp == "fp16" else torch.bfloat16
            else:
                warnings.warn("train.amp is ignored on the CPU (no autocast)", stacklevel=2)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        # ---- state
        self.step = 0
        self.epoch = 0
        self.epoch_batches = 0  # batches of the current epoch already consumed
        self.best_mean_iou = -math.inf
        self.last_metrics: dict | None = None
        self.stop_reason = ""
        if resume:
            self._load_last()

        # ---- data parallel: the wrapper runs the training forward; self.model stays the
        # plain FCN (what checkpoints, evaluation and callbacks see).
        self.net: torch.nn.Module = self.model
        if self.world_size > 1:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            if self.rank > 0:
                # Dropout masks differ between ranks; rank 0 keeps the seeded/restored stream
                # (the one checkpoints store).
                seq = np.random.SeedSequence([abs(t.seed), 2**31 + self.rank, self.step])
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
            "rng": _rng_state(),
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
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        self.epoch_batches = int(ckpt.get("epoch_batches", 0))
        best = ckpt.get("best_mean_iou")
        self.best_mean_iou = -math.inf if best is None else float(best)
        self.last_metrics = ckpt.get("metrics")
        _set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------ loop

    def _loader(self) -> DataLoader:
        d, t = self.cfg.data, self.cfg.train
        sampler = _EpochBatches(
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
            worker_init_fn=_worker_init,
            # An explicit generator: building an iterator never draws from the global RNG.
            generator=torch.Generator().manual_seed(t.seed),
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """This rank's loss, such that DDP's gradient average is the gradient of the loss of
        the global batch (the per-rank criterion when there is one process)."""
        crit = self.criterion
        if self.world_size == 1 or not isinstance(crit, SegmentationLoss):
            return crit(logits, masks)
        if crit.reduction == "sum":
            return crit(logits, masks)  # / local images: equal on every rank, so exact
        # "mean": sum of (weighted) pixel losses / global (weighted) count of valid pixels,
        # times W because DDP divides the summed gradients by W.
        total = F.cross_entropy(
            logits.float(), masks, weight=crit.weight, ignore_index=crit.ignore_index,
            reduction="sum",
        )  # fmt: skip
        valid = masks != crit.ignore_index
        count = valid.sum() if crit.weight is None else crit.weight[masks[valid]].sum()
        count = all_reduce_sum(count.to(torch.float64).reshape(1))
        return total * (self.world_size / count).to(total.dtype).squeeze(0)

    def _global_value(self, loss: torch.Tensor) -> float:
        """The loss of the global batch as a float, identical on every rank."""
        value = loss.detach().float().reshape(1)
        if self.world_size > 1:
            value = all_reduce_sum(value.clone()) / self.world_size
        return float(value)

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
        elif self.amp_dtype == torch.float16:
            hint += " or fp16 overflowed (try train.amp=bf16)"
        return TrainingDiverged(
            f"loss is {loss} at step {self.step + 1}: step refused, training stopped; "
            f"{hint} (train.lr={t.lr}); {kept}"
        )

    def _out_of_budget(self, start: float) -> str:
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

    def _budget_fraction(self, start: float) -> float:
        """Share of ``train.max_minutes`` spent since ``start`` (0 without a time budget); the
        mean over ranks under DDP, so every rank sets the same learning rate."""
        minutes = self.cfg.train.max_minutes
        if not minutes:
            return 0.0
        spent = (time.perf_counter() - start) / (60.0 * minutes)
        if self.world_size > 1:
            t = torch.tensor([spent], dtype=torch.float64, device=self.device)
            spent = float(all_reduce_sum(t)) / self.world_size
        return spent

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
        cfg, t = self.cfg, self.cfg.train
        self._t0 = start = time.perf_counter()
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
        self.log = _MetricsLog(self.out, self.main)
        if self.init_copied:
            self.log.write(
                "init", self.step, init_from=cfg.model.init_from, copied=len(self.init_copied)
            )
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(
            total=self.total_steps, initial=self.step, desc=f"train {cfg.model.arch}",
            disable=not (self.progress and self.main), dynamic_ncols=True,
        )  # fmt: skip
        window_loss, window_steps, window_images = 0.0, 0, 0
        window_t = time.perf_counter()
        every_eval = cfg.eval.every_steps
        evaluated_at = -1
        try:
            self.stop_reason = self._out_of_budget(start)
            while not self.stop_reason:
                micro, step_loss, step_images = 0, 0.0, 0
                for images, masks in self._loader():
                    images = images.to(self.device, self.dtype, non_blocking=True)
                    masks = masks.to(self.device, non_blocking=True)
                    # DDP: all-reduce gradients on the last micro-batch of a step only.
                    sync = self.world_size == 1 or micro + 1 == t.grad_accum
                    with nullcontext() if sync else self.net.no_sync():
                        with self._autocast():
                            logits = self.net(images)
                        loss = self._loss(logits, masks)
                        value = self._global_value(loss)  # the same on every rank
                        if not math.isfinite(value):
                            self.optimizer.zero_grad(set_to_none=True)
                            raise self._diverged(value)
                        self.scaler.scale(loss / t.grad_accum).backward()
                    self.epoch_batches += 1
                    micro += 1
                    step_loss += value / t.grad_accum
                    step_images += images.shape[0] * self.world_size
                    if micro < t.grad_accum:
                        continue
                    # ---- one optimiser step
                    if t.clip_grad_norm:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in self.optimizer.param_groups for p in g["params"]],
                            t.clip_grad_norm,
                        )
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    lr = self.optimizer.param_groups[0]["lr"]
                    self._time_fraction = self._budget_fraction(start)
                    self.scheduler.step()
                    self.step += 1
                    window_loss += step_loss
                    window_steps += 1
                    window_images += step_images
                    micro, step_loss, step_images = 0, 0.0, 0
                    bar.update(1)
                    end_of_epoch = self.epoch_batches >= self.batches_per_epoch
                    step_epoch = self.epoch
                    if end_of_epoch:
                        self.epoch += 1
                        self.epoch_batches = 0
                    self.stop_reason = self._out_of_budget(start)
                    # log every log_every steps and the last (partial) window of the run
                    if (
                        self.step % t.log_every == 0
                        or self.step == self.total_steps
                        or self.stop_reason
                    ):
                        dt = max(time.perf_counter() - window_t, 1e-9)
                        record = {
                            "loss": window_loss / window_steps,
                            "lr": lr,
                            "images_per_s": window_images / dt,
                        }
                        bar.set_postfix(
                            loss=f"{record['loss']:.4g}", lr=f"{lr:.3g}",
                            img_s=f"{record['images_per_s']:.1f}",
                        )  # fmt: skip
                        self.log.write(
                            "train", self.step, epoch=step_epoch, time_s=self._elapsed(), **record
                        )
                        window_loss, window_steps, window_images = 0.0, 0, 0
                        window_t = time.perf_counter()
                    if every_eval and self.step % every_eval == 0 and not self.stop_reason:
                        self.run_eval()
                        evaluated_at = self.step
                        self.net.train()
                    if t.checkpoint_every:
                        if self.step % t.checkpoint_every == 0:
                            self.save_checkpoint()
                    elif end_of_epoch:
                        self.save_checkpoint()
                    for fn in self.callbacks:
                        fn(self)
                    if self.stop_reason or end_of_epoch:
                        break
            if evaluated_at != self.step:
                self.run_eval()
            self.save_checkpoint()
        finally:
            bar.close()
            self.log.close()
        if self.main and not (self.out / "best.pt").exists():
            self.save_checkpoint("best.pt")  # every eval was NaN: keep the final weights
        if self.main:
            write_curves(self.out, self.out)
        barrier()  # every rank returns once rank 0's files are written (the next stage reads them)
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
        if stage_resume and _stage_finished(stage_cfg):
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


def _stage_finished(cfg: Config) -> bool:
    ckpt = read_checkpoint(Path(cfg.out) / "last.pt")
    t = cfg.train
    return (t.max_steps is not None and ckpt["step"] >= t.max_steps) or ckpt["epoch"] >= t.epochs
