"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018; DINO, Caron et al. 2021).

As in facebookresearch/dino `eval_knn.py` (`knn_classifier`): features are L2-normalised, the similarity is the
cosine s(q, x_i); the k most similar train examples vote for their class with weight exp(s / T), and the predicted
class is the one with the largest summed weight. DINO's defaults: k = 20, T = 0.07.

Hand-written (no sklearn `KNeighborsClassifier`) because the vote is DINO's exponential weighting and because the
train table may be ImageNet-sized: the train features are never copied or normalised in place (their inverse norms
scale the similarity columns instead), and the similarity matrix is built in (test block x train block) pieces of
bounded size, keeping a running top-k per test row.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from sslbench.eval.linear import Array, as_float32


def knn_votes(
    train_x: Array,
    train_y: np.ndarray,
    test_x: Array,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    block_floats: int = 1 << 24,
    device: str = "cpu",
) -> np.ndarray:
    """Class votes (N_test, C): sum over the k nearest train examples (cosine) of exp(similarity / temperature).

    Args:
        train_x (N, D), train_y (N,), test_x (M, D): features and integer labels in [0, num_classes).
        k: neighbours (capped at N); temperature: T of the exponential weights.
        block_floats: the largest similarity block held at once (test rows x train rows); 16x that on a GPU.
        device: where the products and the top-k run (`cuda`: the train table is moved there block by block, once
            per block of test rows; the tables themselves stay on the CPU).
    Returns:
        float32 (M, C) votes; `argmax(1)` is the prediction.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    xt, qt = as_float32(train_x), as_float32(test_x)
    labels = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    if len(xt) == 0 or len(labels) != len(xt):
        raise ValueError(f"need a non-empty train set with one label per row, got {len(xt)} rows, {len(labels)} labels")
    dev = torch.device(device)
    if dev.type == "cuda":
        block_floats *= 16
    n, k = len(xt), min(k, len(xt))
    step_x = max(k, min(n, 65536))
    inv_norm = torch.cat([1.0 / xt[i : i + step_x].norm(dim=1).clamp_min(1e-12) for i in range(0, n, step_x)])
    inv_norm, labels = inv_norm.to(dev), labels.to(dev)
    step_q = max(1, min(len(qt), block_floats // step_x))
    votes = torch.zeros(len(qt), num_classes, device=dev)
    for i in range(0, len(qt), step_q):
        q = F.normalize(qt[i : i + step_q].to(dev), dim=1)
        best_sim = torch.full((len(q), k), -float("inf"), device=dev)
        best_idx = torch.zeros((len(q), k), dtype=torch.long, device=dev)
        for j in range(0, n, step_x):
            sim = (q @ xt[j : j + step_x].to(dev).T) * inv_norm[j : j + step_x]
            sim_all = torch.cat([best_sim, sim], dim=1)
            idx_all = torch.cat([best_idx, torch.arange(j, j + sim.shape[1], device=dev).expand(len(q), -1)], dim=1)
            best_sim, pos = sim_all.topk(k, dim=1)
            best_idx = idx_all.gather(1, pos)
        weights = (best_sim / temperature).exp()
        votes[i : i + step_q].scatter_add_(1, labels[best_idx], weights)
    return votes.cpu().numpy()


def knn_predict(train_x: Array, train_y: np.ndarray, test_x: Array, *, num_classes: int, k: int = 20,
                temperature: float = 0.07, device: str = "cpu") -> np.ndarray:
    """Predicted labels (M,) of the weighted kNN classifier (see `knn_votes`)."""
    return knn_votes(train_x, train_y, test_x, num_classes=num_classes, k=k, temperature=temperature,
                     device=device).argmax(1)
