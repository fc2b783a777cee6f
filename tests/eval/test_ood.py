"""OOD scores: definitions against brute-force/independent computations, orientation (higher = in-distribution)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from sslbench.eval.linear import train_linear_probe
from sslbench.eval.ood import (
    REFERENCE_SIGN,
    STOCHASTIC_SCORES,
    Stochastic,
    energy,
    fit_detectors,
    fit_kmeans_mahalanobis,
    fit_mahalanobis,
    gaussian_kl_matrix,
    kl_knn,
    kmeans_mahalanobis_score,
    knn_score,
    max_logit,
    mean_sigma,
    msp,
    prior_log_density,
    select_sign,
    shared_classes,
)
from sslbench.models.stochastic import MixturePrior, StandardNormalPrior


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    """Run BLAS/LAPACK and torch single-threaded in this module: on the shared 2-core test machine, oversubscribed
    OpenBLAS threads made a 256x256 `eigh` 100x slower (measured: 2.8 s vs 0.03 s). Restored afterwards."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


def clusters(rng: np.random.Generator, n: int, d: int = 8, c: int = 3, spread: float = 4.0) -> tuple[np.ndarray, ...]:
    means = rng.normal(0, spread, (c, d))
    y = rng.integers(0, c, n)
    return means[y] + rng.normal(0, 1, (n, d)), y, means


def test_logit_scores() -> None:
    logits = np.array([[5.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-2.0, 3.0, 0.5]])
    np.testing.assert_allclose(msp(logits), softmax(logits, axis=1).max(1))
    np.testing.assert_allclose(max_logit(logits), [5.0, 1.0, 3.0])
    np.testing.assert_allclose(energy(logits), logsumexp(logits, axis=1))
    np.testing.assert_allclose(energy(logits, temperature=2.0), 2 * logsumexp(logits / 2, axis=1))
    # a confident (peaked) prediction scores higher than a uniform one for all three
    for score in (msp, max_logit, energy):
        assert score(logits)[0] > score(logits)[1]


def test_mahalanobis_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x, y, _ = clusters(rng, 200)
    model = fit_mahalanobis(x, y)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    centred = x - means[y]
    prec = np.linalg.inv(centred.T @ centred / len(x))
    q = rng.normal(0, 3, (20, 8))
    brute = np.array([-min((v - m) @ prec @ (v - m) for m in means) for v in q])
    np.testing.assert_allclose(model.score(q), brute, rtol=1e-6)
    # in-distribution = near a class mean = higher score
    assert model.score(means[:1])[0] > model.score(means[:1] + 20)[0]


def test_mahalanobis_non_contiguous_labels_and_dead_dims() -> None:
    rng = np.random.default_rng(1)
    x, y, _ = clusters(rng, 100)
    x[:, 3] = 0.0  # a dead feature: singular covariance, handled by the pseudo-inverse
    model = fit_mahalanobis(x, y * 5 + 2)
    assert model.means.shape == (3, 8) and np.isfinite(model.score(x)).all()


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    train, q = rng.normal(size=(50, 6)), rng.normal(size=(7, 6))
    u, v = train / np.linalg.norm(train, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
    d = np.linalg.norm(v[:, None] - u[None], axis=2)
    for k in (1, 5, 50):
        np.testing.assert_allclose(knn_score(train, q, k), -np.sort(d, axis=1)[:, k - 1], atol=1e-9)
    # scale-invariant (L2-normalised), and a training point is its own nearest neighbour
    np.testing.assert_allclose(knn_score(train, 3 * q, 5), knn_score(train, q, 5), atol=1e-9)
    assert knn_score(train, train[:3], 1) == pytest.approx(np.zeros(3), abs=1e-6)
    with pytest.raises(ValueError, match="k=51"):
        knn_score(train, q, 51)


def test_kmeans_mahalanobis() -> None:
    rng = np.random.default_rng(0)
    x, _, means = clusters(rng, 300, spread=6.0)
    model = fit_kmeans_mahalanobis(x, n_clusters=3, seed=0)
    assert model.means.shape == (3, 8)
    near, far = kmeans_mahalanobis_score(model, means), kmeans_mahalanobis_score(model, rng.normal(0, 6, (3, 8)))
    assert near.mean() > far.mean()
    # deterministic for a seed
    np.testing.assert_allclose(fit_kmeans_mahalanobis(x, 3, seed=0).means, model.means)
    with pytest.raises(ValueError, match="n_clusters"):
        fit_kmeans_mahalanobis(x[:2], 3, seed=0)


def test_mean_sigma_and_prior_density() -> None:
    logvar = np.log(np.array([[1.0, 4.0], [0.25, 0.25]]))
    np.testing.assert_allclose(mean_sigma(logvar), [1.5, 0.5])
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(5, 3)).astype(np.float32)
    std = StandardNormalPrior(3)
    np.testing.assert_allclose(prior_log_density(mu, std.log_prob), multivariate_normal(np.zeros(3)).logpdf(mu),
                               rtol=1e-5)
    torch.manual_seed(0)
    mog = MixturePrior(3, n_components=4)
    with torch.no_grad():
        w = torch.softmax(mog.logits, 0).numpy()
        pairs = zip(mog.means.numpy(), mog.logvars.numpy(), strict=True)
        comps = [multivariate_normal(m, np.diag(np.exp(s))) for m, s in pairs]
    ref = np.log(sum(wk * c.pdf(mu) for wk, c in zip(w, comps, strict=True)))
    np.testing.assert_allclose(prior_log_density(mu, mog.log_prob, chunk=2), ref, rtol=1e-5)


