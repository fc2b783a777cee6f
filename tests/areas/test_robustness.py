"""The robustness area's tables at bounded memory: corrupted sets kept or read again, predicted in groups, give the
errors of the whole-table evaluation (the stage itself runs in tests/stages/test_robustness.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sslbench.areas import robustness
from sslbench.areas.common import LinearSettings, Study, train_probe
from sslbench.data import corruptions as C
from sslbench.errors import UserError
from sslbench.io import EmbeddingWriter, embeddings_path, read_embeddings
from tests.stages.test_robustness import N, k_method, study  # noqa: F401  (`study`: the fixture)


def _study(root: Path) -> Study:
    return Study(method="simclr", data=root / "data", models=root / "models", reports=root / "reports",
                 dataset="shapes", train="train", val="val", test="test", num_classes=10, seed=0)


def _settings(st: Study) -> robustness.RobustnessSettings:
    return robustness.RobustnessSettings(study=st, linear=LinearSettings(30, 0.3, 512, (1e-4,)), reference="supervised",
                                         gradcam_images=0, gradcam_corruptions=(), gradcam_severity=3)


def test_streamed_sets_give_the_errors_of_the_held_ones(study: Path) -> None:  # noqa: F811
    st = _study(study)
    family = C.read_corrupted_meta(st.data, "shapes")
    held = robustness.load_tables(st, "simclr", family)
    assert all(cs.embedding is not None for cs in held.sets)  # the small study keeps every set: one probe call
    one_set = held.sets[0].embedding.nbytes  # type: ignore[union-attr]
    partly = robustness.load_tables(st, "simclr", family, hold_bytes=3 * one_set)
    assert [cs.embedding is not None for cs in partly.sets] == [True] * 3 + [False] * (len(partly.sets) - 3)
    probe = train_probe(held.train, held.val, st, _settings(st).linear)
    s = _settings(st)
    whole = robustness.evaluate(s, held, probe)
    for group_bytes in (0, 7 * one_set):  # one set per probe call; groups of 7
        streamed = robustness.evaluate(s, partly, probe, group_bytes=group_bytes)
        assert streamed.errors == whole.errors and list(streamed.errors) == list(whole.errors)
        assert streamed.clean_error == whole.clean_error
    for ci, c in enumerate(C.CORRUPTIONS):
        for sev in range(1, 6):
            assert whole.errors[c][sev] == pytest.approx(k_method(ci, sev) / N)


def test_a_table_changed_after_its_check_stops_the_evaluation(study: Path, tmp_path: Path) -> None:  # noqa: F811
    st = _study(study)
    family = C.read_corrupted_meta(st.data, "shapes")
    tables = robustness.load_tables(st, "simclr", family, hold_bytes=0)
    path = embeddings_path(st.data, "simclr", "shapes_c", "fog_1")
    saved = tmp_path / "fog_1.parquet"
    saved.write_bytes(path.read_bytes())
    emb = read_embeddings(path)
    try:
        with EmbeddingWriter(path, method="simclr", dataset="shapes_c", split="fog_1", dim=emb.dim) as writer:
            writer.write(emb.index[::-1], emb.label[::-1], emb.embedding[::-1])
        probe = train_probe(tables.train, tables.val, st, _settings(st).linear)
        with pytest.raises(UserError, match="shapes_c/fog_1 changed during the evaluation"):
            robustness.evaluate(_settings(st), tables, probe)
    finally:
        path.write_bytes(saved.read_bytes())
    np.testing.assert_array_equal(read_embeddings(path).index, emb.index)
