"""params.yaml: each stage reads its own sections as Hydra overrides, and the whole file is checked first."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sslbench.errors import UserError
from sslbench.params import added_key_error, check_params, render, resolve_method, stage_overrides

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _with(**changes: Any) -> dict[str, Any]:
    """The study's params with dotted changes (`probe__knn__k=5`); a value of `...` deletes the key."""
    params = copy.deepcopy(PARAMS)
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        node = params
        for part in path:
            node = node.setdefault(part, {})
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return params


def _compose(config: str, overrides: list[str]) -> Any:
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        return compose(config, overrides=overrides)


def test_the_study_params_pass() -> None:
    check_params(PARAMS)
    for preset in sorted((ROOT / "presets").glob("*.yaml")):
        check_params(yaml.safe_load(preset.read_text()), preset.name)


@pytest.mark.parametrize(("changes", "message"), [
    ({"prob": {}}, r"unknown sections \['prob'\]; valid sections: \[.*'probe'"),
    ({"probe__knn__kk": 5}, r"unknown keys \['probe.knn.kk'\]; valid keys under `probe:` are \[.*'knn.k'"),
    ({"study__sede": 1}, r"unknown keys \['study.sede'\]; valid keys under `study:` are \['dataset', .*'seed'\]"),
    ({"study__dataset": "shapez"}, r"unknown dataset 'shapez'; valid datasets: cifar10, imagenet, shapes"),
    ({"pretrain__backbone": "resnet19"}, r"unknown backbone 'resnet19'; valid backbones: .*resnet18"),
    ({"methods__simclrr": {}}, r"unknown method 'simclrr'; valid methods: .*simclr"),
    ({"methods__simclr": {"module": {"temprature": 0.2}}}, r"module.temprature \(valid keys to add .*'temperature'"),
    ({"methods__simclr": {"optim": {"lrr": 0.2}}}, r"methods.simclr.optim.lrr \(valid keys to add under .*'lr'"),
    ({"methods__simclr": {"encoder": {"priorr": "mog"}}}, r"methods.simclr.encoder.priorr \(valid keys .*'prior'"),
    ({"methods__simclr": {"views": {"hf_prob": 0.0, "hf_probb": 0.0}}}, r"views.hf_probb \(valid keys .*'hf_prob'"),
    ({"probe__linear__epochs": "five"}, r"probe.linear.epochs='five' must be an integer \(the default is 100\)"),
    ({"probe__knn__temperature": True}, r"probe.knn.temperature=True must be a number"),
    ({"probe__linear__weight_decays": 0.1}, r"probe.linear.weight_decays=0.1 must be a list"),
    ({"probe__knn": 3}, r"probe.knn=3 must be a mapping"),
    ({"methods": ["simclr"]}, r"`methods:` must map method names"),
])
def test_a_wrong_key_or_value_anywhere_names_it_and_the_valid_ones(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_params(_with(**changes))


def test_flexible_and_null_values_pass() -> None:
    # string defaults are checked by the stage that reads them (`n_images: all` or a count); nulls keep defaults
    check_params(_with(corrupt__n_images=50, pretrain__devices="auto", pretrain__views__min_scale=None))


@pytest.mark.parametrize("value", [None, True, False, 0, -3, 0.5, 1e-6, float("inf"), "", "all", "it's", "1e-3",
                                   "a\\b", "a\\", "a\\'b", [1, 2.5], ["x", "y z"], [], {"a": 1}])
def test_rendered_values_reach_hydra_with_their_type(value: Any) -> None:
    cfg = OmegaConf.create({"x": None})
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"x={render(value)}").value()
    cfg.x = parsed
    assert OmegaConf.to_container(cfg)["x"] == value


def test_interpolations_are_refused() -> None:
    with pytest.raises(UserError, match="interpolations"):
        render("${dataset.image_size}")


