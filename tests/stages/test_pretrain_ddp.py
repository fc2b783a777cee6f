"""Scale-out of the pretrain stage: the real stage with two CPU processes (Lightning DDP over gloo) against one
process (the batch loader with worker processes: tests/training/test_data.py).

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
    """The run's per-step SSL loss, as DVCLive logged it (rank 0 alone writes the log)."""
    text = (out / "reports/pretrain/live/simclr/plots/metrics/ssl_loss.tsv").read_text()
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


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
