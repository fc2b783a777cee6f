"""The paper-scale presets (presets/*.yaml) stay in step with params.yaml and compose for every method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_module

from sslbench.stages import pretrain
from sslbench.stages._entry import dvc_dict_to_overrides, dvc_nulls_to_hydra

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(_keys(v, f"{prefix}{k}.") for k, v in tree.items())) if tree else {prefix}


def _dvc_unpack(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """What DVC's `${item}` renders for a methods.<name> dictionary: `--a.b value` pairs."""
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _dvc_unpack(value, f"{prefix}{key}.")
        else:
            out += [f"--{prefix}{key}", str(value)]
    return out


def test_there_are_presets_for_the_three_paper_settings() -> None:
    assert {p.stem for p in PRESETS} == {"cifar10", "tinyimagenet", "imagenet"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_has_the_params_schema(path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    preset = yaml.safe_load(path.read_text())
    # same sections and keys (methods: same names; their override values may differ)
    assert set(preset["methods"]) == set(params["methods"])
    strip = {k: v for k, v in params.items() if k != "methods"}
    assert _keys({k: v for k, v in preset.items() if k != "methods"}) == _keys(strip)
    assert preset["study"]["dataset"] == path.stem
    assert preset["pretrain"]["accelerator"] == "gpu"


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_method_of_a_preset_composes(path: Path) -> None:
    preset = yaml.safe_load(path.read_text())
    p = preset["pretrain"]
    for method, overrides in preset["methods"].items():
        argv = [f"method={method}", f"dataset={preset['study']['dataset']}", f"backbone={p['backbone']}",
                f"pretrain.epochs={p['epochs']}", f"pretrain.batch_size={p['batch_size']}",
                # DVC renders the preset's null as None, as it does in dvc.yaml's command
                f"pretrain.views.min_scale={p['views']['min_scale']}",
                f"pretrain.views.blur_prob={p['views']['blur_prob']}",
                *dvc_dict_to_overrides(_dvc_unpack(overrides or {}), "method")]
        with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
            cfg = compose("pretrain", dvc_nulls_to_hydra(argv))  # as the stage's entry point does
        spec = pretrain.encoder_spec(cfg)
        assert spec.image_size == {"cifar10": 32, "tinyimagenet": 64, "imagenet": 224}[path.stem]
        if path.stem == "tinyimagenet":
            assert spec.stem == "tinyimagenet"
        pretrain.optim_config(cfg)
        views = pretrain.views_config(cfg)
        assert views.crop_size == spec.image_size
        if method != "random_init":  # null knobs keep each method's paper value
            assert isinstance(views.min_scale, float)
