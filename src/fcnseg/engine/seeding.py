"""The global random generators of a run: seeding, and the state a checkpoint stores.

``seed_everything`` seeds torch, numpy and python at the start of a run; ``rng_state`` /
``set_rng_state`` capture and restore all of them (CUDA included) so that a resumed run draws
the same numbers as an uninterrupted one; ``worker_init`` seeds numpy and python inside each
DataLoader worker from the seed torch gave it.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["rng_state", "seed_everything", "set_rng_state", "worker_init"]


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy's and python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/python from the seed torch gave the worker
    (the torch.utils.data "randomness in multi-process data loading" recipe)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict:
    """torch, numpy, python (and CUDA) generator states, as tensors and plain values only (a
    checkpoint read with ``weights_only=True`` accepts them)."""
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


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
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
