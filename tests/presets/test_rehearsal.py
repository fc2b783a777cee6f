"""Tier 3: every paper-scale preset runs end to end (docs/pipeline.md, "Rehearsing a preset").

For each preset, a git + DVC copy of the repository gets the preset as its params.yaml, shrunk only in counts,
epochs, batch sizes and devices (CPU, 32-bit, one process, no DataLoader workers; one corruption at one severity,
at five on ImageNet): the methods, backbones, heads and protocols stay the preset's. `prepare.root` points at a
folder holding a tiny copy of every dataset the preset names, in each dataset's published on-disk layout
(tests/data/fixtures_real.py), CIFAR-10-C and ImageNet-C included (found through `prepare.root`, as the presets'
headers say), and the published preset's weights files are random networks saved in each publisher's layout. Then
`dvc repro` must run to the end: the report is written and every output dvc.yaml declares exists.

By default (the test suite, CI) each preset keeps the methods of `REHEARSED` (its supervised reference and the
methods whose recipes stress the pipeline most: multi-crop, Bayes-H, DISSL, a ViT, OpenMMLab's layout), since a
stage costs a Python start-up and a preset's 12-15 methods take 45-60 minutes on 2 cores. `SSLBENCH_REHEARSE=all`
keeps every method of the preset (docs/pipeline.md, "Rehearsing a preset"):
    SSLBENCH_REHEARSE=all .venv/bin/pytest -q tests/presets/test_rehearsal.py -k tinyimagenet
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import REPO
from tests.data import fixtures_real as F
from tests.tier3 import copy_repo, env, would_run, write_params

pytestmark = pytest.mark.slow

PRESETS = sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))
CORRUPTION, SEVERITY = "gaussian_noise", 3  # the Grad-CAM panel's first corruption at its severity


def severities(dataset: str) -> list[int]:
    """One set (SEVERITY), but all five on ImageNet, whose mCE reference (AlexNet's published errors) averages the
    five severities of each corruption."""
    return [1, 2, 3, 4, 5] if dataset == "imagenet" else [SEVERITY]
REPRO_TIMEOUT_S = 3600

# the datasets' fixture writers, by the names of `conf/dataset/<name>.yaml` `prepare:` lists
WRITERS: dict[str, Callable[[Path], Any]] = {
    "cifar10": F.write_cifar10, "cifar100": F.write_cifar100, "svhn": F.write_svhn, "stl10": F.write_stl10,
    "mnist": F.write_mnist, "tinyimagenet": F.write_tinyimagenet, "imagenet": F.write_imagenet,
    "dtd": F.write_dtd, "flowers102": F.write_flowers102, "sun397": F.write_sun397, "places365": F.write_places365,
}


def _dataset_config(name: str) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "src" / "sslbench" / "conf" / "dataset" / f"{name}.yaml").read_text())
    assert isinstance(config, dict)
    return config


def write_raw(raw: Path, dataset: str) -> None:
    """Every dataset the study of `dataset` prepares, and its located corrupted sets, under `raw`."""
    config = _dataset_config(dataset)
    truths = {name: WRITERS[name](raw) for name in config["prepare"]}
    source = config["corruption_source"]
    if source == "cifar10_c":
        F.write_cifar10_c(raw / "CIFAR-10-C", truths["cifar10"], [CORRUPTION])
    elif source == "imagenet_c":
        F.write_imagenet_c(raw / "ImageNet-C", raw / "imagenet", [CORRUPTION], severities(dataset))


# the methods each preset keeps in the default rehearsal (all of them with SSLBENCH_REHEARSE=all)
REHEARSED = {
    "cifar10": ("supervised", "dino", "barlow_twins_bayes_h"),
    "tinyimagenet": ("supervised", "dissl"),
    "imagenet": ("supervised", "swav"),
    # not a DISSL d8192 model here: its evaluation (8192-d covariance fits of the OOD scores) took over 6 minutes on
    # 2 CPU cores; tests/checkpoints import its layout
    "imagenet_published": ("supervised", "simclr_mm", "dino_vits16"),
}


def rehearsed_methods(preset: str, methods: dict[str, Any]) -> dict[str, Any]:
    if os.environ.get("SSLBENCH_REHEARSE") == "all":
        return methods
    assert set(REHEARSED[preset]) <= set(methods), f"{preset}: rehearsed methods not in the preset"
    return {name: entry for name, entry in methods.items() if name in REHEARSED[preset]}


def shrunk(preset: dict[str, Any], raw: Path, name: str) -> dict[str, Any]:
    """The preset with tiny counts, epochs and batch sizes on one CPU process, and the methods that the rehearsal
    keeps; everything else as it is."""
    p = json.loads(json.dumps(preset))
    p["methods"] = rehearsed_methods(name, p["methods"])
    p["prepare"].update(root=str(raw), download=False)
    levels = severities(p["study"]["dataset"])
    p["corrupt"].update(corruptions=CORRUPTION, severities=levels if len(levels) > 1 else levels[0], n_images="all",
                        workers=1, root="")
    p["pretrain"].update(epochs=1, batch_size=8, accelerator="cpu", devices=1, num_nodes=1, strategy="auto",
                         precision="32-true", num_workers=0, launcher="", compile=False)
    p["embed"].update(batch_size=16, device="cpu", num_workers=0)
    p["probe"].update(device="cpu", n_samples=2)
    p["probe"]["linear"].update(epochs=2, batch_size=16)
    p["probe"]["knn"].update(k=3)
    # a fixture class has 1-3 training images: a 1 % subset keeps one per class (the documented fallback)
    p["probe"]["semisup"].update(min_per_class=1)
    p["probe"]["semisup"]["finetune"].update(epochs=1, batch_size=4)
    if "min_steps" in p["probe"]["semisup"]["finetune"]:  # a floor on fine-tuning steps: a count too
        p["probe"]["semisup"]["finetune"]["min_steps"] = 0
    p["robustness"]["gradcam"].update(n_images=1, severity=SEVERITY)
    p["ood"].update(knn_k=3, kmeans_clusters=2)
    return p


def write_weights(repo: Path, methods: dict[str, Any]) -> None:
    """Random networks in the layouts the published preset names, at the preset's paths, pinned by their sha256."""
    from sslbench.checkpoints import file_sha256
    from tests.checkpoints import sources as S

    resnet50 = S.resnet("resnet50", seed=0, stem="imagenet").state_dict()
    made: dict[str, Path] = {}

    def file(kind: str, make: Callable[[], object]) -> Path:
        if kind not in made:
            made[kind] = repo / "weights" / f".fixture_{kind}.pth"
            made[kind].parent.mkdir(parents=True, exist_ok=True)
            torch.save(make(), made[kind])
        return made[kind]

    for entry in methods.values():
        weights = entry["weights"]
        fmt, path = weights["format"], repo / weights["path"]
        if fmt == "mmselfsup":  # OpenMMLab: {meta, state_dict} with the backbone under `backbone.`
            source = file("mmselfsup", lambda: {"meta": {"epoch": 200}, "state_dict": {
                f"backbone.{k}": v for k, v in resnet50.items()}})
        elif fmt == "dissl" and "d8192" in path.name:  # the widened torch.hub models
            source = file("dissl_d8192", lambda: S.dissl_resnet50_d8192(seed=1).state_dict())
        elif fmt == "dino" and ("vit" in path.name or "deit" in path.name):
            source = file("dino_vits16", lambda: S.dino_vit_small(seed=2, image_size=224))
        else:  # torchvision, DISSL d2048 / dNone and DINO ResNet-50 files: a flat torchvision state_dict
            source = file("flat_resnet50", lambda: resnet50)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.link(source, path)  # one file on disk for the methods that share a layout
        weights["sha256"] = file_sha256(path)


def declared_outputs(repo: Path, params: dict[str, Any]) -> list[str]:
    """Every `outs`, `metrics` and `plots` path of dvc.yaml's stages, `foreach` expanded over the study's methods."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    found: list[str] = []
    for stage in stages.values():
        body = stage.get("do", stage)
        keys = list(params["methods"]) if "foreach" in stage else [None]
        for key in keys:
            for kind in ("outs", "metrics", "plots"):
                for item in body.get(kind, []):
                    path = next(iter(item)) if isinstance(item, dict) else str(item)
                    path = path.replace("${study.dataset}", params["study"]["dataset"])
                    found.append(path.replace("${key}", key) if key else path)
    return found


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_end_to_end(preset: str, tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "presets" / f"{preset}.yaml").read_text())
    raw = tmp_path / "raw"
    write_raw(raw, params["study"]["dataset"])
    params = shrunk(params, raw, preset)
    repo = copy_repo(tmp_path / "repo", params)
    if preset == "imagenet_published":  # after the commit: the weights files stay out of git
        write_weights(repo, params["methods"])
        write_params(repo, params)

    start = time.perf_counter()
    # the copy's stages import the copy's sources (not the editable install's)
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env={**env(), "PYTHONPATH": str(repo / "src")},
                          capture_output=True, text=True, timeout=REPRO_TIMEOUT_S)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"{preset}: dvc repro failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    print(f"{preset}: dvc repro of {len(params['methods'])} methods in {seconds:.0f} s")

    missing = [p for p in declared_outputs(repo, params) if not (repo / p).exists()]
    assert not missing, f"{preset}: declared outputs not written: {missing}"
    summary = (repo / "reports" / "summary.md").read_text()
    assert all(method in summary for method in params["methods"])
    headline = json.loads((repo / "reports" / "headline.json").read_text())
    assert list(headline) == list(params["methods"])
    assert would_run(repo) == set()
    # every plot renders: the per-method ones, the report's tables across methods (reports/figures/data) and the
    # training logs, a not-applicable ROC table (no near-OOD group: a header without rows) included
    shown = json.loads(subprocess.run(["dvc", "plots", "show", "--json"], cwd=repo, env=env(), capture_output=True,
                                      text=True, check=True).stdout)
    errors = {name for name, plots in shown["data"].items() for plot in plots if plot.get("errors")}
    assert not errors, errors
    assert {"reports/figures/data/roc_near.csv", "reports/figures/data/roc_far.csv"} <= set(shown["data"])
