"""Tier 3: shared artifacts through a DVC remote. In a temporary copy of the repository, `dvc repro prepare`, then
`dvc push` to a local-directory remote, delete the outputs and the cache, `dvc pull`: the same bytes come back and
DVC sees the pipeline as up to date (a second machine or a CI job would pull instead of recomputing)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.tier3 import copy_repo, run, tiny_params

pytestmark = pytest.mark.slow

OUTPUTS = ("data/datasets", "reports/prepare")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS for p in sorted((root / out).rglob("*")) if p.is_file() and p.name != ".gitignore"}


def test_push_then_pull_from_a_local_remote_restores_identical_files(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    root = copy_repo(tmp_path / "repo", tiny_params({"simclr": {}}))
    run(["dvc", "remote", "add", "--default", "shared", str(remote)], root)  # written to .dvc/config
    run(["dvc", "repro", "prepare"], root)
    before = _digests(root)
    assert any(k.endswith("images.npy") for k in before) and any(k.endswith(".png") for k in before)

    run(["dvc", "push", "prepare"], root)
    assert any(p.is_file() for p in remote.rglob("*")), "dvc push wrote nothing to the remote"
    for out in OUTPUTS:
        shutil.rmtree(root / out)
    shutil.rmtree(root / ".dvc" / "cache")
    run(["dvc", "pull", "prepare"], root)

    assert _digests(root) == before
    status = run(["dvc", "status", "prepare"], root).stdout
    assert "up to date" in status, status
