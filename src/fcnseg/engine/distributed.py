"""torch.distributed helpers: process-group set-up from ``torchrun``'s environment, sharding,
the all-reductions the trainer needs, a CPU-capable synchronised BatchNorm, and the
``fcnseg train --nproc N`` launcher.

The shape follows torchvision's ``references/segmentation/utils.py`` (``init_distributed_mode``
reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``is_main_process`` gates every write), with three
additions a long job needs:

- a timeout on the process group (``FCNSEG_DIST_TIMEOUT`` seconds, default 600), so a rank that
  hangs or dies makes the others fail with an error instead of waiting forever;
- the backend follows the training device: NCCL for CUDA, gloo for the CPU;
- :class:`SyncBatchNorm2d`, which synchronises batch statistics on the CPU too (torch's
  ``nn.SyncBatchNorm`` accepts GPU inputs only), so a gloo run can use ``train.sync_bn``.

Everything here is a no-op (rank 0 of 1) outside an initialised process group.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "SyncBatchNorm2d",
    "all_reduce_sum",
    "any_rank",
    "barrier",
    "broadcast_buffers",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "dist_timeout",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_dist",
    "is_main_process",
    "launch",
    "launched_by_torchrun",
    "mean_over_ranks",
    "shard_indices",
]

#: Environment variable: seconds a collective may wait before the job fails (default 600).
TIMEOUT_ENV = "FCNSEG_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


def is_dist() -> bool:
    """True inside an initialised process group (``torchrun``)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_local_rank() -> int:
    """This process's index on its node (``LOCAL_RANK``, set by torchrun); 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """Rank 0 (or no process group): the only process that writes files and logs."""
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process job (``WORLD_SIZE`` > 1 and
    ``RANK`` set, as torchrun and SLURM-aware launchers do)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1


def dist_timeout() -> datetime.timedelta:
    """The process-group timeout: ``FCNSEG_DIST_TIMEOUT`` seconds (default 600).

    Raises:
        ValueError: the variable is not a positive number.
    """
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: expected a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r}: must be > 0 seconds")
    return datetime.timedelta(seconds=seconds)


def init_distributed(device: torch.device | str | None = None) -> torch.device | None:
    """Join the process group described by torchrun's environment variables.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` (the
    ``env://`` rendezvous); the backend is NCCL when ``device`` is CUDA (``LOCAL_RANK`` picks
    the GPU), gloo otherwise; the timeout is :func:`dist_timeout`. Does nothing when the
    environment describes a single process or the group already exists.

    Args:
        device: the training device (``None``: CUDA if available, else the CPU).

    Returns:
        the device this rank should use (``cuda:LOCAL_RANK`` for CUDA), or ``device``
        unchanged when no group is set up.
    """
    device = torch.device(device) if device is not None else None
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and (is_dist() or launched_by_torchrun()):
        if device.index is None:
            device = torch.device("cuda", get_local_rank())
        torch.cuda.set_device(device)
    if is_dist() or not launched_by_torchrun():
        return device
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"backend": backend, "init_method": "env://", "timeout": dist_timeout()}
    if backend == "nccl":
        kwargs["device_id"] = device  # eager NCCL init: a bad GPU fails here, not mid-step
    dist.init_process_group(**kwargs)
    return device


def cleanup_distributed() -> None:
    """Leave the process group (if any)."""
    if is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_dist():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it (unchanged without a process group)."""
    if is_dist():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_over_ranks(value: float, device: torch.device | str = "cpu") -> float:
    """The mean of ``value`` over the ranks (``value`` itself outside a process group): a
    number every rank then holds identically (the loss logged, the share of a time budget)."""
    world_size = get_world_size()
    if world_size == 1:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    return float(all_reduce_sum(t)) / world_size


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one (a collective)."""
    if not is_dist():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them before each forward, but the last step leaves each rank with its own
    update; call this before evaluating so every rank scores the model rank 0 saves.
    """
    if not is_dist():
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=src)


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """Indices ``rank, rank + W, rank + 2W, ...`` of ``range(n)``: the shards of all ranks
    cover every index exactly once (no padding, no duplicates), whatever ``n``."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return range(rank, n, world_size)


# --------------------------------------------------------------------------- SyncBatchNorm


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the whole global batch.

    Mean and (biased) variance are all-reduced over the process group with the
    differentiable :func:`torch.distributed.nn.functional.all_reduce`, so gradients flow to
    every rank's inputs exactly as in one process holding the whole batch; running
    statistics use the unbiased global variance, as :class:`torch.nn.BatchNorm2d` does.
    Works on any device (gloo on the CPU). Outside a process group, in eval mode, or with a
    world of one it is a plain ``BatchNorm2d``. Same parameters and buffers (state dicts are
    interchangeable).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's name)
        if not (self.training and is_dist() and get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, 2, 3]
        channels = input.shape[1]
        count = torch.full((1,), input.numel() / channels, dtype=input.dtype, device=input.device)
        sums = all_reduce(torch.cat([input.sum(dims), count]))
        n = sums[-1]
        mean = sums[:channels] / n
        centred = input - mean.view(1, -1, 1, 1)
        var = all_reduce((centred * centred).sum(dims)) / n  # two passes: no cancellation
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
                else:
                    factor = self.momentum
                unbiased = var.detach() * (n.detach() / (n.detach() - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Replace every ``BatchNorm*d`` of ``module`` by a synchronised one, in place.

    On CUDA: torch's :class:`torch.nn.SyncBatchNorm` (its fused kernels); elsewhere:
    :class:`SyncBatchNorm2d`. Parameters and buffers are shared with the originals, so an
    optimiser built before or after sees the same tensors. Returns ``module``.
    """
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SyncBatchNorm2d):
            sync = SyncBatchNorm2d(
                child.num_features,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
                device=child.running_mean.device if child.running_mean is not None else None,
            )
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            if child.track_running_stats:
                sync.running_mean = child.running_mean
                sync.running_var = child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, device)
    return module


# --------------------------------------------------------------------------- launching


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m fcnseg ARGV`` in ``nproc`` processes on this machine through
    ``torchrun --standalone`` (what ``fcnseg train --nproc N`` does).

    torchrun's agent ends every process as soon as one exits with an error, and exits
    non-zero itself. Returns torchrun's exit code.
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", "fcnseg", *argv,
    ]  # fmt: skip
    return subprocess.call(cmd)
