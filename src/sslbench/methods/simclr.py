"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
https://arxiv.org/abs/2002.05709).

Two views of each of B images go through the backbone f and a 2-layer MLP projector g (Linear-BN-ReLU-Linear-BN, the
output BN with a learned scale and no shift, as in the authors' SimCLR v2 code, google-research/simclr `tf2/model.py`;
lightly's `SimCLRProjectionHead` also learns a shift there, which the L2 normalisation below does not undo either);
with z = g(f(x)) L2-normalised
and sim(u, v) = u.v / tau, the NT-Xent loss of anchor i with positive j(i) among the 2B views is

    l_i = -log exp(sim(z_i, z_j(i))) / sum_{k != i} exp(sim(z_i, z_k)),     L = mean_i l_i   (paper Eq. 1).

Multi-process: every rank gathers both views from all ranks (with gradients) as candidates and averages the loss over
its own anchors, which gives the single-process gradient (see `sslbench.methods.dist`). Both views go through the
backbone in one batch, so BatchNorm statistics cover all 2B views as in the paper's global BN.
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


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross-entropy over 2B views, self-similarity masked.

    Args:
        temperature: tau > 0.
    Forward: z1, z2 (B, D) projections of view 1 and 2 (row i of both = image i) -> scalar.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise UserError(f"simclr temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        assert z1.ndim == 2 and z1.shape == z2.shape, f"expected two (B, D) tensors, got {z1.shape}, {z2.shape}"
        b = z1.shape[0]
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        all1, all2 = dist.gather(z1), dist.gather(z2)  # (N, D) with N = world * B, rank order
        n = all1.shape[0]
        anchors = torch.cat([z1, z2])  # (2B, D)
        logits = anchors @ torch.cat([all1, all2]).T / self.temperature  # (2B, 2N)
        own = torch.arange(b, device=z1.device) + dist.rank() * b  # global rows of this rank's images
        self_idx = torch.cat([own, own + n])
        pos_idx = torch.cat([own + n, own])
        logits = logits.masked_fill(F.one_hot(self_idx, 2 * n).bool(), float("-inf"))
        return F.cross_entropy(logits, pos_idx)


class SimCLR(SSLMethod):
    """SimCLR: backbone + MLP projector (BN, ReLU; BN on the output) + NT-Xent.

    Args:
        projector_dims: hidden and output widths of the projector (input = backbone feature dim).
        temperature: tau of NT-Xent.
        **base: `SSLMethod` arguments (encoder, views, num_classes, optim, batch_size).
    """

    def __init__(self, projector_dims: list[int], temperature: float = 0.5, **base: Any) -> None:
        super().__init__(**base)
        self.projector = MLP([self.encoder.feature_dim, *projector_dims], last_bn=True, last_bn_scale=True)
        self.criterion = NTXentLoss(temperature)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        if len(views) != 2:
            raise UserError(f"simclr needs exactly 2 views, got {len(views)} (views.n_views)")
        b = views[0].shape[0]
        h = self.encoder.features(torch.cat(views))
        z = self.projector(h)
        loss = self.criterion(z[:b], z[b:])
        return LossOutput(loss, h[:b], {})
