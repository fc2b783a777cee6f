"""`evaluate@<method>`: the probe, robustness and ood areas in one process, checked together before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from sslbench.errors import UserError
from sslbench.stages import _entry, evaluate, ood, probe, robustness


def _compose(name: str, *overrides: str) -> DictConfig:
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        return compose(name, ["method_name=simclr", *overrides])


def test_each_area_has_the_same_settings_in_its_own_config_and_in_evaluate() -> None:
    combined = _compose("evaluate")
    for area, sections in (("probe", ["probe"]), ("robustness", ["probe", "robustness"]), ("ood", ["probe", "ood"])):
        alone = _compose(area)
        for section in sections:
            assert OmegaConf.to_container(alone[section]) == OmegaConf.to_container(combined[section]), (area, section)
        assert alone.study == combined.study and alone.paths == combined.paths


def test_runs_the_three_areas_in_order_and_merges_their_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for module, key in ((probe, "linear/top1"), (robustness, "robustness/mce"), (ood, "ood/far/knn/auroc")):
        def fake(cfg: DictConfig, name: str = module.__name__, key: str = key) -> dict[str, Any]:
            calls.append(name.rsplit(".", 1)[1])
            return {key: 0.5}
        monkeypatch.setattr(module, "run", fake)
    monkeypatch.setattr(evaluate, "verify_inputs", lambda cfg: calls.append("verify"))
    metrics = evaluate.run(_compose("evaluate"))
    assert calls == ["verify", "probe", "robustness", "ood"]
    assert metrics == {"linear/top1": 0.5, "robustness/mce": 0.5, "ood/far/knn/auroc": 0.5}


@pytest.mark.parametrize(("override", "message"), [
    ("robustness.reference=nope", "robustness.reference"),
    ("robustness.gradcam.n_images=-1", "robustness.gradcam.n_images"),
    ("probe.semisup.fractions=[2.0]", "probe.semisup.fractions"),
    ("ood.knn_k=0", "ood.knn_k"),
])
def test_a_bad_setting_of_any_area_stops_before_the_first_area_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, override: str, message: str
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(probe, "run", lambda cfg: ran.append("probe") or {})
    with pytest.raises(UserError, match=message):
        evaluate.run(_compose("evaluate", override, f"paths.reports={tmp_path}"))
    assert ran == [] and not any(tmp_path.iterdir())


def test_params_file_checks_cover_every_section_of_the_combined_stage() -> None:
    assert "evaluate" not in _entry._stage_sections()  # not a params.yaml section of its own
    cfg = _compose("evaluate")
    sections = _entry._stage_sections()
    params = {"study": {"seed": 0}, "probe": {"knn": {"k": 20}}, "robustness": {"reference": "auto"},
              "ood": {"knn_k": 50}}
    _entry.check_params_file(params, cfg, _entry.COMBINED["evaluate"], sections)
    with pytest.raises(UserError, match=r"unknown keys \['ood.knn_kk'\]"):
        _entry.check_params_file({**params, "ood": {"knn_kk": 50}}, cfg, _entry.COMBINED["evaluate"], sections)
    with pytest.raises(UserError, match="robustness.reference='supervised'.*does not pass"):
        _entry.check_params_file({**params, "robustness": {"reference": "supervised"}}, cfg,
                                 _entry.COMBINED["evaluate"], sections)


def test_the_embeddings_of_the_method_and_of_the_reference_are_checked_against_their_manifests(
    tmp_path: Path,
) -> None:
    from sslbench.io import EmbeddingWriter, write_embedding_manifest

    for method in ("simclr", "supervised"):
        with EmbeddingWriter(tmp_path / "embeddings" / method / "shapes" / "test.parquet", method=method,
                             dataset="shapes", split="test", dim=2) as writer:
            writer.write(np.arange(3), np.zeros(3, np.int64), np.ones((3, 2), np.float32))
        write_embedding_manifest(tmp_path / "embeddings" / method)
    cfg = _compose("evaluate", f"paths.data={tmp_path}")
    evaluate.verify_inputs(cfg)
    (tmp_path / "embeddings" / "supervised" / "shapes" / "test.parquet").write_bytes(b"not the table")
    with pytest.raises(UserError, match=r"supervised/shapes/test.parquet changed .*dvc repro embed@supervised"):
        evaluate.verify_inputs(cfg)
