"""The diagonal-Gaussian stochastic embedding of Bayes-H / Bayes-Z (Janiak et al. 2024; docs/methods.md).

q(x) = N(mu(x), diag(exp(logvar(x)))), with mu clamped to [-20, 20] and logvar to [2 ln 0.01, 2 ln 5]
as in the reference code (graphml-lab-pwr/stochastic-embeddings-ssl `src/task/bayesian_ssl.py`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

MU_CLAMP = 20.0
LOGVAR_MIN = 2 * math.log(0.01)
LOGVAR_MAX = 2 * math.log(5.0)


class GaussianHead(nn.Module):
    """Two linear maps `dim -> dim`: the mean and the log-variance of a diagonal Gaussian.

    Args:
        dim: width of the input and of the Gaussian.
    Returns (forward):
        `(mu, logvar)`, each (B, dim), clamped.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(dim, dim)
        self.logvar = nn.Linear(dim, dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.mu(x).clamp(-MU_CLAMP, MU_CLAMP)
        logvar = self.logvar(x).clamp(LOGVAR_MIN, LOGVAR_MAX)
        return mu, logvar


def rsample(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """Reparameterised samples `mu + sigma * eps`: (n_samples, B, D) from (B, D) parameters."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    eps = torch.randn((n_samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    return mu.unsqueeze(0) + (0.5 * logvar).exp().unsqueeze(0) * eps


PRIORS = ("standard", "mog")


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of samples (..., D), summed over D -> (...)."""
        return -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)


class MixturePrior(nn.Module):
    """p(z) = sum_k pi_k N(m_k, diag(exp(s_k))): a mixture of `n_components` diagonal Gaussians whose means,
    log-variances and mixing logits are learned (10 components in the reference code)."""

    def __init__(self, dim: int, n_components: int = 10) -> None:
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.dim = dim
        self.means = nn.Parameter(torch.randn(n_components, dim) * 0.5)
        self.logvars = nn.Parameter(torch.zeros(n_components, dim))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        diff = z.unsqueeze(-2) - self.means  # (..., K, D)
        comp = -0.5 * (diff.pow(2) / self.logvars.exp() + self.logvars + math.log(2 * math.pi)).sum(-1)
        return torch.logsumexp(comp + torch.log_softmax(self.logits, 0), dim=-1)


def build_prior(name: str, dim: int, n_components: int = 10) -> StandardNormalPrior | MixturePrior:
    if name == "standard":
        return StandardNormalPrior(dim)
    if name == "mog":
        return MixturePrior(dim, n_components)
    raise ValueError(f"prior must be one of {PRIORS}, got {name!r}")


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dim."""
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(-1)
