"""The probe area of `evaluate@<method>`: metrics from cached embeddings; bad inputs fail clearly and write
nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sslbench.errors import UserError
from sslbench.eval import linear
from sslbench.io import EmbeddingWriter
from sslbench.models.encoder import Encoder, EncoderSpec, save_encoder
from sslbench.stages import probe
from tests.conftest import REPO
from tests.stages.test_embed import compose_cfg, embedded_study  # noqa: F401  (the fixture, re-registered here)

FAST = ["probe.linear.epochs=20", "probe.knn.k=5", "probe.semisup.min_per_class=1",
        "probe.semisup.finetune.epochs=1", "probe.semisup.finetune.min_steps=0",
        "probe.semisup.finetune.batch_size=32", "probe.n_samples=4"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overrides(root: Path, method: str, *extra: str) -> list[str]:
    return [f"paths.data={root / 'data'}", f"paths.models={root / 'models'}", f"paths.reports={root / 'reports'}",
            f"method={method}", *FAST, *extra]


@pytest.fixture
def study(embedded_study: Path, tmp_path: Path) -> Path:  # noqa: F811
    """A private copy of the embedded study (tests below damage it)."""
    shutil.copytree(embedded_study / "data" / "embeddings", tmp_path / "data" / "embeddings")
    shutil.copytree(embedded_study / "models", tmp_path / "models")
    os.symlink(embedded_study / "data" / "datasets", tmp_path / "data" / "datasets")
    return tmp_path


def test_probe_reports_the_same_keys_for_deterministic_and_bayes_h(embedded_study: Path, tmp_path: Path  # noqa: F811
                                                                   ) -> None:
    out = {}
    for method in ("simclr", "barlow_twins_bayes_h"):
        over = overrides(embedded_study, method, f"paths.reports={tmp_path}")
        metrics = probe.run(compose_cfg("probe", over))
        assert json.loads((tmp_path / "probe" / f"{method}.json").read_text()) == pytest.approx(metrics)
        out[method] = metrics
    assert set(out["simclr"]) == set(out["barlow_twins_bayes_h"])
    m = out["simclr"]
    expected = {"linear/top1", "linear/macro_acc", "linear/weight_decay", "linear/val_top1", "linear/top1_wd1e-04",
                "linear/top1_wd1e-05", "linear/top1_wd1e-06", "knn/top1", "knn/macro_acc",
                "transfer/digits/top1", "transfer/digits/macro_acc"}
    for tag in ("1pct", "10pct"):
        expected |= {f"semisup/{k}_{tag}" for k in ("linear_top1", "finetune_top1", "finetune_epochs", "finetune_steps",
                                                      "n_labels")}
    assert set(m) == expected
    assert m["linear/top1"] == m[f"linear/top1_wd{m['linear/weight_decay']:.0e}"]
    assert m["semisup/n_labels_1pct"] == 10 and m["semisup/n_labels_10pct"] == 20  # fallback 1 / 2 per class
    for method in out:
        assert all(0.0 <= v <= 1.0 for k, v in out[method].items() if "top1" in k or "acc" in k)


def test_bayes_h_uses_sampled_logits(embedded_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
                                     ) -> None:
    calls: list[int] = []
    real = linear.sampled_logits

    def spy(*args: object, **kwargs: int) -> np.ndarray:
        calls.append(kwargs["n_samples"])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(linear, "sampled_logits", spy)  # behind every Bayes-H logit
    over = overrides(embedded_study, "barlow_twins_bayes_h", f"paths.reports={tmp_path}",
                     "probe.semisup.finetune.epochs=0")
    probe.run(compose_cfg("probe", over))
    assert calls and set(calls) == {4}


def _fails(root: Path, match: str, *extra: str) -> None:
    with pytest.raises(UserError, match=match):
        probe.run(compose_cfg("probe", overrides(root, "simclr", *extra)))
    assert not (root / "reports" / "probe" / "simclr.json").exists()


def test_truncated_and_missing_tables(study: Path) -> None:
    val = study / "data" / "embeddings" / "simclr" / "shapes" / "val.parquet"
    good = val.read_bytes()
    val.write_bytes(good[: len(good) // 2])
    _fails(study, r"shapes/val.parquet are truncated or corrupt .*delete the file and run `dvc repro embed@simclr`")
    val.unlink()
    _fails(study, r"shapes/val.parquet are missing; run `dvc repro embed@simclr`")
    val.write_bytes(good)
    shutil.rmtree(study / "data" / "embeddings" / "simclr" / "digits")
    _fails(study, r"digits/train.parquet are missing; run `dvc repro embed@simclr`")


def test_table_of_another_method_dimension_or_encoder(study: Path) -> None:
    emb = study / "data" / "embeddings"
    shutil.copy(emb / "barlow_twins_bayes_h" / "shapes" / "test.parquet", emb / "simclr" / "shapes" / "test.parquet")
    _fails(study, r"test.parquet have method='barlow_twins_bayes_h' but 'simclr' was expected.*dvc repro embed@simclr")
    with EmbeddingWriter(emb / "simclr" / "shapes" / "test.parquet", method="simclr", dataset="shapes", split="test",
                         dim=8) as writer:
        writer.write(np.arange(3), np.zeros(3), np.zeros((3, 8), np.float32))
    _fails(study, r"test.parquet have dim='8' but 256 was expected")
    shutil.copy(emb / "simclr" / "shapes" / "val.parquet", emb / "simclr" / "shapes" / "test.parquet")
    _fails(study, r"test.parquet have split='val' but 'test' was expected")


def test_stale_embeddings_of_a_retrained_encoder(study: Path) -> None:
    torch.manual_seed(123)
    save_encoder(Encoder(EncoderSpec()), study / "models" / "simclr", {"method": "simclr"})
    _fails(study, r"computed by another encoder than models/simclr/encoder.pt.*run `dvc repro embed@simclr`")


def test_bad_settings_and_empty_class_subset_fail_before_work(study: Path) -> None:
    _fails(study, r"probe.knn.k must be >= 1", "probe.knn.k=0")
    _fails(study, r"probe.semisup.fractions must be distinct values in \(0, 1\]", "probe.semisup.fractions=[0.5,2]")
    _fails(study, r"1pct label subset leaves class\(es\) 'circle' \(20 training examples\).*min_per_class=1",
           "probe.semisup.min_per_class=0")


def test_cli_exits_nonzero_with_one_line_error(study: Path) -> None:
    train = study / "data" / "embeddings" / "simclr" / "shapes" / "train.parquet"
    train.write_bytes(b"PAR1 this is not parquet")
    cmd = [sys.executable, "-m", "sslbench.stages.probe", *overrides(study, "simclr")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stderr
    assert "error: embeddings" in done.stderr and "truncated or corrupt" in done.stderr
    assert "dvc repro embed@simclr" in done.stderr and "Traceback" not in done.stderr
    assert not (study / "reports" / "probe" / "simclr.json").exists()
