"""Tier 3: the real pipeline (DESIGN.md §8). `dvc repro` of a tiny study in a temporary copy of the repository,
then `dvc exp run -S ...`, `dvc metrics diff`, selective reruns, and bad params."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow

TINY_METHODS = {"supervised": {}, "simclr": {}, "barlow_twins_bayes_h": {"module": {"mc_samples": 2}}}
GIT = ["git", "-c", "user.email=test@sslbench", "-c", "user.name=test"]


def tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["methods"] = TINY_METHODS
    params["prepare"]["shapes"].update(n_train=200, n_val=60, n_test=60, n_ood=40)
    params["corrupt"]["n_images"] = 4
    params["pretrain"].update(epochs=1, batch_size=64)
    params["probe"]["linear"]["epochs"] = 5
    params["probe"]["semisup"].update(min_per_class=1)
    params["probe"]["semisup"]["finetune"]["epochs"] = 1
    params["robustness"]["gradcam"]["n_images"] = 1
    return params


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git+DVC copy of the repository with tiny params, after one full `dvc repro`."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if rel.startswith(("data/", "models/", "reports/")) and not rel.endswith(".gitignore"):
            continue
        if rel == "dvc.lock":
            continue
        src = REPO / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    run(["git", "init", "-q"], root)
    run([*GIT, "add", "-A"], root)
    run([*GIT, "commit", "-qm", "tiny study"], root)
    run(["dvc", "repro"], root)
    run([*GIT, "add", "-A"], root)
    run([*GIT, "commit", "-qm", "repro"], root)
    return root


def would_run(root: Path) -> set[str]:
    out = run(["dvc", "repro", "--dry"], root).stdout
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def edit_params(root: Path, edit: object) -> str:
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    edit(params)  # type: ignore[operator]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return original


def test_repro_writes_every_declared_output(study: Path) -> None:
    for method in TINY_METHODS:
        assert (study / "models" / method / "encoder.pt").is_file()
        probe = json.loads((study / "reports" / "probe" / f"{method}.json").read_text())
        assert 0.0 <= probe["linear/top1"] <= 1.0
        assert "robustness/mce" in json.loads((study / "reports" / "robustness" / f"{method}.json").read_text())
        ood = json.loads((study / "reports" / "ood" / f"{method}.json").read_text())
        assert ood["ood/convention"] == "ood_positive"
    assert "simclr" in (study / "reports" / "summary.md").read_text()
    merged = json.loads((study / "reports" / "metrics.json").read_text())
    assert set(TINY_METHODS) <= set(merged)
    # nothing left to do, and no Hydra or Lightning litter in the repository
    assert would_run(study) == set()
    assert not (study / "outputs").exists() and not (study / "lightning_logs").exists()


def test_probe_param_reruns_only_probe_stages(study: Path) -> None:
    original = edit_params(study, lambda p: p["probe"]["knn"].update(k=5))
    try:
        assert would_run(study) == {f"probe@{m}" for m in TINY_METHODS} | {"report"}
    finally:
        (study / "params.yaml").write_text(original)


def test_method_param_reruns_only_that_chain(study: Path) -> None:
    original = edit_params(study, lambda p: p["methods"]["simclr"].update(module={"temperature": 0.2}))
    try:
        # a dry run lists the stages whose own inputs changed; the rest of simclr's chain follows from its new
        # encoder (checked for real by test_exp_run_and_metrics_diff)
        assert would_run(study) == {"pretrain@simclr", "report"}
    finally:
        (study / "params.yaml").write_text(original)


def test_exp_run_and_metrics_diff(study: Path) -> None:
    run(["dvc", "exp", "run", "-S", "+methods.simclr.module.temperature=0.2"], study)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], study).stdout)
    changed_files = {path for path, keys in diff.items() if keys}
    assert "reports/pretrain/simclr.json" in changed_files
    # other methods' chains did not rerun, so their metrics files do not appear in the diff
    assert not any("supervised" in path for path in changed_files)


def test_unknown_method_fails_with_valid_names(study: Path) -> None:
    original = edit_params(study, lambda p: p["methods"].update(simclrr={}))
    try:
        proc = run(["dvc", "repro", "pretrain@simclrr"], study, check=False)
        assert proc.returncode != 0
        assert "simclrr" in proc.stdout + proc.stderr and "simclr" in proc.stdout + proc.stderr
        assert not (study / "models" / "simclrr").exists()
    finally:
        (study / "params.yaml").write_text(original)
