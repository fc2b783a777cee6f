"""The diagonal-Gaussian stochastic embedding of Bayes-H / Bayes-Z (Janiak et al.; REFERENCE.md §1.3).

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
