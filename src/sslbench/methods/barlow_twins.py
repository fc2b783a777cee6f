"""Barlow Twins (Zbontar et al. 2021, "Self-Supervised Learning via Redundancy Reduction",
https://arxiv.org/abs/2103.03230; reference facebookresearch/barlowtwins `main.py`).

Projections z1, z2 (B, D) of two views are standardised per dimension over the batch (z~ = (z - mean) / std, as a
BatchNorm without affine: biased variance + 1e-5), C = z~1^T z~2 / B (D, D), and (paper Eq. 1)

    L = sum_i (1 - C_ii)^2 + lambda * sum_i sum_{j != i} C_ij^2,          lambda = 5e-3.

Multi-process: the statistics and C are those of the whole global batch: both projections are gathered from every
rank with gradients and every rank computes the same loss (no division by the world size: see `methods.dist`).
The loss is numerically lightly's `BarlowTwinsLoss` (github.com/lightly-ai/lightly; both standardise with a batch norm
without affine). The projector of the method config has one hidden layer (the paper's has two, as lightly's
`BarlowTwinsProjectionHead`); its output layer has no bias, as the reference's, which the standardisation would
cancel anyway (docs/parity.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods import dist
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.models.heads import MLP


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix (D, D), flattened -> (D * (D - 1),)."""
    n = m.shape[0]
    assert m.shape == (n, n), f"expected a square matrix, got {tuple(m.shape)}"
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


class BarlowTwinsLoss(nn.Module):
    """Invariance on the diagonal of the cross-correlation, redundancy reduction off it.

    Args:
        lambda_offdiag: weight of the off-diagonal term (>= 0).
    Forward: z1, z2 (B, D) projections, B >= 2 (over all ranks) -> scalar.
    """

    def __init__(self, lambda_offdiag: float = 5e-3) -> None:
        super().__init__()
        if lambda_offdiag < 0:
            raise UserError(f"barlow_twins lambda_offdiag must be >= 0, got {lambda_offdiag}")
        self.lambda_offdiag = lambda_offdiag

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        assert z1.ndim == 2 and z1.shape == z2.shape, f"expected two (B, D) tensors, got {z1.shape}, {z2.shape}"
        z1, z2 = dist.gather(z1), dist.gather(z2)
        n = z1.shape[0]
        assert n >= 2, "Barlow Twins needs at least 2 samples to standardise over the batch"
        # standardisation over the batch = BatchNorm without affine (the reference applies nn.BatchNorm1d)
        c = F.batch_norm(z1, None, None, training=True).T @ F.batch_norm(z2, None, None, training=True) / n
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        return on_diag + self.lambda_offdiag * off_diagonal(c).pow(2).sum()


class BarlowTwins(SSLMethod):
    """Barlow Twins: projector (Linear-BN-ReLU hidden layers, linear output) + `BarlowTwinsLoss`.

    Args:
        projector_dims: hidden and output widths of the projector.
        lambda_offdiag: lambda of the loss.
        **base: `SSLMethod` arguments.
    """

    def __init__(self, projector_dims: list[int], lambda_offdiag: float = 5e-3, **base: Any) -> None:
        super().__init__(**base)
        self.projector = MLP([self.encoder.feature_dim, *projector_dims], last_bias=False)
        self.criterion = BarlowTwinsLoss(lambda_offdiag)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        if len(views) != 2:
            raise UserError(f"barlow_twins needs exactly 2 views, got {len(views)}")
        b = views[0].shape[0]
        h = self.encoder.features(torch.cat(views))
        z = self.projector(h)
        return LossOutput(self.criterion(z[:b], z[b:]), h[:b], {})
