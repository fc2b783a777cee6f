"""Helpers of the tier-3 tests (docs/pipeline.md): a git + DVC copy of the repository with tiny params, commands run in
it, and what a test compares afterwards (metrics files, dvc.lock, leftovers).

Used by tests/test_pipeline.py and tests/test_reliability.py. Tests never touch the network and never write into
the repository itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

GIT = ["git", "-c", "user.email=test@sslbench", "-c", "user.name=test"]
TIMEOUT_S = 900


def tiny_params(methods: Mapping[str, Any]) -> dict[str, Any]:
    """The repository's params.yaml shrunk to a study of `methods` that runs in a few minutes on 2 CPU cores.

    Only the values set here are relied on: the defaults of params.yaml may change under the tests.
    """
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["methods"] = {name: dict(value) for name, value in methods.items()}
    params["study"].update(seed=0, dataset="shapes")
    params["prepare"].update(root="", download=False)
    params["prepare"]["shapes"].update(n_classes=10, n_heldout=4, n_train=200, n_val=60, n_test=60, n_ood=40)
    params["corrupt"].update(corruptions="all", severities="all", n_images=4, subset="random", workers=2)
    params["pretrain"].update(backbone="convnet_small", epochs=1, batch_size=64, accelerator="cpu", devices=1,
                              num_nodes=1, strategy="auto", precision="32-true")
    params["embed"].update(device="cpu", num_workers=0)
    params["probe"].update(device="cpu", n_samples=2)
    params["probe"]["linear"]["epochs"] = 5
    params["probe"]["knn"]["k"] = 10
    params["probe"]["semisup"].update(min_per_class=1)
    params["probe"]["semisup"]["finetune"].update(epochs=1, min_steps=0)
    params["robustness"]["gradcam"]["n_images"] = 1
    params["ood"].update(knn_k=10, kmeans_clusters=4)
    return params


def env() -> dict[str, str]:
    """The environment of a command in a copy: this interpreter's venv first on PATH, no network for timm."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1"}


def run(cmd: list[str], cwd: Path, check: bool = True, extra_env: Mapping[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def copy_repo(root: Path, params: Mapping[str, Any], dvc_yaml: Callable[[str], str] | None = None) -> Path:
    """Copy the sources of the working tree into `root` (tracked files and new ones git does not ignore; no
    artifacts, no dvc.lock), write `params`, and commit it all in a fresh git repository. `dvc_yaml` may rewrite the
    copy's dvc.yaml text."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    files = sorted(set(listed.split()))
    for rel in files:
        if rel.startswith(("data/", "models/", "reports/")) and not rel.endswith(".gitignore"):
            continue
        if rel == "dvc.lock":
            continue
        src = REPO / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    write_params(root, params)
    if dvc_yaml is not None:
        (root / "dvc.yaml").write_text(dvc_yaml((root / "dvc.yaml").read_text()))
    run(["git", "init", "-q"], root)
    commit(root, "tiny study")
    return root


def commit(root: Path, message: str) -> None:
    run([*GIT, "add", "-A"], root)
    run([*GIT, "commit", "-qm", message, "--allow-empty"], root)


def write_params(root: Path, params: Mapping[str, Any]) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(dict(params), sort_keys=False))


def read_params(root: Path) -> dict[str, Any]:
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert isinstance(params, dict)
    return params


def edit_params(root: Path, edit: Callable[[dict[str, Any]], object]) -> str:
    """Apply `edit` to the copy's params and write them back; returns the original text (to restore)."""
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    edit(params)
    write_params(root, params)
    return original


def would_run(root: Path) -> set[str]:
    out = run(["dvc", "repro", "--dry"], root).stdout
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def metrics_files(root: Path) -> dict[str, str]:
    """Every metrics JSON of the study (`reports/<stage>/<method>.json` and `reports/metrics.json`), as text."""
    paths = [*sorted((root / "reports").glob("*/*.json")), root / "reports" / "metrics.json"]
    return {str(p.relative_to(root)): p.read_text() for p in paths if p.is_file()}


def metrics_without(files: Mapping[str, str], keys: tuple[str, ...]) -> dict[str, Any]:
    """Parsed metrics files with the named keys dropped at any depth (e.g. wall-clock times)."""

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if not any(k.endswith(key) for key in keys)}
        return obj

    return {path: strip(json.loads(text)) for path, text in files.items()}


def leftovers(root: Path) -> list[str]:
    """Temporary files of interrupted writes (`.<name>.tmp-*`, `.<name>.tmp`) anywhere under the artifacts."""
    found: list[str] = []
    for top in ("data", "models", "reports"):
        found += [str(p.relative_to(root)) for p in (root / top).rglob(".*.tmp*")]
    return sorted(found)
