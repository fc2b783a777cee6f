"""Weighted kNN (DINO eval_knn.py): a hand-computed case and agreement with a brute-force version, blocked."""

from __future__ import annotations

import numpy as np
import pytest

from sslbench.eval.knn import knn_predict, knn_votes


def brute_force(train: np.ndarray, labels: np.ndarray, test: np.ndarray, c: int, k: int, t: float) -> np.ndarray:
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    q = test / np.linalg.norm(test, axis=1, keepdims=True)
    sim = q @ a.T
    votes = np.zeros((len(test), c))
    for i, row in enumerate(sim):
        top = np.argsort(-row, kind="stable")[:k]
        np.add.at(votes[i], labels[top], np.exp(row[top] / t))
    return votes


def test_hand_computed_votes() -> None:
    train = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]], np.float32)
    labels = np.array([0, 1, 1, 0])
    test = np.array([[2.0, 0.1]], np.float32)  # the length of a feature must not matter (cosine)
    votes = knn_votes(train, labels, test, num_classes=2, k=2, temperature=0.5)
    s = test[0] / np.linalg.norm(test[0])
    sims = [s @ (v / np.linalg.norm(v)) for v in train]  # neighbours: [1,0] (class 0) and [1,1] (class 1)
    np.testing.assert_allclose(votes[0], [np.exp(sims[0] / 0.5), np.exp(sims[2] / 0.5)], rtol=1e-5)
    assert knn_predict(train, labels, test, num_classes=2, k=2, temperature=0.5)[0] == 0


@pytest.mark.parametrize("block_floats", [1 << 24, 7 * 40])  # one block; many test x train blocks (running top-k)
def test_agrees_with_brute_force(block_floats: int) -> None:
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(300, 8)).astype(np.float32), rng.integers(0, 5, 300)
    test = rng.normal(size=(37, 8)).astype(np.float32)
    votes = knn_votes(train, labels, test, num_classes=5, k=7, temperature=0.07, block_floats=block_floats)
    np.testing.assert_allclose(votes, brute_force(train, labels, test, 5, 7, 0.07), rtol=1e-4)


def test_k_larger_than_train_and_bad_arguments() -> None:
    train, labels = np.eye(3, dtype=np.float32), np.array([0, 1, 2])
    votes = knn_votes(train, labels, np.eye(3, dtype=np.float32)[:1], num_classes=3, k=50)
    assert np.all(votes > 0)  # every train example voted
    with pytest.raises(ValueError, match="k >= 1 and temperature > 0"):
        knn_votes(train, labels, train, num_classes=3, k=0)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_votes_equal_cpu() -> None:  # pragma: no cover - GPU only
    rng = np.random.default_rng(1)
    train, labels = rng.normal(size=(500, 16)).astype(np.float32), rng.integers(0, 4, 500)
    test = rng.normal(size=(60, 16)).astype(np.float32)
    cpu = knn_votes(train, labels, test, num_classes=4, k=9, block_floats=60 * 100)
    np.testing.assert_allclose(knn_votes(train, labels, test, num_classes=4, k=9, device="cuda"), cpu, rtol=1e-4)
