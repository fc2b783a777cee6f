"""The checks every stage entry runs before any work (`sslbench.stages._entry`): unknown keys with the valid ones
listed, values of the wrong type, and params.yaml keys that are misspelt or never reach the stage."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig

from sslbench.errors import UserError
from sslbench.stages._entry import (
    check_override_types,
    check_params_file,
    dvc_nulls_to_hydra,
    unknown_key_error,
)

Compose = Callable[..., Any]
SECTIONS = ["corrupt", "embed", "ood", "prepare", "pretrain", "probe", "report", "robustness"]


def _probe(compose: Compose, *overrides: str) -> tuple[DictConfig, DictConfig]:
    return compose("probe", ["method_name=simclr", *overrides]), compose("probe", ["method_name=simclr"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["probe.knn.kk=3"], r"`probe.knn.kk` for the probe stage; valid keys under `probe.knn`: \['k', 'temperature'\]"),
    (["probe.kk.k=3"], r"`probe.kk.k` .*under `probe`: \['device', 'knn', 'linear', 'n_samples', 'semisup'\]"),
    (["nope=1"], r"`nope` .*at the top level: \['dataset', 'method_name', 'paths', 'probe', 'study'\]"),
])
def test_unknown_key_lists_the_valid_ones(overrides: list[str], message: str) -> None:
    error = unknown_key_error("probe", ["method_name=simclr", *overrides])
    assert isinstance(error, UserError)
    assert __import__("re").search(message, str(error)), str(error)


def test_unknown_key_of_a_method_entry_says_where_it_comes_from() -> None:
    error = unknown_key_error("pretrain", ["method=simclr", "method.module.temprature=0.2"])
    assert error is not None and "`method.module.temprature`" in str(error) and "'temperature'" in str(error)
    assert "methods.<name>.<key>` arrives as `method.<key>`" in str(error)


def test_known_keys_and_other_errors_are_left_to_hydra() -> None:
    assert unknown_key_error("probe", ["method_name=simclr", "probe.knn.k=3", "+probe.extra=1"]) is None
    assert unknown_key_error("probe", ["dataset=nope"]) is None  # Hydra lists the datasets itself


@pytest.mark.parametrize(("override", "message"), [
    ("probe.linear.epochs=five", r"probe.linear.epochs='five' must be an integer \(the default is 100\)"),
    ("probe.linear.epochs=1.5", "probe.linear.epochs=1.5 must be an integer"),
    ("probe.linear.epochs=true", "probe.linear.epochs=True must be an integer"),
    ("probe.knn.temperature=warm", "probe.knn.temperature='warm' must be a number"),
    ("probe.linear.weight_decays=0.1", "probe.linear.weight_decays=0.1 must be a list"),
    ("probe.knn=3", "probe.knn=3 must be a mapping"),
])
def test_wrong_value_type(compose: Compose, override: str, message: str) -> None:
    cfg, defaults = _probe(compose, override)
    with pytest.raises(UserError, match=message):
        check_override_types(cfg, defaults, [override])


def test_right_types_pass(compose: Compose) -> None:
    overrides = ["probe.linear.epochs=3", "probe.linear.lr=1", "probe.device=cpu", "probe.linear.weight_decays=[0.1]"]
    cfg, defaults = _probe(compose, *overrides)
    check_override_types(cfg, defaults, ["method_name=simclr", *overrides], groups=["dataset"])
    corrupt = compose("corrupt", ["corrupt.n_images=all", "corrupt.severities=3"])
    check_override_types(corrupt, compose("corrupt"), ["corrupt.n_images=all", "corrupt.severities=3"])


def _params(**probe: Any) -> dict[str, Any]:
    return {"study": {"seed": 0, "dataset": "shapes"}, "methods": {"simclr": {}},
            "probe": {"linear": {"epochs": 100, "weight_decays": "[1.0e-4, 1.0e-5, 1.0e-6]"}, **probe}}


def test_params_file_that_matches_the_stage_passes(compose: Compose) -> None:
    cfg = compose("probe", ["method_name=simclr"])
    check_params_file(_params(), cfg, "probe", SECTIONS, {"dataset": "shapes"})


def test_null_rendered_by_dvc_matches(compose: Compose) -> None:
    # DVC writes a params.yaml null into the command as `None`; the entry point turns it back into null
    cfg = compose("pretrain", dvc_nulls_to_hydra(["pretrain.views.min_scale=None", "backbone=convnet_small"]))
    params = {"pretrain": {"backbone": "convnet_small", "views": {"min_scale": None}}}
    choices = {"backbone": "convnet_small"}
    check_params_file(params, cfg, "pretrain", SECTIONS, choices)
    with pytest.raises(UserError, match=r"pretrain.backbone='resnet18' \(the stage got 'convnet_small'\)"):
        check_params_file({"pretrain": {"backbone": "resnet18"}}, cfg, "pretrain", SECTIONS, choices)


def test_params_file_with_a_misspelt_key(compose: Compose) -> None:
    cfg = compose("probe", ["method_name=simclr"])
    with pytest.raises(UserError, match=r"unknown keys \['probe.knn.kk'\]; valid keys under `probe:` .*probe.knn.k"):
        check_params_file(_params(knn={"kk": 5}), cfg, "probe", SECTIONS)
    with pytest.raises(UserError, match=r"unknown sections \['prob'\]"):
        check_params_file({**_params(), "prob": {}}, cfg, "probe", SECTIONS)


def test_params_file_value_that_never_reaches_the_stage(compose: Compose) -> None:
    cfg = compose("probe", ["method_name=simclr"])  # as if dvc.yaml did not pass probe.knn.k
    with pytest.raises(UserError, match=r"sets probe.knn.k=5 \(the stage got 20\), but dvc.yaml does not pass"):
        check_params_file(_params(knn={"k": 5}), cfg, "probe", SECTIONS)
    with pytest.raises(UserError, match=r"study.dataset='cifar10' \(the stage got 'shapes'\)"):
        check_params_file({**_params(), "study": {"dataset": "cifar10"}}, cfg, "probe", SECTIONS, {"dataset": "shapes"})


def test_stage_cli_prints_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    """Through the real entry point: under DVC (`DVC_ROOT`), a misspelt params.yaml key stops the stage."""
    (tmp_path / "params.yaml").write_text("report:\n  dpii: 100\n")
    env = {**os.environ, "DVC_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "sslbench.stages.report", f"paths.reports={tmp_path}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.startswith("error: params.yaml: unknown keys ['report.dpii']")
    assert len(proc.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("*.md"))
    proc = subprocess.run([sys.executable, "-m", "sslbench.stages.report", "report.dpi=high"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: wrong value type: report.dpi='high' must be an integer (the default is 110). Fix the value in "
        "params.yaml (or on the command line)"]


def test_dvc_nulls_become_hydra_nulls() -> None:
    argv = ["pretrain.views.min_scale=None", "method.module.label=NoneSuch", "prepare.root=", "--flag"]
    assert dvc_nulls_to_hydra(argv) == ["pretrain.views.min_scale=null", "method.module.label=NoneSuch",
                                        "prepare.root=", "--flag"]
