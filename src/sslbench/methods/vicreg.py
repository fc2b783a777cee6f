"""VICReg (Bardes et al. 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
https://arxiv.org/abs/2105.04906; reference facebookresearch/vicreg `main_vicreg.py`).

For embeddings z1, z2 (B, D) of two views (paper Sec. 3, Eq. 1-6):

    s(z1, z2) = mean_i ||z1_i - z2_i||^2 / D                                      (invariance, MSE)
    v(z)      = mean_j relu(1 - sqrt(Var(z_.j) + 1e-4))                            (variance, hinge at 1)
    c(z)      = sum_{j != k} Cov(z)_jk^2 / D                                        (covariance, unbiased Cov)
    L = lambda s + mu (v(z1) + v(z2)) / 2 + nu (c(z1) + c(z2)),        lambda = mu = 25, nu = 1.

Multi-process: variance and covariance are statistics of the global batch, computed on both embeddings gathered from
every rank with gradients; every rank computes the same loss (see `methods.dist`).
The loss is numerically lightly's `VICRegLoss` (github.com/lightly-ai/lightly): same terms, weights, eps and unbiased
covariance. The expander of the method config has 2 layers (the paper's 3; lightly's example uses 2) (docs/parity.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods import dist
from sslbench.methods.barlow_twins import off_diagonal
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.models.heads import MLP


class VICRegLoss(nn.Module):
    """Invariance + variance + covariance terms with the paper's weights.

    Args:
        sim_coeff, std_coeff, cov_coeff: lambda, mu, nu (>= 0).
        eps: added to the variance before the square root.
    Forward: z1, z2 (B, D), B >= 2 over all ranks -> scalar.
    """

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                 eps: float = 1e-4) -> None:
        super().__init__()
        if min(sim_coeff, std_coeff, cov_coeff) < 0:
            raise UserError(f"vicreg coefficients must be >= 0, got {sim_coeff}, {std_coeff}, {cov_coeff}")
        self.sim_coeff, self.std_coeff, self.cov_coeff, self.eps = sim_coeff, std_coeff, cov_coeff, eps

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        assert z1.ndim == 2 and z1.shape == z2.shape, f"expected two (B, D) tensors, got {z1.shape}, {z2.shape}"
        z1, z2 = dist.gather(z1), dist.gather(z2)
        n, d = z1.shape
        assert n >= 2, "VICReg needs at least 2 samples for variances"
        invariance = F.mse_loss(z1, z2)
        z1, z2 = z1 - z1.mean(0), z2 - z2.mean(0)
        std1, std2 = (z1.var(0) + self.eps).sqrt(), (z2.var(0) + self.eps).sqrt()
        variance = 0.5 * (F.relu(1 - std1).mean() + F.relu(1 - std2).mean())
        cov1, cov2 = z1.T @ z1 / (n - 1), z2.T @ z2 / (n - 1)
        covariance = off_diagonal(cov1).pow(2).sum() / d + off_diagonal(cov2).pow(2).sum() / d
        return self.sim_coeff * invariance + self.std_coeff * variance + self.cov_coeff * covariance


class VICReg(SSLMethod):
    """VICReg: expander (Linear-BN-ReLU hidden layers, linear output) + `VICRegLoss`.

    Args:
        projector_dims: hidden and output widths of the expander.
        sim_coeff, std_coeff, cov_coeff: the loss weights.
        **base: `SSLMethod` arguments.
    """

    def __init__(self, projector_dims: list[int], sim_coeff: float = 25.0, std_coeff: float = 25.0,
                 cov_coeff: float = 1.0, **base: Any) -> None:
        super().__init__(**base)
        self.projector = MLP([self.encoder.feature_dim, *projector_dims])
        self.criterion = VICRegLoss(sim_coeff, std_coeff, cov_coeff)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        if len(views) != 2:
            raise UserError(f"vicreg needs exactly 2 views, got {len(views)}")
        b = views[0].shape[0]
        h = self.encoder.features(torch.cat(views))
        z = self.projector(h)
        return LossOutput(self.criterion(z[:b], z[b:]), h[:b], {})
