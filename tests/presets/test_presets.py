"""The paper-scale presets (presets/*.yaml) stay in step with params.yaml and compose for every method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_module

from sslbench.params import resolve_method, stage_overrides
from sslbench.training import config as pretrain

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(_keys(v, f"{prefix}{k}.") for k, v in tree.items())) if tree else {prefix}


def test_there_are_presets_for_the_three_paper_settings_and_the_published_encoders() -> None:
    assert {p.stem for p in PRESETS} == {"cifar10", "tinyimagenet", "imagenet", "imagenet_published"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_has_the_params_schema(path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = yaml.safe_load(path.read_text())
    # same sections and keys (methods: same names but in the published preset; their override values may differ)
    if path.stem != "imagenet_published":
        assert set(preset["methods"]) == set(params["methods"])
    strip = {k: v for k, v in params.items() if k != "methods"}
    assert _keys({k: v for k, v in preset.items() if k != "methods"}) == _keys(strip)
    assert preset["study"]["dataset"] == path.stem.removesuffix("_published")
    assert preset["pretrain"]["accelerator"] == "gpu"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_method_of_a_preset_composes(path: Path) -> None:
    preset = yaml.safe_load(path.read_text())
    for method in preset["methods"]:
        cli = [f"method={method}"]
        with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):  # as the entry point does
            cfg = compose("pretrain", [*stage_overrides(preset, "pretrain", cli), *resolve_method(preset, cli)])
        if path.stem == "imagenet_published":  # imported, not trained: a weights file, its format and pin
            assert cfg.method.name == method and cfg.method.weights.path.startswith("weights/")
            continue
        spec = pretrain.encoder_spec(cfg)
        assert spec.image_size == {"cifar10": 32, "tinyimagenet": 64, "imagenet": 224}[path.stem]
        if path.stem == "tinyimagenet":
            assert spec.stem == "tinyimagenet"
        pretrain.optim_config(cfg)
        views = pretrain.views_config(cfg)
        assert views.crop_size == spec.image_size
        if method != "random_init":  # null knobs keep each method's paper value
            assert isinstance(views.min_scale, float)
