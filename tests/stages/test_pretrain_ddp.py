"""Scale-out of the pretrain stage: the real stage with two CPU processes (Lightning DDP over gloo) against one
process, and the batch loader with worker processes against the main process.

Two processes vs one, within a stated tolerance. Setup: SimCLR (gathers negatives across ranks; BatchNorm in the
backbone, projector and online probe, made global by the CPU SyncBatchNorm), 16 px views without random
augmentation (min_scale 1, no flip, jitter, grey or blur: each rank draws its views from its own seed, so random
views could not match), 200 images, batch 32, one epoch = 6 steps. Why not exact: the ranks sum gradients and
BatchNorm statistics over their halves, then gloo adds the halves, another float32 summation order than one
process's. That moves the weights by ~1e-6 of their scale after one step; the early phase (warm-up, loss rising
again) amplifies it to ~1e-4 after 6 steps (measured 1.0e-4; one process with 2 threads differs from 1 thread by as
much). Tolerance 1e-3. Per-process BatchNorm statistics (`sync_batchnorm=false`) differ by 2e-2 and change the first
step's loss by 1e-2, so the check tells a correct setup from a wrong one.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sslbench.data.splits import open_split
from sslbench.stages import pretrain
from tests.tier3 import run

TOL = 1e-3
DETERMINISTIC_VIEWS = ["pretrain.views.min_scale=1.0", "+method.views.hf_prob=0.0", "method.views.cj_prob=0.0",
                       "method.views.gray_prob=0.0", "method.views.blur_prob=0.0"]


def _pretrain(data: Path, out: Path, *extra: str) -> dict:
    out.mkdir(parents=True)
    # run from `out`: whatever Hydra or Lightning might write lands there, not in the repository
    run([sys.executable, "-m", "sslbench.stages.pretrain", "method=simclr", f"paths.data={data}",
         f"paths.models={out / 'models'}", f"paths.reports={out / 'reports'}", "pretrain.epochs=1",
         "pretrain.batch_size=32", "pretrain.held_batch=64", "pretrain.progress_bar=false", "dataset.image_size=16",
         *DETERMINISTIC_VIEWS, *extra], cwd=out, extra_env={"OMP_NUM_THREADS": "1"})  # same threads in both
    return json.loads((out / "reports" / "pretrain" / "simclr.json").read_text())


def _history(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "reports/pretrain/plots/simclr/train.csv").read_text().splitlines()))


@pytest.mark.skipif(sys.platform == "win32", reason="gloo multi-process test targets POSIX")
def test_two_cpu_processes_match_one_process(tiny_data: Path, tmp_path: Path) -> None:
    one = _pretrain(tiny_data, tmp_path / "one")
    two = _pretrain(tiny_data, tmp_path / "two", "pretrain.accelerator=cpu", "pretrain.devices=2",
                    "pretrain.strategy=ddp")

    a, b = (torch.load(tmp_path / r / "models/simclr/encoder.pt", weights_only=True) for r in ("one", "two"))
    assert a.keys() == b.keys()
    scale = max(float(t.abs().max()) for t in a.values() if t.is_floating_point())
    # weights and BatchNorm running statistics (global ones in both runs)
    errors = {k: float((a[k].float() - b[k].float()).abs().max()) / scale for k in a}
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < TOL, f"{worst}: {errors[worst]:.2e} of the largest weight"

    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert [r["step"] for r in h1] == [r["step"] for r in h2] == [str(s) for s in range(1, 7)]
    losses = np.array([[float(r["ssl_loss"]) for r in h] for h in (h1, h2)])
    # rank 0 records the mean over ranks: the whole batch's loss
    np.testing.assert_allclose(losses[1], losses[0], rtol=TOL)
    assert one["pretrain/steps"] == two["pretrain/steps"] == 6
    for key in ("pretrain/ssl_loss", "pretrain/feature_std", "pretrain/effective_rank"):
        assert two[key] == pytest.approx(one[key], rel=10 * TOL), key
    for r in ("one", "two"):
        assert not (tmp_path / r / "models/simclr/last.ckpt").exists()
        assert sorted(p.name for p in (tmp_path / r).iterdir()) == ["models", "reports"]


@pytest.mark.parametrize("world", [1, 2])
def test_worker_processes_read_the_same_batches_as_the_main_process(tiny_data: Path, world: int) -> None:
    source = open_split(tiny_data, "shapes", "train")
    batch = 32

    def batches(workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for rank in range(world):
            sampler = pretrain.EpochBatchSampler(len(source), batch, seed=3, rank=rank, world=world, epoch=1, skip=1)
            out.append(list(pretrain.train_loader(source, sampler, workers, pin_memory=False, seed=3)))
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
    list(pretrain.train_loader(source, pretrain.EpochBatchSampler(len(source), batch, 0), 0, False, 0))
    assert torch.equal(state, torch.random.get_rng_state()), "the loader must not draw from torch's global generator"
