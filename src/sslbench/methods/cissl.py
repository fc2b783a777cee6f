"""CISSL: contrastive ISSL (Dubois et al., NeurIPS 2022, https://arxiv.org/abs/2209.06235).

Unlike SimCLR, the two branches differ: the student (predictor) has the linear probe's architecture, the target
(projector) is an MLP; and every view also contrasts against itself, with the target probability split between
the view itself and its positive. Over all 2B views (both augmentations of every image in the global batch):

    s_i = normalize(Pred(z_i)),  t_j = normalize(Proj(z_j)),  ℓ_ij = s_i·t_j / τ   (τ = 0.07, no diagonal mask),
    L_i = −½ [ log softmax_j(ℓ_i)_{j=i} + log softmax_j(ℓ_i)_{j=pos(i)} ],   loss = mean_i L_i.

Pred = linear d→128 + BN; Proj = d→1024 (BN, ReLU) → 128 + BN (reference: YannDubs/Invariant-Self-Supervised-Learning
`issl/losses/contrastive.py`, `is_self_contrastive=True`, `is_pred_proj_same=False`).
Multi-GPU: the targets t of every rank are gathered with gradients, so each view contrasts against the global batch.
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


class CISSLLoss(nn.Module):
    """The CISSL loss (formula in the module docstring).

    Args:
        temperature: τ of the cosine logits.
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        if temperature <= 0:
            raise UserError(f"method.module.temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: student, target: (2B, D), the B views of augmentation 1 then the B of augmentation 2 (local batch).

        Returns: the scalar loss, averaged over the local views.
        """
        assert student.shape == target.shape and student.ndim == 2 and student.shape[0] % 2 == 0, (
            f"CISSL expects two (2B, D) tensors, got {tuple(student.shape)} and {tuple(target.shape)}"
        )
        n = student.shape[0]
        with torch.autocast(device_type=student.device.type, enabled=False):  # fp32 logits, as the reference
            s = F.normalize(student.float(), dim=1)
            t = F.normalize(dist.gather(target.float()), dim=1)  # (world·2B, D); this rank's rows start at rank·2B
            log_q = F.log_softmax(s @ t.T / self.temperature, dim=1)
        rows = torch.arange(n, device=student.device)
        itself = rows + dist.rank() * n
        positive = (rows + n // 2) % n + dist.rank() * n
        return -0.5 * (log_q[rows, itself] + log_q[rows, positive]).mean()


class CISSL(SSLMethod):
    """CISSL on two views.

    Args:
        hidden_dim: the projector's hidden width; out_dim: both heads' output width; temperature: τ.
        **base: `SSLMethod` arguments (encoder, views, num_classes, optim, batch_size).
    """

    def __init__(self, hidden_dim: int = 1024, out_dim: int = 128, temperature: float = 0.07, **base: Any) -> None:
        super().__init__(**base)
        d = self.encoder.feature_dim
        self.predictor = nn.Sequential(nn.Linear(d, out_dim), nn.BatchNorm1d(out_dim))
        self.projector = nn.Sequential(MLP([d, hidden_dim, out_dim]), nn.BatchNorm1d(out_dim))
        self.criterion = CISSLLoss(temperature)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        if len(views) != 2:
            raise UserError(f"cissl uses exactly 2 views, got {len(views)}: set views to two crops")
        z = self.encoder.features(torch.cat(views))
        loss = self.criterion(self.predictor(z), self.projector(z))
        return LossOutput(loss, z[: views[0].shape[0]], {})
