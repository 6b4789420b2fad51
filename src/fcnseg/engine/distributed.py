"""torch.distributed helpers: the trainer runs single-process today, and every write to disk
goes through :func:`is_main_process` so a ``torchrun`` launch writes each file once."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["get_rank", "get_world_size", "is_dist", "is_main_process"]


def is_dist() -> bool:
    """True inside an initialised process group (``torchrun``)."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Rank 0 (or no process group): the only process that writes files and logs."""
    return get_rank() == 0
