"""The training data of a run: the batch loader with worker processes against the main process, and the data
order of an epoch as a function of (seed, epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sslbench.data.splits import open_split
from sslbench.training.data import EpochBatchSampler, train_loader


@pytest.mark.parametrize("world", [1, 2])
def test_worker_processes_read_the_same_batches_as_the_main_process(tiny_data: Path, world: int) -> None:
    source = open_split(tiny_data, "shapes", "train")
    batch = 32

    def batches(workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for rank in range(world):
            sampler = EpochBatchSampler(len(source), batch, seed=3, rank=rank, world=world, epoch=1, skip=1)
            out.append(list(train_loader(source, sampler, workers, pin_memory=False, seed=3)))
        # concatenating the ranks' shares of each step gives the global batch
        return [(torch.cat([r[k][0] for r in out]), torch.cat([r[k][1] for r in out])) for k in range(len(out[0]))]

    main, workers = batches(0), batches(2)
    assert len(main) == len(source) // batch - 1  # the first batch skipped (resumption)
    for (xa, ya), (xb, yb) in zip(main, workers, strict=True):
        assert xa.shape == (batch, 32, 32, 3) and xa.dtype == torch.uint8
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    order = np.random.default_rng([3, 1]).permutation(len(source))
    np.testing.assert_array_equal(main[0][1].numpy(), source.labels[order[batch : 2 * batch]])
    state = torch.random.get_rng_state()
    list(train_loader(source, EpochBatchSampler(len(source), batch, 0), 0, False, 0))
    assert torch.equal(state, torch.random.get_rng_state()), "the loader must not draw from torch's global generator"
