"""Which samples a training step sees, and their augmentation draws, as functions of the seed.

The sample order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone
(:class:`EpochBatches`), and every sample's random transforms are drawn from
``(seed, epoch, index)`` alone (:class:`SeededSamples`), whatever the number of DataLoader
workers or processes. A resumed run can therefore skip the batches already seen in the current
epoch and continue with exactly the samples and crops an uninterrupted run would have had.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochBatches", "SeededSamples", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed from ``(seed, epoch, index)`` (``index`` -1: the epoch's order)."""
    return int(np.random.SeedSequence([abs(seed), epoch, index + 1]).generate_state(1)[0])


class SeededSamples(Dataset):
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
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]


class EpochBatches(Sampler):
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
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.n, generator=g).tolist()
        local = self.batch_size // self.world_size
        for b in range(self.skip, self.num_batches):
            start = b * self.batch_size + self.rank * local
            yield [(self.epoch, i) for i in order[start : start + local]]

    def __len__(self) -> int:
        return max(self.num_batches - self.skip, 0)
