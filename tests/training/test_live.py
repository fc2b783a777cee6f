"""The run's DVCLive log: only the declared files, nothing done to the repository around it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from dvclive import Live

from sslbench.training.live import FilesOnlyLive, StepLogger, live_dir


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_log_holds_the_declared_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a git repository without DVC: DVCLive's own Live would run `dvc init` and `git add` its files here
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    monkeypatch.setenv("DVCLIVE_RESUME", "true")  # must not make the log append to an old one
    folder = live_dir(tmp_path / "reports", "simclr")
    stale = folder / "plots" / "metrics" / "ssl_loss.tsv"
    stale.parent.mkdir(parents=True)
    stale.write_text("step\tssl_loss\n1\t9.0\n2\t9.0\n")  # left by a killed run: replaced, not continued
    logger = StepLogger(folder, sync_every_s=3600)
    logger.log_hyperparams({"lr": 0.1})  # Lightning's calls: nothing written
    logger.log_metrics({"train/ssl_loss": 1.0}, step=1)
    logger.log_step({"feature_std": 0.5, "effective_rank": 3.0}, 0)
    logger.log_step({"epoch": 0, "ssl_loss": 2.5, "lr": 0.1}, 1)
    assert not (folder / "metrics.json").exists()  # rewritten every sync_every_s, at epoch ends and at the end
    logger.log_step({"epoch": 0, "ssl_loss": 2.0, "lr": 0.2}, 2, sync=True)
    assert json.loads((folder / "metrics.json").read_text())["ssl_loss"] == 2.0
    logger.finalize("success")
    assert _files(tmp_path / "reports") == [
        f"pretrain/live/simclr/{name}" for name in (
            "metrics.json", "plots/metrics/effective_rank.tsv", "plots/metrics/epoch.tsv",
            "plots/metrics/feature_std.tsv", "plots/metrics/lr.tsv", "plots/metrics/ssl_loss.tsv")]
    assert stale.read_text().splitlines() == ["step\tssl_loss", "1\t2.5", "2\t2.0"]
    assert (folder / "plots/metrics/feature_std.tsv").read_text().splitlines() == ["step\tfeature_std", "0\t0.5"]
    assert json.loads((folder / "metrics.json").read_text()) == {
        "feature_std": 0.5, "effective_rank": 3.0, "epoch": 0, "ssl_loss": 2.0, "lr": 0.2, "step": 2}
    assert sorted(os.listdir(tmp_path)) == [".git", "reports"]  # no .dvc, .dvcignore, dvc.yaml, dvclive/
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status.splitlines() == ["?? reports/"]  # nothing staged


def test_the_dvclive_hooks_it_replaces_still_exist() -> None:
    # FilesOnlyLive overrides two private methods of dvclive.Live (3.49); an upgrade that renames them must fail here
    for name in ("_init_dvc", "_init_studio", "_init_cleanup"):
        assert callable(getattr(Live, name))
    assert issubclass(FilesOnlyLive, Live)
