"""`evaluate@<method>`: the probe, robustness and ood areas in one process, checked together before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from sslbench.areas import ood, probe, robustness
from sslbench.errors import UserError
from sslbench.stages import evaluate


def _compose(name: str, *overrides: str) -> DictConfig:
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        return compose(name, ["method=simclr", *overrides])


def test_each_area_has_the_same_settings_in_its_own_config_and_in_evaluate() -> None:
    combined = _compose("evaluate")
    for area, sections in (("probe", ["probe"]), ("robustness", ["probe", "robustness"]), ("ood", ["probe", "ood"])):
        alone = _compose(area)
        for section in sections:
            assert OmegaConf.to_container(alone[section]) == OmegaConf.to_container(combined[section]), (area, section)
        assert alone.study == combined.study and alone.paths == combined.paths


def test_runs_the_three_areas_in_order_and_merges_their_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    given: dict[str, Any] = {}
    trained: list[list[str]] = []

    def fake_probes(study: Any, linear: Any, devices: list[str]) -> dict[str, str]:
        trained.append(list(devices))
        return {device: f"probe on {device}" for device in devices}

    monkeypatch.setattr(evaluate, "main_probes", fake_probes)
    for module, key in ((probe, "linear/top1"), (robustness, "robustness/mce"), (ood, "ood/far/knn/auroc")):
        def fake(settings: Any, shared: Any = None, name: str = module.__name__, key: str = key) -> dict[str, Any]:
            calls.append(name.rsplit(".", 1)[1])
            given[name.rsplit(".", 1)[1]] = shared
            return {key: 0.5}
        monkeypatch.setattr(module, "run", fake)
    monkeypatch.setattr(evaluate, "verify_inputs", lambda cfg: calls.append("verify"))
    metrics = evaluate.run(_compose("evaluate", "probe.device=cpu"))
    assert calls == ["verify", "probe", "robustness", "ood"]
    assert metrics == {"linear/top1": 0.5, "robustness/mce": 0.5, "ood/far/knn/auroc": 0.5}
    # the linear probe of the main split is trained once and handed to every area
    assert len(trained) == 1 and set(trained[0]) == {"cpu"}
    assert given == {"probe": "probe on cpu", "robustness": "probe on cpu", "ood": "probe on cpu"}


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


def test_the_combined_stage_reads_the_sections_of_its_three_areas() -> None:
    from sslbench.params import schema, stage_overrides, stage_sections

    assert "evaluate" not in schema()  # not a params.yaml section of its own
    assert set(stage_sections("evaluate")) == {"study", "probe", "robustness", "ood"}
    params = {"study": {"seed": 0}, "probe": {"knn": {"k": 21}}, "robustness": {"reference": "auto"},
              "ood": {"knn_k": 51}}
    cfg = _compose("evaluate", *stage_overrides(params, "evaluate", ["method=simclr"]))
    assert cfg.probe.knn.k == 21 and cfg.ood.knn_k == 51

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
