"""OOD scores: definitions against brute-force/independent computations, orientation (higher = in-distribution)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from sslbench.eval import ood
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
    l2_normalise,
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


# ------------------------------------------------------------------------------- memory: blocked computations


def whole_table_knn(train: np.ndarray, q: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """The whole-table kNN score (float64 normalised copies, one product per chunk of queries): the computation the
    blocked one must reproduce."""
    def unit(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    bank, query = torch.from_numpy(unit(train)), torch.from_numpy(unit(q))
    out = [torch.topk(query[i : i + chunk] @ bank.T, k, dim=1).values[:, k - 1] for i in range(0, len(q), chunk)]
    return (-(2 - 2 * torch.cat(out)).clamp_min(0).sqrt()).numpy()


def test_l2_normalise_in_blocks_is_bitwise_the_whole_table(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    whole = l2_normalise(x)
    monkeypatch.setattr(ood, "BLOCK_FLOATS", 16 * 7)
    np.testing.assert_array_equal(l2_normalise(x), whole)
    np.testing.assert_array_equal(whole, x / np.maximum(np.linalg.norm(x.astype(np.float64), axis=1,
                                                                       keepdims=True), 1e-12))


@pytest.mark.parametrize("block_floats", [1 << 22, 16 * 60])  # one block of train rows; many (running top-k)
def test_knn_small_table_is_bitwise_the_whole_table_computation(monkeypatch: pytest.MonkeyPatch,
                                                                block_floats: int) -> None:
    rng = np.random.default_rng(1)
    train, q = rng.normal(size=(400, 16)).astype(np.float32), rng.normal(size=(2100, 16)).astype(np.float32)
    monkeypatch.setattr(ood, "BLOCK_FLOATS", block_floats)
    for k in (1, 7, 50):
        np.testing.assert_array_equal(knn_score(train, q, k), whole_table_knn(train, q, k))


def test_knn_float32_candidates_give_the_float64_score(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above WHOLE_BYTES, candidates come from float32 products; the score is still the float64 one, and rows whose
    selection may have missed a neighbour (near-ties across the cut) are redone in float64."""
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 1, (5, 32))
    train = (centres[rng.integers(0, 5, 3000)] + rng.normal(0, 1, (3000, 32))).astype(np.float32)
    q = (centres[rng.integers(0, 5, 200)] + rng.normal(0, 1, (200, 32))).astype(np.float32)
    expected = {k: whole_table_knn(train, q, k) for k in (1, 10, 50)}
    monkeypatch.setattr(ood, "WHOLE_BYTES", 0)
    monkeypatch.setattr(ood, "BLOCK_FLOATS", 32 * 128)  # several blocks of train rows
    redone: list[int] = []
    exact = ood._knn_exact

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        redone.append(len(args[2]))
        return exact(*args, **kwargs)

    monkeypatch.setattr(ood, "_knn_exact", counting)
    for k, want in expected.items():
        np.testing.assert_allclose(knn_score(train, q, k, chunk=64), want, rtol=0, atol=1e-12)
    assert not redone  # well-separated neighbours: the float32 selection was provably complete
    # a collapsed table: every cosine within float32 rounding of the others, so every row is redone in float64
    flat = (np.ones((500, 32)) + rng.normal(0, 1e-7, (500, 32))).astype(np.float32)
    np.testing.assert_allclose(knn_score(flat, flat[:20], 5, margin=2), whole_table_knn(flat, flat[:20], 5),
                               rtol=0, atol=1e-12)
    assert sum(redone) == 20
    # duplicated rows: ties are exact in both precisions
    dup = np.repeat(train[:40], 10, axis=0)
    np.testing.assert_allclose(knn_score(dup, q, 15), whole_table_knn(dup, q, 15), rtol=0, atol=1e-12)


def test_float32_products_are_full_precision_and_the_setting_is_restored() -> None:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with ood._full_float32_matmul():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_kl_knn_over_blocks_equals_the_whole_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    tm, tl = rng.normal(0, 5, (500, 6)).astype(np.float32), rng.uniform(-8, 1, (500, 6)).astype(np.float32)
    m, lv = rng.normal(0, 5, (70, 6)).astype(np.float32), rng.uniform(-8, 1, (70, 6)).astype(np.float32)
    full = np.sort(gaussian_kl_matrix(m, lv, tm, tl), axis=1)
    monkeypatch.setattr(ood, "BLOCK_FLOATS", 6 * 37)
    for k in (1, 20, 500):
        np.testing.assert_allclose(kl_knn(tm, tl, m, lv, k, chunk=16), full[:, k - 1], rtol=1e-12)
    assert kl_knn(tm, tl, m[:0], lv[:0], 3).shape == (0,)


def test_mahalanobis_fit_over_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    x, y, _ = clusters(rng, 400)
    x[:, 2] = 0.0  # a dead dimension: the pseudo-inverse path
    whole = fit_mahalanobis(x, y * 3 + 1)
    kmeans_whole = fit_kmeans_mahalanobis(x, 3, seed=0)
    monkeypatch.setattr(ood, "WHOLE_BYTES", 0)
    monkeypatch.setattr(ood, "BLOCK_FLOATS", 8 * 33)
    blocked = fit_mahalanobis(x, y * 3 + 1)
    np.testing.assert_allclose(blocked.means, whole.means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocked.precision, whole.precision, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(blocked.score(x[:50]), whole.score(x[:50]), rtol=1e-9)
    given = fit_mahalanobis(x, np.zeros(len(x), np.int64), means=x.mean(0, keepdims=True))
    np.testing.assert_allclose(given.precision, np.linalg.pinv(np.cov(x.T, bias=True)), rtol=1e-6, atol=1e-8)
    km = fit_kmeans_mahalanobis(x, 3, seed=0)  # k-means on a table centred in place (copy_x=False)
    np.testing.assert_allclose(km.means, kmeans_whole.means, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_cuda_equal_cpu(monkeypatch: pytest.MonkeyPatch) -> None:  # pragma: no cover - GPU only
    rng = np.random.default_rng(5)
    train, q = rng.normal(size=(3000, 64)).astype(np.float32), rng.normal(size=(300, 64)).astype(np.float32)
    lv, qlv = rng.uniform(-4, 1, train.shape).astype(np.float32), rng.uniform(-4, 1, q.shape).astype(np.float32)
    assert ood.auto_device() == "cuda"
    np.testing.assert_allclose(knn_score(train, q, 20, device="cuda"), knn_score(train, q, 20), atol=1e-12)
    np.testing.assert_allclose(kl_knn(train, lv, q, qlv, 20, device="cuda"), kl_knn(train, lv, q, qlv, 20),
                               rtol=1e-10)
    monkeypatch.setattr(ood, "WHOLE_BYTES", 0)
    np.testing.assert_allclose(knn_score(train, q, 20, device="cuda"), whole_table_knn(train, q, 20), atol=1e-12)
