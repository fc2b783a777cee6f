"""The checks every stage entry runs before any work (`sslbench.stages._entry`): unknown keys with the valid ones
listed, values of the wrong type, keys added with `+`, and params.yaml read and checked whole."""

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
from sslbench.stages._entry import check_override_types, unknown_key_error, with_params

Compose = Callable[..., Any]


def _probe(compose: Compose, *overrides: str) -> tuple[DictConfig, DictConfig]:
    return compose("probe", ["method=simclr", *overrides]), compose("probe", ["method=simclr"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["probe.knn.kk=3"], r"`probe.knn.kk` for the probe stage; valid keys under `probe.knn`: \['k', 'temperature'\]"),
    (["probe.kk.k=3"], r"`probe.kk.k` .*under `probe`: \['device', 'knn', 'linear', 'n_samples', 'semisup'\]"),
    (["nope=1"], r"`nope` .*at the top level: \['dataset', 'method', 'paths', 'probe', 'study'\]"),
])
def test_unknown_key_lists_the_valid_ones(overrides: list[str], message: str) -> None:
    error = unknown_key_error("probe", ["method=simclr", *overrides])
    assert isinstance(error, UserError)
    assert __import__("re").search(message, str(error)), str(error)


def test_unknown_key_of_a_method_entry_says_where_it_comes_from() -> None:
    error = unknown_key_error("pretrain", ["method=simclr", "method.module.temprature=0.2"])
    assert error is not None and "`method.module.temprature`" in str(error) and "'temperature'" in str(error)
    assert "methods.<name>.<key>` arrives as `method.<key>`" in str(error)


def test_known_keys_and_other_errors_are_left_to_hydra() -> None:
    assert unknown_key_error("probe", ["method=simclr", "probe.knn.k=3"]) is None
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
    check_override_types(cfg, defaults, ["method=simclr", *overrides], groups=["dataset"])
    corrupt = compose("corrupt", ["corrupt.n_images=all", "corrupt.severities=3"])
    check_override_types(corrupt, compose("corrupt"), ["corrupt.n_images=all", "corrupt.severities=3"])


def test_params_sections_go_before_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("probe:\n  knn: {k: 5}\nood: {knn_k: 7}\n")
    argv = with_params(["--cfg", "job", "method=simclr", "probe.linear.epochs=3"], "probe", tmp_path / "params.yaml")
    assert argv == ["--cfg", "job", "probe.knn.k=5", "method=simclr", "probe.linear.epochs=3"]
    assert with_params(["probe.knn.k=9"], "probe", tmp_path / "params.yaml") == ["probe.knn.k=9"]
    assert with_params(["a=1"], "probe", tmp_path / "absent.yaml") == ["a=1"]  # no params file: defaults


def test_a_misspelt_params_key_of_another_stage_stops_this_one(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("ood: {knn_kk: 7}\n")
    with pytest.raises(UserError, match=r"unknown keys \['ood.knn_kk'\]; valid keys under `ood:` are \['kmeans"):
        with_params(["method=simclr"], "probe", tmp_path / "params.yaml")


def test_stage_cli_prints_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    """Through the real entry point: a misspelt key of the working directory's params.yaml stops the stage."""
    (tmp_path / "params.yaml").write_text("report:\n  dpii: 100\n")
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "sslbench.stages.report", f"paths.reports={tmp_path}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: params.yaml: unknown keys ['report.dpii']"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob("*.md"))
    (tmp_path / "params.yaml").write_text("report:\n  dpi: 100\n")
    proc = subprocess.run([sys.executable, "-m", "sslbench.stages.report", "report.dpi=high"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: wrong value type: report.dpi='high' must be an integer (the default is 110). Fix the value in "
        "params.yaml (or on the command line)"]
    proc = subprocess.run([sys.executable, "-m", "sslbench.stages.report", "+report.dpii=100"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "`+report.dpii=100` adds a key that no stage reads" in proc.stderr
