"""The paper-scale presets (presets/*.yaml) stay in step with params.yaml, compose for every method, and keep the
papers' recipes that docs/presets.md lists (read from the composed configs, as the pretrain stage sees them)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import DictConfig

from sslbench.data.views import GaussianBlur
from sslbench.params import check_params, resolve_method, stage_overrides
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


# ------------------------------------------------------------------ the paper recipes the presets pin (docs/presets.md)


@functools.cache
def _composed(preset: str, method: str) -> DictConfig:
    """The pretrain config of `method` as the stage composes it from presets/<preset>.yaml."""
    params = yaml.safe_load((ROOT / "presets" / f"{preset}.yaml").read_text())
    cli = [f"method={method}"]
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        return compose("pretrain", [*stage_overrides(params, "pretrain", cli), *resolve_method(params, cli)])


def _views(preset: str, method: str) -> list[Any]:
    """The instantiated view transforms of a method (one per view, in order)."""
    return list(instantiate(pretrain.views_config(_composed(preset, method)), _convert_="all").transforms)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_passes_the_check_every_stage_runs(path: Path) -> None:
    check_params(yaml.safe_load(path.read_text()), path.name)


@pytest.mark.parametrize(("preset", "eta"), [
    ("cifar10", {"simclr": 1e-3, "byol": 0.02, "swav": 0.02}),  # SimCLR's LARS; solo-learn's eta 0.02
    ("imagenet", dict.fromkeys(["simclr", "byol", "barlow_twins", "swav", "vicreg", "barlow_twins_bayes_h",
                                "barlow_twins_bayes_z", "vicreg_bayes_h", "vicreg_bayes_z"], 1e-3)),
])
def test_the_sources_that_train_with_lars_get_lars(preset: str, eta: dict[str, float]) -> None:
    params = yaml.safe_load((ROOT / "presets" / f"{preset}.yaml").read_text())
    for method in params["methods"]:
        optim = pretrain.optim_config(_composed(preset, method))
        if method in eta:
            assert optim.name == "lars" and optim.trust_coefficient == eta[method] and optim.momentum == 0.9, method
        else:
            assert optim.name != "lars", method


def test_cifar10_dino_and_swav_follow_solo_learns_cifar_recipes() -> None:
    dino = _composed("cifar10", "dino").method.module
    assert dino.out_dim == 4096 != 65536  # solo-learn's CIFAR head, not ImageNet's 65,536 prototypes
    assert (dino.hidden_dim, dino.bottleneck_dim) == (2048, 256)
    assert dino.momentum_teacher == 0.9995
    assert _composed("cifar10", "swav").method.module.n_prototypes == 3000
    for method in ("dino", "swav"):  # two 32-px crops, no local crops at this resolution
        assert [v.crop_size for v in _views("cifar10", method)] == [32, 32]


def test_cifar10_simclr_uses_simclrs_cifar_setting_without_blur() -> None:
    cfg = _composed("cifar10", "simclr")
    views = pretrain.views_config(cfg)
    assert views.blur_prob == 0.0 and views.cj_strength == 0.5
    assert cfg.method.module.temperature == 0.5
    assert not any(isinstance(op, GaussianBlur) for v in _views("cifar10", "simclr") for op in v.ops)


def test_imagenet_multi_crop_methods_use_the_papers_96_px_local_crops() -> None:
    dino = _composed("imagenet", "dino").method.module
    assert (dino.hidden_dim, dino.bottleneck_dim, dino.out_dim) == (2048, 256, 65536)
    assert dino.warmup_teacher_temp_epochs == 30 and (dino.warmup_teacher_temp, dino.teacher_temp) == (0.04, 0.07)
    assert dino.momentum_teacher == 0.996
    assert [v.crop_size for v in _views("imagenet", "dino")] == [224, 224] + [96] * 8
    assert [v.crop_size for v in _views("imagenet", "swav")] == [224, 224] + [96] * 6
    assert _composed("imagenet", "swav").method.module.n_prototypes == 3000


def test_paper_scale_projectors_are_not_the_cpu_defaults() -> None:
    module = {(p, m): _composed(p, m).method.module for p in ("cifar10", "imagenet") for m in ("simclr", "byol")}
    assert module["imagenet", "simclr"].projector_dims == [2048, 128]
    assert module["imagenet", "byol"].projector_dims == module["imagenet", "byol"].predictor_dims == [4096, 256]
    assert module["cifar10", "byol"].projector_dims == [4096, 256]
    assert _composed("imagenet", "barlow_twins").method.module.projector_dims == [8192, 8192, 8192]
    assert _composed("imagenet", "vicreg").method.module.projector_dims == [8192, 8192, 8192]


def test_tinyimagenet_trains_every_method_with_dissl_table1s_optimizer_and_views() -> None:
    preset = yaml.safe_load((ROOT / "presets" / "tinyimagenet.yaml").read_text())
    trained = [m for m in preset["methods"] if m != "random_init"]
    assert {"simclr", "cissl", "dino", "dissl"} <= set(trained)
    for method in trained:
        cfg = _composed("tinyimagenet", method)
        optim = pretrain.optim_config(cfg)
        # Adam 2e-3 (the source does not scale it with the batch), wd 1e-6, 10 warm-up epochs, for every method
        assert optim.name == "adamw" and optim.weight_decay == 1e-6 and optim.warmup_epochs == 10
        assert optim.lr * cfg.pretrain.batch_size / 256 == pytest.approx(2e-3), method
        views = pretrain.views_config(cfg)
        assert (views.min_scale, views.blur_prob, views.gray_prob) == (0.2, 0.0, 0.1), method
        assert (views.cj_bright, views.cj_contrast, views.cj_sat, views.cj_hue, views.cj_strength) == \
            (0.4, 0.4, 0.4, 0.1, 1.0), method
        assert len(_views("tinyimagenet", method)) == (1 if method == "supervised" else 2), method
    dino = _composed("tinyimagenet", "dino").method.module  # Table 1's DINO baseline head, 1024 -> 256 -> 1000
    assert (dino.hidden_dim, dino.bottleneck_dim, dino.out_dim, dino.n_layers) == (1024, 256, 1000, 2)
    assert dino.use_bn_in_head and dino.warmup_teacher_temp_epochs == 50
    assert _composed("tinyimagenet", "simclr").method.module.temperature == 0.07
    assert _composed("tinyimagenet", "dissl").method.module.n_classes == 16384


def test_cifar10_bayes_entries_leave_the_ablation_grids_keys_to_the_method_configs() -> None:
    # the header's grid adds them with `dvc exp run -S '+methods.<name>.module.beta=...'`, which fails on a set key
    preset = yaml.safe_load((ROOT / "presets" / "cifar10.yaml").read_text())
    for method in ("barlow_twins_bayes_h", "barlow_twins_bayes_z", "vicreg_bayes_h", "vicreg_bayes_z"):
        entry = preset["methods"][method]
        assert not {"beta", "mc_samples"} & set(entry.get("module", {})) and "prior" not in entry.get("encoder", {})
        module = _composed("cifar10", method).method.module
        assert (module.mc_samples, module.beta) == (12, 1e-3)  # the reference's values, from the method configs