def test_gaussian_kl_matrix_against_torch_distributions() -> None:
    rng = np.random.default_rng(0)
    mq, mp = rng.uniform(-20, 20, (4, 5)), rng.uniform(-20, 20, (6, 5))
    lo, hi = 2 * math.log(0.01), 2 * math.log(5)  # the clamp range of models/stochastic.py
    lq, lp = rng.uniform(lo, hi, (4, 5)), rng.uniform(lo, hi, (6, 5))
    ours = gaussian_kl_matrix(*(a.astype(np.float32) for a in (mq, lq, mp, lp)))
    q = torch.distributions.Normal(torch.tensor(mq)[:, None], torch.tensor(np.exp(lq / 2))[:, None])
    p = torch.distributions.Normal(torch.tensor(mp)[None], torch.tensor(np.exp(lp / 2))[None])
    ref = torch.distributions.kl_divergence(q, p).sum(-1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5)  # float32 inputs, float64 arithmetic
    assert gaussian_kl_matrix(mq, lq, mq, lq).diagonal() == pytest.approx(np.zeros(4), abs=1e-6)


def test_kl_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    tm, tl = rng.normal(size=(30, 4)), rng.normal(0, 0.5, (30, 4))
    m, lv = rng.normal(size=(9, 4)), rng.normal(0, 0.5, (9, 4))
    full = gaussian_kl_matrix(m, lv, tm, tl)
    for k in (1, 3, 30):
        np.testing.assert_allclose(kl_knn(tm, tl, m, lv, k, chunk=4), np.sort(full, axis=1)[:, k - 1])
    with pytest.raises(ValueError, match="k=31"):
        kl_knn(tm, tl, m, lv, 31)


def test_select_sign() -> None:
    id_s = np.array([1.0, 2.0, 3.0])
    assert select_sign(id_s, [np.array([0.0, 0.5])]) == (1, 1.0)
    assert select_sign(id_s, [np.array([5.0, 6.0]), np.array([4.0])]) == (-1, 1.0)
    # mean over sets decides; a tie keeps the reference orientation
    assert select_sign(id_s, [np.array([0.0]), np.array([9.0])]) == (1, 0.5)
    assert set(REFERENCE_SIGN) == set(STOCHASTIC_SCORES)
    with pytest.raises(ValueError):
        select_sign(id_s, [])


def test_shared_classes() -> None:
    assert shared_classes(["circle", "Pickup_Truck", "dog"], ["pickup truck", "cat", "DOG"]) == ["Pickup_Truck", "dog"]
    assert shared_classes(["0", "1"], ["circle"]) == []


def test_detectors_score_every_name() -> None:
    rng = np.random.default_rng(0)
    x, y, _ = clusters(rng, 120, d=6)
    probe = train_linear_probe(x, y, x[:30], y[:30], num_classes=3, epochs=3, batch_size=64)
    det = fit_detectors(probe, x, y, knn_k=5, kmeans_clusters=3, seed=0)
    out = det.score(x[:7])
    assert set(out) == set(det.names) and all(v.shape == (7,) for v in out.values())
    q = Stochastic(x, rng.normal(0, 0.3, x.shape))
    sdet = fit_detectors(probe, x, y, knn_k=5, kmeans_clusters=3, seed=0, stochastic_train=q,
                         prior_log_prob=StandardNormalPrior(6).log_prob)
    out = sdet.score(x[:7], Stochastic(q.mu[:7], q.logvar[:7]))
    assert set(STOCHASTIC_SCORES) <= set(out)
    with pytest.raises(ValueError, match="Gaussians"):
        sdet.score(x[:7])


def test_bayes_h_logits_are_averaged_over_draws() -> None:
    from sslbench.eval.linear import sampled_logits

    rng = np.random.default_rng(0)
    x, y, _ = clusters(rng, 90, d=6)
    probe = train_linear_probe(x, y, x[:30], y[:30], num_classes=3, epochs=2, batch_size=64)
    q = Stochastic(x, np.full(x.shape, 1.0))
    det = fit_detectors(probe, x, y, knn_k=3, kmeans_clusters=2, seed=4, stochastic_train=q,
                        prior_log_prob=StandardNormalPrior(6).log_prob, logit_samples=5)
    out = det.score(x[:9], Stochastic(q.mu[:9], q.logvar[:9]))
    expected = msp(sampled_logits(probe, q.mu[:9], q.logvar[:9], n_samples=5, seed=4))
    np.testing.assert_allclose(out["msp"], expected)
    assert not np.allclose(out["msp"], msp(probe.logits(x[:9])))
