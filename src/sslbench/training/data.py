"""The training data of a run: an epoch's data order is a function of (seed, epoch) alone, so that a run resumes
exactly, mid-epoch included, and several processes read disjoint shares of every global batch."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch

from sslbench.data.splits import SplitSource


class EpochBatchSampler:
    """Index arrays of one rank's shuffled, drop-last batches of the current epoch (a DataLoader `sampler`).

    The permutation of an epoch is drawn from numpy's generator seeded with (seed, epoch); global batch k is rows
    [k * B, (k + 1) * B) of it and rank r takes its r-th share of b = B / world rows. Lightning calls `set_epoch` at
    the start of every epoch. `skip` batches are skipped in the first epoch iterated (mid-epoch resumption).
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1, epoch: int = 0,
                 skip: int = 0) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.local = rank, global_batch // world
        self.epoch, self.skip = epoch, skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self) -> Iterator[np.ndarray]:
        skip, self.skip = self.skip, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for k in range(skip, len(self)):
            start = k * self.global_batch + self.rank * self.local
            yield order[start : start + self.local]


class BatchReader(torch.utils.data.Dataset):
    """`reader[indices] -> (uint8 images (b, H, W, 3), int64 labels (b,))`: one whole batch per item, so that
    DataLoader workers read (and, for index-based sets, decode) whole batches while the device trains."""

    def __init__(self, source: SplitSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.source.images(indices)), torch.from_numpy(self.source.labels[indices])


def train_loader(source: SplitSource, sampler: EpochBatchSampler, num_workers: int, pin_memory: bool,
                 seed: int) -> torch.utils.data.DataLoader:
    """Batches of `sampler` read by `num_workers` processes (0: the main process), pinned for a GPU. The loader
    draws its workers' seed from its own generator, so torch's global generator is untouched."""
    return torch.utils.data.DataLoader(
        BatchReader(source), sampler=sampler, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed), prefetch_factor=2 if num_workers else None)


class TrainData(L.LightningDataModule):
    """The train split as Lightning's data module: each rank's `EpochBatchSampler`, starting at `epoch` with
    `skip` batches of it already done."""

    def __init__(self, source: SplitSource, global_batch: int, seed: int, epoch: int, skip: int, num_workers: int,
                 pin_memory: bool) -> None:
        super().__init__()
        self.source, self.global_batch, self.seed, self.epoch, self.skip = source, global_batch, seed, epoch, skip
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        t = self.trainer
        assert t is not None
        sampler = EpochBatchSampler(len(self.source), self.global_batch, self.seed, t.global_rank, t.world_size,
                                    self.epoch, self.skip)
        return train_loader(self.source, sampler, self.num_workers, self.pin_memory, self.seed)
