"""OOD detection scores over precomputed embeddings, deterministic or stochastic (mu and logvar of q).

Every score maps arrays to one number per sample with **higher = more in-distribution** (the orientation that
`sslbench.eval.ood_metrics` expects). Scores fitted on the main training split (Mahalanobis, kNN, k-means, KL-kNN)
never see a validation or test sample.

| name | definition (x = embedding) | paper |
|---|---|---|
| `msp` | max_c softmax(f(x))_c | Hendrycks & Gimpel 2017 |
| `max_logit` | max_c f(x)_c | Hendrycks et al. 2022 (MaxLogit) |
| `energy` | T log Σ_c exp(f(x)_c / T), T = 1 (= −energy) | Liu et al. 2020 |
| `mahalanobis` | −min_c (x − μ_c)ᵀ Σ⁻¹ (x − μ_c), class means, one tied covariance | Lee et al. 2018 |
| `knn` | −‖u − u_(k)‖, u = x/‖x‖, u_(k) its k-th nearest normalised train feature | Sun et al. 2022 |
| `kmeans_mahalanobis` | `mahalanobis` on x/‖x‖ with k-means centroids as the means | Sehwag et al. 2021 (SSD) |
| `mean_sigma` | mean_d σ_d(x) of q(x) = N(μ, diag σ²) | Janiak et al. (stochastic SSL) |
| `prior_log_density` | log p(μ(x)) under the model's learned prior | Janiak et al. |
| `kl_knn` | k-th smallest KL(q(x) ‖ q(x_j)) over train samples x_j | Janiak et al. |

f is the linear probe of `sslbench.eval.linear` (the probe area's probe); for Bayes-H its logits are averaged
over draws of q(h) (`sampled_logits`, as the probe area and the reference's OpenOOD wrapper do). SSD uses one
covariance per cluster; we tie it across clusters like `mahalanobis`, because per-cluster covariances are singular
on the small clusters of the CPU study.

The three stochastic scores are returned in the stochastic-SSL reference's orientation (`REFERENCE_SIGN`: larger
σ, larger prior density and larger KL = more in-distribution). Their sign is disputed, so the caller picks +1 or −1
with `select_sign` on validation OOD sets, never on the test sets.

Memory: nothing here copies a whole train table (ImageNet's is 1.28M x 2048 float32 = 9.8 GiB). kNN and KL-kNN run
over blocks of train rows with a running top-k; kNN selects candidates in float32 and computes its score in float64
from them, with a proven error bound deciding when the float32 selection may have missed a neighbour (those rows
are redone in float64); KL-kNN stays float64 (its expanded form cancels in float32). The Mahalanobis fits
accumulate the class means and the covariance over blocks of rows when the table is large (`WHOLE_BYTES`); below
that they compute as before, on the whole table. Both scores run on `device` (`auto_device()`: CUDA when present).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sslbench.eval.linear import LinearProbe, sampled_logits
from sslbench.eval.ood_metrics import auroc

DETERMINISTIC_SCORES = ("msp", "max_logit", "energy", "mahalanobis", "knn", "kmeans_mahalanobis")
STOCHASTIC_SCORES = ("mean_sigma", "prior_log_density", "kl_knn")
SCORES = DETERMINISTIC_SCORES + STOCHASTIC_SCORES
# orientation in which the stochastic scores are computed (the reference's: larger = more in-distribution)
REFERENCE_SIGN = {"mean_sigma": 1, "prior_log_density": 1, "kl_knn": 1}
DISPUTED_SCORES = STOCHASTIC_SCORES
# a float64 copy of a table above this size is never made: the fits accumulate over blocks of rows instead (the small
# study's tables stay below it and are computed exactly as on the whole table)
WHOLE_BYTES = 1 << 30
BLOCK_FLOATS = 1 << 22  # values of one block of train rows (kNN, KL-kNN, fits): 32 MiB in float64
F32_EPS = 2.0**-24  # unit roundoff of float32


GPU_SCALE = 8  # on a GPU, blocks of train rows and query chunks are this many times larger (fewer, larger kernels)


def auto_device() -> str:
    """`cuda` when torch sees a CUDA device, else `cpu`: where the kNN and KL-kNN scores run."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _block_rows(width: int, block_floats: int = BLOCK_FLOATS, minimum: int = 1) -> int:
    return max(minimum, block_floats // max(1, width))


def _sizes(device: torch.device, chunk: int, width: int, minimum: int) -> tuple[int, int]:
    """(query rows per product, train rows per block) on `device`."""
    scale = GPU_SCALE if device.type == "cuda" else 1
    return chunk * scale, _block_rows(width, BLOCK_FLOATS * scale, minimum)


# ------------------------------------------------------------------------------------------- logit-based scores


def msp(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax probability (Hendrycks & Gimpel 2017). (N, C) -> (N,); higher = in-distribution."""
    t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    return torch.softmax(t, dim=1).amax(1).numpy()


def max_logit(logits: np.ndarray) -> np.ndarray:
    """Maximum logit (Hendrycks et al. 2022). (N, C) -> (N,); higher = in-distribution."""
    return np.asarray(logits, dtype=np.float64).max(1)


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Negative free energy T·logsumexp(f/T) (Liu et al. 2020, T = 1 there). (N, C) -> (N,).

    The paper's energy E(x) = −T log Σ_c exp(f_c(x)/T) is lower in-distribution; we return −E so that higher =
    in-distribution.
    """
    t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    return (temperature * torch.logsumexp(t / temperature, dim=1)).numpy()


# ------------------------------------------------------------------------------------------- feature-space scores


@dataclass(frozen=True)
class Mahalanobis:
    """Class (or cluster) means with one shared precision matrix.

    `score(x)` = −min_c (x − μ_c)ᵀ Σ⁻¹ (x − μ_c): higher = in-distribution (Lee et al. 2018, without input
    pre-processing or feature ensembles).
    """

    means: np.ndarray  # (C, D)
    precision: np.ndarray  # (D, D)

    def score(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        xp = x @ self.precision
        quad = (xp * x).sum(1)[:, None] - 2 * xp @ self.means.T + ((self.means @ self.precision) * self.means).sum(1)
        return -np.maximum(quad, 0.0).min(1)


def fit_mahalanobis(x: np.ndarray, labels: np.ndarray, means: np.ndarray | None = None) -> Mahalanobis:
    """Fit class means (or take the given `means`, e.g. k-means centroids) and the tied covariance.

    Σ = 1/N Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ, inverted as scikit-learn's `EmpiricalCovariance` does (a
    pseudo-inverse, `scipy.linalg.pinvh`, so dead feature dimensions do not break it). A table whose float64 copy
    exceeds `WHOLE_BYTES` is read in blocks of rows (means and Σ accumulated in float64, no copy of the table).

    Args:
        x: (N, D) train features; labels: (N,) int class of each row, in [0, C).
        means: optional (C, D) centres; default the per-class means of `x`.
    """
    x = np.asarray(x)
    labels = np.asarray(labels, dtype=np.int64)
    if x.size * 8 > WHOLE_BYTES:
        return _fit_mahalanobis_blocked(x, labels, means)
    from sklearn.covariance import EmpiricalCovariance

    x = np.asarray(x, dtype=np.float64)
    if means is None:
        classes = np.unique(labels)
        means = np.zeros((int(labels.max()) + 1, x.shape[1]))
        for c in classes:
            means[c] = x[labels == c].mean(0)
        means = means[classes]
        labels = np.searchsorted(classes, labels)
    means = np.asarray(means, dtype=np.float64)
    centred = x - means[labels]
    precision = EmpiricalCovariance(assume_centered=True).fit(centred).precision_
    return Mahalanobis(means=means, precision=precision)


def _fit_mahalanobis_blocked(x: np.ndarray, labels: np.ndarray, means: np.ndarray | None,
                             block_rows: int = 0) -> Mahalanobis:
    """`fit_mahalanobis` over blocks of rows: the same estimate up to the order of the float64 sums."""
    from scipy.linalg import pinvh

    step = block_rows or _block_rows(x.shape[1])
    if means is None:
        classes, counts = np.unique(labels, return_counts=True)
        labels = np.searchsorted(classes, labels)
        sums = torch.zeros(len(classes), x.shape[1], dtype=torch.float64)
        for i in range(0, len(x), step):
            sums.index_add_(0, torch.from_numpy(labels[i : i + step]),
                            torch.from_numpy(np.asarray(x[i : i + step], dtype=np.float64)))
        means = sums.numpy() / counts[:, None]
    means = np.asarray(means, dtype=np.float64)
    scatter = np.zeros((x.shape[1], x.shape[1]))
    for i in range(0, len(x), step):
        centred = np.asarray(x[i : i + step], dtype=np.float64) - means[labels[i : i + step]]
        scatter += centred.T @ centred
    precision = pinvh(scatter / len(x), check_finite=False)
    return Mahalanobis(means=means, precision=precision)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """x/‖x‖ per row in float64 (norms clamped at 1e-12), computed over blocks of rows: one float64 copy of `x` and
    no temporary of its size."""
    x = np.asarray(x)
    if x.ndim != 2:
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty(x.shape, np.float64)
    step = _block_rows(x.shape[1])
    for i in range(0, len(x), step):
        block = np.asarray(x[i : i + step], dtype=np.float64)
        out[i : i + step] = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    return out


def _row_norms(x: np.ndarray) -> np.ndarray:
    """The float64 norm of each row, clamped at 1e-12 as in `l2_normalise` (over blocks of rows)."""
    out = np.empty(len(x))
    step = _block_rows(x.shape[1])
    for i in range(0, len(x), step):
        out[i : i + step] = np.linalg.norm(np.asarray(x[i : i + step], dtype=np.float64), axis=1)
    return np.maximum(out, 1e-12)


@contextlib.contextmanager
def _full_float32_matmul() -> Iterator[None]:
    """Float32 matrix products without TF32 / bfloat16 shortcuts, which `knn_score`'s error bound assumes."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _merge_topk(best: torch.Tensor, best_idx: torch.Tensor, values: torch.Tensor, first: int, k: int,
                largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The running top-k of each row after a new block of `values` (columns `first`, `first` + 1, ...): the block's
    own top-k first (no copy of the block), then merged with the k kept so far."""
    top, pos = values.topk(min(k, values.shape[1]), dim=1, largest=largest)
    merged, at = torch.cat([best, top], dim=1).topk(k, dim=1, largest=largest)
    return merged, torch.cat([best_idx, pos + first], dim=1).gather(1, at)


def _knn_exact(train_x: np.ndarray, norms: np.ndarray, x: np.ndarray, k: int, chunk: int, device: str
               ) -> np.ndarray:
    """The k-th largest float64 cosine of each row of `x` to the train rows, over blocks of train rows (the
    arithmetic of the whole-table product: rows divided by their clamped norm, one matrix product)."""
    dev = torch.device(device)
    chunk, step = _sizes(dev, chunk, train_x.shape[1], k)
    query = torch.from_numpy(l2_normalise(x)).to(dev)
    best = torch.full((len(x), k), -float("inf"), dtype=torch.float64, device=dev)
    best_idx = torch.zeros((len(x), k), dtype=torch.long, device=dev)
    for j in range(0, len(train_x), step):
        block = np.asarray(train_x[j : j + step], dtype=np.float64) / norms[j : j + step, None]
        bank = torch.from_numpy(block).to(dev)
        for i in range(0, len(x), chunk):
            rows = slice(i, i + chunk)
            cos = query[rows] @ bank.T
            best[rows], best_idx[rows] = _merge_topk(best[rows], best_idx[rows], cos, j, k, largest=True)
    return best[:, k - 1].cpu().numpy()


def _distance_score(kth: np.ndarray) -> np.ndarray:
    """−‖u − v‖ = −sqrt(2 − 2 cos) in float64, with the torch arithmetic of the whole-table computation."""
    return np.asarray((-(2 - 2 * torch.from_numpy(kth)).clamp_min(0).sqrt()).numpy())


def knn_score(train_x: np.ndarray, x: np.ndarray, k: int, chunk: int = 1024, *, device: str = "cpu",
              margin: int | None = None) -> np.ndarray:
    """Deep nearest neighbours (Sun et al. 2022): −(L2 distance to the k-th nearest train feature), both sides
    L2-normalised. (N_train, D), (N, D) -> (N,); higher = in-distribution.

    On unit vectors ‖u − v‖² = 2 − 2 uᵀv, so the k-th neighbour is the k-th largest cosine. The train table is
    never copied (an ImageNet-sized one is 9.8 GiB; a float64 normalised copy was 2x that, its temporaries 4x). A
    table whose float64 copy would fit in `WHOLE_BYTES` is scored with float64 products over blocks of train rows
    (one block, the whole-table computation, on the small study); a larger one in three steps:

    1. candidates: over blocks of train rows, the float32 cosines q/‖q‖ · x/‖x‖ of every query and a running
       top-(k + margin) (`margin` default k) on `device`;
    2. the score: the float64 cosines of each query to its candidates (rows divided by their float64 norms, as on
       the whole table) and their k-th largest c;
    3. the check: a float32 cosine of unit vectors is within e = 1.01 (D + 8) 2⁻²⁴ of the float64 one (a
       dot product's rounding bound γ_D plus the roundings of the inputs and of the scaling). A neighbour that the
       float32 top-(k + margin) missed has a float32 cosine ≤ t, the smallest one it kept, so if c − e > t none
       was missed and c is exact; the rows where c − e ≤ t (near-ties across the cut, e.g. a collapsed
       representation) are recomputed in float64 over the whole table.

    The result is therefore the float64 score of the definition (it equals the whole-table computation up to the
    order of the float64 sums), whatever the device. `chunk`: query rows per matrix product.

    Raises:
        ValueError: k < 1 or k > N_train.
    """
    if not 1 <= k <= len(train_x):
        raise ValueError(f"kNN needs 1 <= k <= {len(train_x)} train samples, got k={k}")
    train_x, x = np.asarray(train_x), np.asarray(x)
    if len(x) == 0:
        return np.zeros(0)
    norms = _row_norms(train_x)
    n, d = train_x.shape
    kc = min(n, k + (k if margin is None else max(0, margin)))
    if kc == n or n * d * 8 <= WHOLE_BYTES:  # a small table: the float64 products alone (as on the whole table)
        kth = _knn_exact(train_x, norms, x, k, chunk, device)
        return _distance_score(kth)

    # 1. float32 candidates
    dev = torch.device(device)
    query32 = torch.from_numpy(l2_normalise(x).astype(np.float32)).to(dev)
    inv32 = torch.from_numpy((1.0 / norms).astype(np.float32)).to(dev)
    best = torch.full((len(x), kc), -float("inf"), device=dev)
    best_idx = torch.zeros((len(x), kc), dtype=torch.long, device=dev)
    chunk32, step = _sizes(dev, chunk, d // 4, kc)  # float32 blocks of 4 x BLOCK_FLOATS values (64 MiB)
    with _full_float32_matmul():
        for j in range(0, n, step):
            bank = torch.from_numpy(np.ascontiguousarray(train_x[j : j + step], dtype=np.float32)).to(dev)
            bank = bank * inv32[j : j + step, None]
            for i in range(0, len(x), chunk32):
                rows = slice(i, i + chunk32)
                best[rows], best_idx[rows] = _merge_topk(best[rows], best_idx[rows], query32[rows] @ bank.T, j, kc,
                                                         largest=True)
    floor = best[:, kc - 1].cpu().numpy().astype(np.float64)
    candidates = best_idx.cpu().numpy()
    del best, best_idx

    # 2. float64 cosines to the candidates, in row groups of ~BLOCK_FLOATS values
    kth = np.empty(len(x))
    group = max(1, BLOCK_FLOATS // (kc * d))
    for i in range(0, len(x), group):
        q = l2_normalise(x[i : i + group])
        idx = candidates[i : i + group].ravel()
        cand = np.asarray(train_x[idx], dtype=np.float64) / norms[idx, None]
        cos = np.matmul(cand.reshape(len(q), kc, d), q[:, :, None])[:, :, 0]
        kth[i : i + group] = np.partition(cos, kc - k, axis=1)[:, kc - k]

    # 3. rows whose float32 selection may have missed a neighbour: float64 over the whole table
    unsure = kth - 1.01 * (d + 8) * F32_EPS <= floor
    if unsure.any():
        kth[unsure] = _knn_exact(train_x, norms, x[unsure], k, chunk, device)
    return _distance_score(kth)


def fit_kmeans_mahalanobis(train_x: np.ndarray, n_clusters: int, seed: int) -> Mahalanobis:
    """SSD-style unsupervised Mahalanobis (Sehwag et al. 2021): k-means (scikit-learn, k-means++) on L2-normalised
    train features, centroids as means, tied covariance. Score inputs must be normalised the same way:
    use `kmeans_mahalanobis_score`."""
    from sklearn.cluster import KMeans

    if not 1 <= n_clusters <= len(train_x):
        raise ValueError(f"k-means needs 1 <= n_clusters <= {len(train_x)} train samples, got {n_clusters}")
    u = l2_normalise(train_x)
    if u.nbytes <= WHOLE_BYTES:
        km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(u)
    else:  # a large table is centred in place by scikit-learn (and restored) instead of copied once more
        with _blocked_kmeans_tolerance():
            km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed, copy_x=False).fit(u)
    return fit_mahalanobis(u, km.labels_, means=km.cluster_centers_)


@contextlib.contextmanager
def _blocked_kmeans_tolerance() -> Iterator[None]:
    """scikit-learn's `KMeans.fit` scales `tol` by the mean per-column variance of X, which it computes with
    `np.var(X, axis=0)`: a temporary as large as X (19.5 GiB for ImageNet's float64 normalised table). Within this
    block that variance is computed over blocks of rows instead (the same value up to the order of the float64 sums).
    Nothing is changed if scikit-learn no longer has the private helper."""
    from sklearn.cluster import _kmeans

    original = getattr(_kmeans, "_tolerance", None)
    if original is None:  # pragma: no cover - another scikit-learn layout
        yield
        return

    def tolerance(x: object, tol: float) -> float:
        if tol == 0 or not isinstance(x, np.ndarray) or x.ndim != 2:
            return float(original(x, tol))
        mean = x.mean(axis=0)
        squares = np.zeros(x.shape[1])
        step = _block_rows(x.shape[1])
        for i in range(0, len(x), step):
            squares += ((x[i : i + step] - mean) ** 2).sum(0)
        return float(np.mean(squares / len(x)) * tol)

    _kmeans._tolerance = tolerance
    try:
        yield
    finally:
        _kmeans._tolerance = original


def kmeans_mahalanobis_score(model: Mahalanobis, x: np.ndarray) -> np.ndarray:
    """Score of `fit_kmeans_mahalanobis`'s model: −min over centroids of the Mahalanobis distance of x/‖x‖."""
    return model.score(l2_normalise(x))


# ------------------------------------------------------------------------------------------- stochastic scores


def mean_sigma(logvar: np.ndarray) -> np.ndarray:
    """Mean standard deviation of q(x): mean_d exp(logvar_d / 2). (N, S) -> (N,).

    Reference orientation (sign +1): larger σ = more in-distribution; see `select_sign`.
    """
    return np.exp(0.5 * np.asarray(logvar, dtype=np.float64)).mean(1)


def prior_log_density(mu: np.ndarray, log_prob: Callable[[torch.Tensor], torch.Tensor],
                      chunk: int = 4096) -> np.ndarray:
    """log p(μ(x)) under the model's prior (`Encoder.prior.log_prob`, summed over dims). (N, S) -> (N,).

    Reference orientation (sign +1): higher density = more in-distribution.
    """
    mu = np.asarray(mu, dtype=np.float32)
    out = []
    with torch.no_grad():
        for i in range(0, len(mu), chunk):
            out.append(log_prob(torch.tensor(mu[i : i + chunk])).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def gaussian_kl_matrix(mu_q: np.ndarray, logvar_q: np.ndarray, mu_p: np.ndarray, logvar_p: np.ndarray) -> np.ndarray:
    """KL(q_i ‖ p_j) between diagonal Gaussians for every pair: (N, S) ×2, (M, S) ×2 -> (N, M).

    KL = ½ Σ_d [ log σ²_p − log σ²_q + (σ²_q + (μ_q − μ_p)²) / σ²_p − 1 ], expanded into matrix products
    (float64, since μ up to 20 and 1/σ² up to 10⁴ make the cross term cancel badly in float32).
    """
    mq, lq = (torch.tensor(np.asarray(a), dtype=torch.float64) for a in (mu_q, logvar_q))
    mp, lp = (torch.tensor(np.asarray(a), dtype=torch.float64) for a in (mu_p, logvar_p))
    inv_p = torch.exp(-lp)  # (M, S)
    quad = (torch.exp(lq) + mq.pow(2)) @ inv_p.T - 2 * mq @ (mp * inv_p).T + (mp.pow(2) * inv_p).sum(1)
    kl = 0.5 * (quad + lp.sum(1) - lq.sum(1)[:, None] - mq.shape[1])
    return kl.clamp_min(0.0).numpy()


def kl_knn(train_mu: np.ndarray, train_logvar: np.ndarray, mu: np.ndarray, logvar: np.ndarray, k: int,
           chunk: int = 1024, *, device: str = "cpu") -> np.ndarray:
    """k-th smallest KL(q(x) ‖ q(x_j)) over the train Gaussians q(x_j). (N, S) -> (N,).

    Reference orientation (sign +1): larger KL = more in-distribution (as the stochastic-SSL reference treats it;
    the distance reading would take sign −1); see `select_sign`.

    The KL matrix of `gaussian_kl_matrix`, in float64 (its expansion cancels in float32: μ²/σ² terms up to ~10⁶
    per dimension; on the study's Bayes models float32 moved the k-th KL by up to 4e-5 relative), over blocks of
    train rows (`BLOCK_FLOATS` values) with a running top-k on
    `device`: the train side (1/σ², μ/σ², Σ μ²/σ², Σ log σ²) is computed once per block, and the memory is
    bounded by the block and `chunk` query rows, not by the train table.

    Raises:
        ValueError: k < 1 or k > N_train.
    """
    if not 1 <= k <= len(train_mu):
        raise ValueError(f"KL-kNN needs 1 <= k <= {len(train_mu)} train samples, got k={k}")
    if len(mu) == 0:
        return np.zeros(0)
    dev = torch.device(device)
    width = np.shape(train_mu)[1]
    best = torch.full((len(mu), k), float("inf"), dtype=torch.float64, device=dev)
    best_idx = torch.zeros((len(mu), k), dtype=torch.long, device=dev)
    chunk, step = _sizes(dev, chunk, width, k)
    for j in range(0, len(train_mu), step):
        mp, lp = (torch.tensor(np.asarray(a[j : j + step]), dtype=torch.float64, device=dev)
                  for a in (train_mu, train_logvar))
        inv_p = torch.exp(-lp)
        scaled, sq, lp_sum = mp * inv_p, (mp.pow(2) * inv_p).sum(1), lp.sum(1)
        for i in range(0, len(mu), chunk):
            rows = slice(i, i + chunk)
            mq, lq = (torch.tensor(np.asarray(a[rows]), dtype=torch.float64, device=dev) for a in (mu, logvar))
            quad = (torch.exp(lq) + mq.pow(2)) @ inv_p.T - 2 * mq @ scaled.T + sq
            kl = (0.5 * (quad + lp_sum - lq.sum(1)[:, None] - width)).clamp_min(0.0)
            best[rows], best_idx[rows] = _merge_topk(best[rows], best_idx[rows], kl, j, k, largest=False)
    return best[:, k - 1].cpu().numpy()


# ------------------------------------------------------------------------------------------- sign selection


def select_sign(id_scores: np.ndarray, ood_scores: Sequence[np.ndarray]) -> tuple[int, float]:
    """Choose the sign of a disputed score on **validation** data: +1 keeps it, −1 flips it.

    The mean AUROC over the validation OOD sets (each against the same ID validation split) decides: +1 if it
    is >= 0.5 (ties keep the reference orientation), else −1, since AUROC(−s) = 1 − AUROC(s) exactly (ties
    included).

    Returns:
        `(sign, validation AUROC under that sign)`.
    """
    if not ood_scores:
        raise ValueError("select_sign needs at least one validation OOD set")
    mean = float(np.mean([auroc(id_scores, s) for s in ood_scores]))
    return (1, mean) if mean >= 0.5 else (-1, 1.0 - mean)


# ------------------------------------------------------------------------------------------- all detectors


@dataclass(frozen=True)
class Stochastic:
    """The stochastic part of an embedding table: q(x) = N(mu, diag(exp(logvar))), each (N, S)."""

    mu: np.ndarray
    logvar: np.ndarray


@dataclass
class Detectors:
    """Every score, fitted once on the main training split; `score(x, q)` scores any split.

    Build with `fit_detectors`. `stochastic_train`/`prior_log_prob` are None for a deterministic model, whose
    `score` then returns only `DETERMINISTIC_SCORES`. `logit_samples` > 0 (Bayes-H only, where q is over the
    probe's input h): the probe's logits are averaged over that many draws of q (seeded by `seed`).
    """

    probe: LinearProbe
    train_x: np.ndarray
    mahalanobis: Mahalanobis
    kmeans: Mahalanobis
    knn_k: int
    stochastic_train: Stochastic | None = None
    prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None
    logit_samples: int = 0
    seed: int = 0
    device: str = "cpu"

    @property
    def names(self) -> tuple[str, ...]:
        return SCORES if self.stochastic_train is not None else DETERMINISTIC_SCORES

    def score(self, x: np.ndarray, q: Stochastic | None = None) -> dict[str, np.ndarray]:
        """All scores of (N, D) embeddings `x` (and their Gaussians `q` for a stochastic model): name -> (N,)."""
        if self.logit_samples > 0:
            if q is None:
                raise ValueError("sampled logits need the Gaussians q of the scored split")
            logits = sampled_logits(self.probe, q.mu, q.logvar, n_samples=self.logit_samples, seed=self.seed)
        else:
            logits = self.probe.logits(x)
        out = {
            "msp": msp(logits),
            "max_logit": max_logit(logits),
            "energy": energy(logits),
            "mahalanobis": self.mahalanobis.score(x),
            "knn": knn_score(self.train_x, x, self.knn_k, device=self.device),
            "kmeans_mahalanobis": kmeans_mahalanobis_score(self.kmeans, x),
        }
        if self.stochastic_train is not None:
            if q is None or self.prior_log_prob is None:
                raise ValueError("a stochastic model's detectors need the Gaussians q of the scored split and a prior")
            out["mean_sigma"] = mean_sigma(q.logvar)
            out["prior_log_density"] = prior_log_density(q.mu, self.prior_log_prob)
            out["kl_knn"] = kl_knn(self.stochastic_train.mu, self.stochastic_train.logvar, q.mu, q.logvar, self.knn_k,
                                   device=self.device)
        return out


def fit_detectors(
    probe: LinearProbe,
    train_x: np.ndarray,
    train_y: np.ndarray,
    *,
    knn_k: int,
    kmeans_clusters: int,
    seed: int,
    stochastic_train: Stochastic | None = None,
    prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
    logit_samples: int = 0,
    device: str = "cpu",
) -> Detectors:
    """Fit every detector on the training split (features `train_x` (N, D), labels `train_y` (N,)).

    `logit_samples`: see `Detectors` (Bayes-H: the probe stage's `n_samples`; 0 = logits of `x` itself). `device`:
    where the kNN and KL-kNN scores compute (their results do not depend on it beyond float64 rounding).
    """
    if (stochastic_train is None) != (prior_log_prob is None):
        raise ValueError("stochastic_train and prior_log_prob go together")
    return Detectors(
        probe=probe,
        train_x=np.asarray(train_x),
        mahalanobis=fit_mahalanobis(train_x, train_y),
        kmeans=fit_kmeans_mahalanobis(train_x, kmeans_clusters, seed),
        knn_k=knn_k,
        stochastic_train=stochastic_train,
        prior_log_prob=prior_log_prob,
        logit_samples=logit_samples,
        seed=seed,
        device=device,
    )


def apply_signs(scores: Mapping[str, np.ndarray], signs: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Multiply each disputed score by its chosen sign (others unchanged)."""
    return {name: s * signs.get(name, 1) for name, s in scores.items()}


def shared_classes(id_classes: Sequence[str], ood_classes: Sequence[str]) -> list[str]:
    """Class names present in both sets, compared case-insensitively with `_`/`-` read as spaces (an OOD set that
    shares classes with the in-distribution set is not out-of-distribution for those samples)."""

    def norm(name: str) -> str:
        return " ".join(str(name).lower().replace("_", " ").replace("-", " ").split())

    ood = {norm(c) for c in ood_classes}
    return [c for c in id_classes if norm(c) in ood]
