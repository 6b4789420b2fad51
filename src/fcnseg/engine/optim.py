"""Optimisers, parameter groups and per-step learning-rate schedules.

Parameter groups follow the Caffe reference nets (``voc-fcn*/net.py``: every convolution has
``param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]``): biases learn at
``bias_lr_mult`` x the base rate and, unless ``bias_decay``, without weight decay. Only
parameters with ``requires_grad`` are optimised, so the frozen bilinear upsamplers (the
reference's ``lr_mult: 0`` deconvolutions) are never in the optimiser.

Schedules are a multiplicative factor of the base rate per optimiser step (a ``LambdaLR``
stepped once per step, as torchvision's ``references/segmentation/train.py`` does for its
poly schedule): ``fixed`` (the reference's ``lr_policy: "fixed"``), ``poly``
``(1 - t) ** power`` and ``cosine`` ``(1 + cos(pi t)) / 2``, where ``t`` runs from 0 to 1 over
the steps after the linear warm-up.

A run bounded by time as well as steps (``train.max_minutes``) passes the fraction of its time
budget already spent as ``time_fraction``: ``t`` is then the larger of the step and the time
fractions, so a run that a slow or busy CPU stops on the clock still ends with a decayed rate
(a finished schedule) instead of being cut at a high one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "param_groups"]


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    bias_lr_mult: float = 2.0,
    bias_decay: bool = False,
    backbone_lr_mult: float = 1.0,
) -> list[dict]:
    """Split the trainable parameters of ``model`` into weight and bias groups, the backbone's
    (parameters named ``backbone.*``: the pretrained classifier) apart from the head's.

    Fine-tuning a pretrained backbone at a fraction of the head's rate (``backbone_lr_mult``)
    keeps its ImageNet features while the new score layers learn.

    Returns:
        ``[{"name": "weights", "params", "lr", "weight_decay"}, {"name": "biases", ...},
        {"name": "backbone_weights", ...}, {"name": "backbone_biases", ...}]`` (a group with
        no parameters is left out; with ``backbone_lr_mult=1`` the backbone shares the head's
        groups). Parameters with ``requires_grad=False`` are in none.
    """
    split = backbone_lr_mult != 1.0
    buckets: dict[str, list] = {
        "weights": [],
        "biases": [],
        "backbone_weights": [],
        "backbone_biases": [],
    }
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kind = "biases" if name.endswith("bias") else "weights"
        in_backbone = split and name.removeprefix("module.").startswith("backbone.")
        buckets[f"backbone_{kind}" if in_backbone else kind].append(p)
    groups = []
    for name, params in buckets.items():
        is_bias = name.endswith("biases")
        groups.append(
            {
                "name": name,
                "params": params,
                "lr": lr
                * (bias_lr_mult if is_bias else 1.0)
                * (backbone_lr_mult if name.startswith("backbone") else 1.0),
                "weight_decay": weight_decay if (bias_decay or not is_bias) else 0.0,
            }
        )
    return [g for g in groups if g["params"]]


def _fused_applies(groups: list[dict]) -> bool | None:
    """torch's fused (one kernel for all tensors) update where every parameter allows it:
    floating point, on the CPU or a CUDA device. On the CPU torch's default is the per-tensor
    loop, several times slower for AdamW (``benchmarks/README.md``); ``None`` keeps torch's
    default elsewhere."""
    params = [p for g in groups for p in g["params"]]
    ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok else None


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.Optimizer:
    """SGD with momentum (the reference's recipe) or AdamW, from a ``TrainConfig``.

    Raises:
        ValueError: an unknown optimiser, a non-positive lr, or a model with nothing to train.
    """
    if not train_cfg.lr > 0:
        raise ValueError(f"train.lr must be > 0, got {train_cfg.lr}")
    groups = param_groups(
        model,
        train_cfg.lr,
        train_cfg.weight_decay,
        train_cfg.bias_lr_mult,
        train_cfg.bias_decay,
        train_cfg.backbone_lr_mult,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = _fused_applies(groups)
    if train_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train_cfg.lr, momentum=train_cfg.momentum, fused=fused)
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train_cfg.lr, fused=fused)
    raise ValueError(f"unknown optimizer {train_cfg.optimizer!r}; choose 'sgd' or 'adamw'")


def lr_factor(
    step: int,
    schedule: str,
    total_steps: int,
    warmup_steps: int = 0,
    power: float = 0.9,
    time_fraction: float = 0.0,
) -> float:
    """The learning-rate multiplier for optimiser step ``step`` (0-based).

    Warm-up: ``(step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps`` (linear, never
    0), times the schedule's value at ``t = time_fraction`` (0 without a time budget). After
    it, ``t = max((step - warmup_steps) / (total_steps - warmup_steps), time_fraction)``
    clipped to [0, 1]: ``fixed`` 1, ``poly`` ``(1 - t) ** power``, ``cosine``
    ``(1 + cos(pi t)) / 2``. ``time_fraction`` is the share of a time budget already used.

    Raises:
        ValueError: an unknown schedule.
    """
    time_fraction = min(max(float(time_fraction), 0.0), 1.0)
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1) * _schedule_value(schedule, time_fraction, power)
    span = max(total_steps - warmup_steps, 1)
    t = min(max((step - warmup_steps) / span, time_fraction, 0.0), 1.0)
    return _schedule_value(schedule, t, power)


def _schedule_value(schedule: str, t: float, power: float) -> float:
    if schedule == "fixed":
        return 1.0
    if schedule == "poly":
        return (1.0 - t) ** power
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}; choose 'fixed', 'poly' or 'cosine'")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    train_cfg,
    total_steps: int,
    time_fraction: Callable[[], float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` applying :func:`lr_factor` to every group's own base rate
    (so biases keep their ``bias_lr_mult``). Call ``.step()`` after each optimiser step.

    ``time_fraction``, when given, is called at every ``.step()`` for the share of the run's
    time budget already spent (see the module docstring)."""
    lr_factor(0, train_cfg.schedule, total_steps)  # unknown schedule -> ValueError now

    def factor(step: int) -> float:
        return lr_factor(
            step,
            train_cfg.schedule,
            total_steps,
            train_cfg.warmup_steps,
            train_cfg.poly_power,
            time_fraction() if time_fraction is not None else 0.0,
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
