"""The ood area's helpers (the area itself runs in tests/stages/test_ood.py, through its stage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslbench.areas import ood
from tests.stages.test_ood import write_study


def test_shared_classes_warn(tmp_path: Path) -> None:
    write_study(tmp_path, "simclr", stochastic=False, digits_classes=["0", "Shape3", "7"])
    with pytest.warns(ood.OODClassOverlapWarning, match="digits/test shares classes .*: shape3"):
        ood.warn_shared_classes(tmp_path / "data", "shapes", "train", {"digits": "test", "shapes_heldout": "test"})


def test_a_bayes_h_table_keeps_one_array_of_mu() -> None:
    import numpy as np

    from sslbench.io import Embeddings

    rng = np.random.default_rng(0)
    mu = rng.normal(size=(50, 4)).astype(np.float32)
    h = Embeddings(np.arange(50), np.zeros(50, np.int64), mu, mu.copy(), -mu, {})
    shared = ood._one_mu(h)
    assert shared.mu is shared.embedding and np.array_equal(shared.mu, mu)
    z = Embeddings(np.arange(50), np.zeros(50, np.int64), mu, mu + 1, -mu, {})  # Bayes-Z: mu is another array
    assert ood._one_mu(z) is z
    deterministic = Embeddings(np.arange(50), np.zeros(50, np.int64), mu, None, None, {})
    assert ood._one_mu(deterministic) is deterministic
