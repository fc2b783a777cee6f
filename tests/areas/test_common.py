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


def test_float16_tables_are_read_as_float32(tmp_path: Path) -> None:
    """`EmbeddingWriter(dtype="float16")` halves a table on disk; the areas read it as float32 (the rounded values),
    and a value beyond float16's range is refused rather than stored as inf."""
    import numpy as np

    from sslbench.io import EmbeddingWriter, read_embeddings

    rng = np.random.default_rng(0)
    x, mu = rng.normal(0, 3, (500, 64)).astype(np.float32), rng.normal(size=(500, 8)).astype(np.float32)
    paths = {}
    for dtype in ("float32", "float16"):
        paths[dtype] = tmp_path / f"{dtype}.parquet"
        with EmbeddingWriter(paths[dtype], method="m", dataset="d", split="s", dim=64, stochastic_space="z",
                             stochastic_dim=8, dtype=dtype) as writer:
            writer.write(np.arange(500), np.zeros(500), x, mu, -mu)
    half = read_embeddings(paths["float16"], dim=64)
    assert half.embedding.dtype == np.float32 and half.meta["dtype"] == "float16"
    np.testing.assert_array_equal(half.embedding, x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(half.logvar, (-mu).astype(np.float16).astype(np.float32))
    assert "dtype" not in read_embeddings(paths["float32"]).meta  # the default tables are written as before
    assert paths["float16"].stat().st_size < 0.6 * paths["float32"].stat().st_size
    refused = r"big.parquet: embedding values up to 1e\+05 exceed float16's range .*set embed.dtype=float32"
    with pytest.raises(UserError, match=refused), EmbeddingWriter(
        tmp_path / "big.parquet", method="m", dataset="d", split="s", dim=2, dtype="float16"
    ) as writer:
        writer.write(np.arange(1), np.zeros(1), np.array([[1e5, 0.0]], np.float32))
    assert not (tmp_path / "big.parquet").exists()
    with pytest.raises(ValueError, match="dtype must be one of"):
        EmbeddingWriter(tmp_path / "x.parquet", method="m", dataset="d", split="s", dim=2, dtype="bfloat16")
