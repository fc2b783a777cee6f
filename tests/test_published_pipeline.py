"""Tier 3: published encoders beside a trained one through `dvc repro`. The same ResNet-18 weights shipped in two
publishers' layouts (torchvision's flat state_dict, OpenMMLab's `{meta, state_dict: backbone.*, neck.*, head.*}`)
are imported as two methods and must score identically everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sslbench.checkpoints import export_encoder, file_sha256
from sslbench.models.encoder import Encoder, EncoderSpec, save_encoder
from tests.tier3 import copy_repo, run, tiny_params, would_run

pytestmark = pytest.mark.slow

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _published(root: Path) -> dict[str, Path]:
    """One random ResNet-18 (CIFAR stem) written as torchvision and as OpenMMLab would ship it."""
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec(backbone="resnet18", stem="cifar", image_size=32, mean=MEAN, std=STD))
    save_encoder(encoder, root / "source", {})
    flat = export_encoder(root / "source" / "encoder.pt", root / "weights" / "resnet18_tv.pth").path
    state = torch.load(flat, weights_only=True)
    mm = {"meta": {"epoch": 200}, "state_dict": {
        **{f"backbone.{k}": v for k, v in state.items()},
        "neck.mlp.0.weight": torch.zeros(8, 512), "head.predictor.weight": torch.zeros(8, 8),
        "target_net.backbone.conv1.weight": torch.zeros_like(state["conv1.weight"])}}
    torch.save(mm, root / "weights" / "resnet18_mm.pth")
    return {"torchvision": flat, "mmselfsup": root / "weights" / "resnet18_mm.pth"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("published")
    files = _published(root)
    methods = {"supervised": {}, "simclr": {}, **{
        f"pub_{fmt}": {"method": "published", "encoder": {"mean": MEAN, "std": STD},
                       "weights": {"path": str(path), "format": fmt, "sha256": file_sha256(path)}}
        for fmt, path in files.items()}}
    repo = copy_repo(root / "repo", tiny_params(methods))
    run(["dvc", "repro"], repo)
    return repo


def _metrics(study: Path, area: str, method: str) -> dict[str, object]:
    return json.loads((study / "reports" / area / f"{method}.json").read_text())


def test_two_layouts_of_the_same_weights_score_identically(study: Path) -> None:
    for area in ("probe", "robustness", "ood"):
        # the same numbers; text fields name the method (e.g. why the stochastic OOD scores are skipped)
        mm = json.loads(json.dumps(_metrics(study, area, "pub_mmselfsup")).replace("pub_mmselfsup", "pub_torchvision"))
        assert _metrics(study, area, "pub_torchvision") == mm, area
    for fmt in ("torchvision", "mmselfsup"):
        config = yaml.safe_load((study / "models" / f"pub_{fmt}" / "config.yaml").read_text())
        assert config["imported"]["format"] == fmt and config["encoder"]["backbone"] == "resnet18"
    assert (study / "models" / "simclr" / "encoder.pt").is_file()  # the trained method beside them
    assert "pub_mmselfsup" in (study / "reports" / "summary.md").read_text()
    assert would_run(study) == set()


def test_a_new_pin_reruns_only_that_method(study: Path) -> None:
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["methods"]["pub_mmselfsup"]["weights"]["sha256"] = "0" * 64
    original = (study / "params.yaml").read_text()
    (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert would_run(study) == {"codedeps", "pretrain@pub_mmselfsup", "report"}
    finally:
        (study / "params.yaml").write_text(original)
