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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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

    Σ = 1/N Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ, inverted with scikit-learn's `EmpiricalCovariance` (a
    pseudo-inverse, so dead feature dimensions do not break it).

    Args:
        x: (N, D) train features; labels: (N,) int class of each row, in [0, C).
        means: optional (C, D) centres; default the per-class means of `x`.
    """
    from sklearn.covariance import EmpiricalCovariance

    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
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


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_score(train_x: np.ndarray, x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Deep nearest neighbours (Sun et al. 2022): −(L2 distance to the k-th nearest train feature), both sides
    L2-normalised. (N_train, D), (N, D) -> (N,); higher = in-distribution.

    On unit vectors ‖u − v‖² = 2 − 2 uᵀv, so the k-th neighbour is the k-th largest cosine: one matrix product and a
    top-k per chunk of rows (hand-written: several times faster than scikit-learn's brute `kneighbors` here, and
    memory-bounded by `chunk` × N_train).

    Raises:
        ValueError: k < 1 or k > N_train.
    """
    if not 1 <= k <= len(train_x):
        raise ValueError(f"kNN needs 1 <= k <= {len(train_x)} train samples, got k={k}")
    bank = torch.from_numpy(l2_normalise(train_x))
    query = torch.from_numpy(l2_normalise(x))
    out = []
    for i in range(0, len(query), chunk):
        cos = query[i : i + chunk] @ bank.T
        kth = torch.topk(cos, k, dim=1).values[:, k - 1]
        out.append(-(2 - 2 * kth).clamp_min(0).sqrt())
    return torch.cat(out).numpy() if out else np.zeros(0)


def fit_kmeans_mahalanobis(train_x: np.ndarray, n_clusters: int, seed: int) -> Mahalanobis:
    """SSD-style unsupervised Mahalanobis (Sehwag et al. 2021): k-means (scikit-learn, k-means++) on L2-normalised
    train features, centroids as means, tied covariance. Score inputs must be normalised the same way:
    use `kmeans_mahalanobis_score`."""
    from sklearn.cluster import KMeans

    if not 1 <= n_clusters <= len(train_x):
        raise ValueError(f"k-means needs 1 <= n_clusters <= {len(train_x)} train samples, got {n_clusters}")
    u = l2_normalise(train_x)
    km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(u)
    return fit_mahalanobis(u, km.labels_, means=km.cluster_centers_)


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
           chunk: int = 1024) -> np.ndarray:
    """k-th smallest KL(q(x) ‖ q(x_j)) over the train Gaussians q(x_j). (N, S) -> (N,).

    Reference orientation (sign +1): larger KL = more in-distribution (as the stochastic-SSL reference treats it;
    the distance reading would take sign −1); see `select_sign`.

    Raises:
        ValueError: k < 1 or k > N_train.
    """
    if not 1 <= k <= len(train_mu):
        raise ValueError(f"KL-kNN needs 1 <= k <= {len(train_mu)} train samples, got k={k}")
    out = []
    for i in range(0, len(mu), chunk):
        kl = torch.from_numpy(gaussian_kl_matrix(mu[i : i + chunk], logvar[i : i + chunk], train_mu, train_logvar))
        out.append(torch.topk(kl, k, dim=1, largest=False).values[:, k - 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


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
            "knn": knn_score(self.train_x, x, self.knn_k),
            "kmeans_mahalanobis": kmeans_mahalanobis_score(self.kmeans, x),
        }
        if self.stochastic_train is not None:
            if q is None or self.prior_log_prob is None:
                raise ValueError("a stochastic model's detectors need the Gaussians q of the scored split and a prior")
            out["mean_sigma"] = mean_sigma(q.logvar)
            out["prior_log_density"] = prior_log_density(q.mu, self.prior_log_prob)
            out["kl_knn"] = kl_knn(self.stochastic_train.mu, self.stochastic_train.logvar, q.mu, q.logvar, self.knn_k)
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
) -> Detectors:
    """Fit every detector on the training split (features `train_x` (N, D), labels `train_y` (N,)).

    `logit_samples`: see `Detectors` (Bayes-H: the probe stage's `n_samples`; 0 = logits of `x` itself).
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