def test_each_stage_gets_its_sections_and_the_command_line_wins() -> None:
    params = _with(probe__knn__k=7, ood__knn_k=9, pretrain__epochs=3, study__dataset="cifar10")
    probe = stage_overrides(params, "probe", ["method=simclr"])
    assert "probe.knn.k=7" in probe and "dataset=cifar10" in probe and "study.seed=0" in probe
    assert not any(o.startswith(("ood.", "pretrain.", "method.")) for o in probe)
    evaluate = stage_overrides(params, "evaluate", ["method=simclr"])
    assert {"probe.knn.k=7", "ood.knn_k=9"} <= set(evaluate)
    embed = stage_overrides(params, "embed", ["method=simclr"])
    assert "dataset=cifar10" in embed and not any(o.startswith("study.") for o in embed)  # embed has no seed
    # the command line's keys are left to it
    assert "probe.knn.k=7" not in stage_overrides(params, "probe", ["method=simclr", "probe.knn.k=3"])
    assert not any(o.startswith("dataset=") for o in stage_overrides(params, "probe", ["dataset=shapes"]))


def test_method_entries_reach_the_method_config() -> None:
    overrides = stage_overrides(PARAMS, "pretrain", ["method=barlow_twins_bayes_z"])
    assert "backbone=convnet_small" in overrides and "pretrain.epochs=4" in overrides
    assert {"method.module.mc_samples=2", "method.encoder.projector_dims=[1024,128]",
            "method.optim.lr=0.008"} <= set(overrides)
    # a key the method config lacks is added (`++`): here an `encoder:` field of a method whose section is empty
    assert "++method.encoder.prior='mog'" in stage_overrides(_with(methods__simclr={"encoder": {"prior": "mog"}}),
                                                             "pretrain", ["method=simclr"])
    cfg = _compose("pretrain", [*overrides, "method=barlow_twins_bayes_z", "pretrain.epochs=2"])
    assert cfg.method.module.mc_samples == 2 and list(cfg.method.encoder.projector_dims) == [1024, 128]
    assert cfg.method.optim.lr == 0.008 and cfg.pretrain.epochs == 2
    assert cfg.pretrain.views.min_scale == 0.3


def test_adding_a_key_on_the_command_line_is_refused() -> None:
    error = added_key_error(["method=simclr", "+probe.extra=1"])
    assert error is not None and "`+probe.extra=1` adds a key that no stage reads" in str(error)
    # a method's empty `encoder:` / `optim:` sections and its `_target_`s' keyword arguments may be added to
    assert added_key_error(["method=simclr", "++method.encoder.prior=mog", "+method.optim.lr=0.1",
                            "+method.views.hf_prob=0.0", "+method.module.temperature=0.2", "probe.knn.k=3"]) is None
    assert added_key_error(["method=simclr", "+method.encoder.nope=1"]) is not None
    assert added_key_error(["method=simclr", "+method.views.nope=1"]) is not None
    assert added_key_error(["+method.encoder.prior=mog"]) is not None  # no method: nothing to add to


def test_an_entry_may_start_from_another_method_config() -> None:
    params = _with(methods__simclr_t02={"method": "simclr", "module": {"temperature": 0.2}},
                   methods__dino_rn50={"method": "published",
                                       "weights": {"path": "w.pth", "format": "dino", "sha256": "ab"}})
    check_params(params)
    overrides = stage_overrides(params, "pretrain", ["method=simclr_t02"])
    assert {"method.module.temperature=0.2", "method.name='simclr_t02'"} <= set(overrides)
    assert resolve_method(params, ["method=simclr_t02", "pretrain.epochs=1"]) == ["method=simclr", "pretrain.epochs=1"]
    cfg = _compose("pretrain", [*overrides, *resolve_method(params, ["method=simclr_t02"])])
    assert cfg.method.name == "simclr_t02" and cfg.method.module.temperature == 0.2
    cfg = _compose("embed", [*stage_overrides(params, "embed", ["method=dino_rn50"]), "method=published"])
    assert cfg.method.name == "dino_rn50" and cfg.method.weights.format == "dino"


@pytest.mark.parametrize(("entry", "message"), [
    ({}, r"unknown method 'simclr_t02'.*; a new name needs `method: <one of them>`"),
    ({"method": "simclrr"}, r"unknown method 'simclrr'; valid methods: .*simclr.* \(`methods.simclr_t02.method`\)"),
    ({"method": "published", "weights": {"pth": "x"}}, r"unknown keys \['methods.simclr_t02.weights.pth'"),
])
def test_a_new_entry_without_a_known_config_is_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_params(_with(methods__simclr_t02=entry))
    with pytest.raises(UserError, match="must be lower_snake_case"):
        check_params(_with(**{"methods__SimCLR-2": {"method": "simclr"}}))
