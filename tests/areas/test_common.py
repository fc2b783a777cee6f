"""The linear probe of the main split that `evaluate@<method>` trains once and shares between the areas: the same
probe that an area trains alone, and the same outputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from sslbench.areas import ood
from sslbench.areas.common import encoder_sha, load_table, main_probes, train_probe
from sslbench.errors import UserError
from tests.stages.test_ood import write_study


def _outputs(reports: Path) -> dict[str, bytes]:
    return {str(p.relative_to(reports)): p.read_bytes() for p in sorted(reports.rglob("*")) if p.is_file()}


def test_a_shared_probe_gives_the_outputs_of_the_probe_an_area_trains_alone(
    tmp_path: Path, compose: Callable[..., Any]
) -> None:
    write_study(tmp_path, "simclr", stochastic=False)
    overrides = ["method=simclr", f"paths.data={tmp_path / 'data'}", f"paths.models={tmp_path / 'models'}",
                 "probe.linear.epochs=5", "ood.knn_k=10"]
    alone = ood.settings(compose("ood", [*overrides, f"paths.reports={tmp_path / 'alone'}"]))
    shared = ood.settings(compose("ood", [*overrides, f"paths.reports={tmp_path / 'shared'}"]))

    probes = main_probes(shared.study, shared.linear, ["cpu", "cpu"])
    assert list(probes) == ["cpu"]  # one probe per distinct device
    st, sha = alone.study, encoder_sha(alone.study)
    own = train_probe(load_table(st.data, st.method, st.dataset, st.train, dim=None, sha=sha),
                      load_table(st.data, st.method, st.dataset, st.val, dim=None, sha=sha), st, alone.linear)
    assert torch.equal(own.weight, probes["cpu"].weight) and torch.equal(own.bias, probes["cpu"].bias)

    assert ood.run(alone) == ood.run(shared, probes["cpu"])
    assert _outputs(tmp_path / "alone") == _outputs(tmp_path / "shared")

    with pytest.raises(UserError, match=r"encoder.pt is missing; run `dvc repro pretrain@byol`"):
        main_probes(dataclasses.replace(st, method="byol"), alone.linear, ["cpu"])
