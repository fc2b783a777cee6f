"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning", https://arxiv.org/abs/2011.10566).

Encoder f = backbone + projector (BN on every layer, the output BN without affine), predictor h (bottleneck MLP).
With p_i = h(f(x_i)), z_i = f(x_i) and D(p, z) = -cos(p, stopgrad(z)), the symmetrised loss is (paper Eq. 2-3)

    L = D(p1, z2) / 2 + D(p2, z1) / 2,        minimum -1.

No negatives and no batch statistics in the loss, so no cross-rank gather is needed (BN statistics are synchronised
by the stage's SyncBatchNorm when several processes train).
The projector has 2 layers (the paper's CIFAR variant, App. D); lightly's `SimSiamProjectionHead`
(github.com/lightly-ai/lightly) has the ImageNet one's 3. The loss is lightly's `NegativeCosineSimilarity`, halved
and symmetrised as here (docs/parity.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.models.heads import MLP


class NegativeCosineSimilarity(nn.Module):
    """D(p, z) = -mean_i cos(p_i, z_i). The caller applies the stop-gradient (`z.detach()`).

    Forward: p, z (B, D) -> scalar in [-1, 1].
    """

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        assert p.ndim == 2 and p.shape == z.shape, f"expected two (B, D) tensors, got {p.shape}, {z.shape}"
        return -F.cosine_similarity(p, z, dim=1).mean()


class SimSiam(SSLMethod):
    """SimSiam: projector (BN everywhere) + bottleneck predictor + symmetrised negative cosine with stop-gradient.

    Args:
        projector_dims: hidden and output widths of the projector (input = backbone feature dim).
        predictor_dims: hidden (bottleneck) and output widths of the predictor; output must equal the projector's.
        **base: `SSLMethod` arguments.
    """

    def __init__(self, projector_dims: list[int], predictor_dims: list[int], **base: Any) -> None:
        super().__init__(**base)
        if predictor_dims[-1] != projector_dims[-1]:
            raise UserError(f"simsiam predictor_dims[-1]={predictor_dims[-1]} must equal projector_dims[-1]="
                            f"{projector_dims[-1]} (the predictor maps z to the space of z)")
        self.projector = MLP([self.encoder.feature_dim, *projector_dims], last_bn=True)
        self.predictor = MLP([projector_dims[-1], *predictor_dims])
        self.criterion = NegativeCosineSimilarity()

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        if len(views) != 2:
            raise UserError(f"simsiam needs exactly 2 views, got {len(views)}")
        b = views[0].shape[0]
        h = self.encoder.features(torch.cat(views))
        z = self.projector(h)
        p = self.predictor(z)
        z1, z2, p1, p2 = z[:b], z[b:], p[:b], p[b:]
        loss = 0.5 * (self.criterion(p1, z2.detach()) + self.criterion(p2, z1.detach()))
        # the std of the normalised output: ~1/sqrt(D) when healthy, 0 when collapsed (paper Fig. 2)
        z_std = F.normalize(z1.detach(), dim=1).std(0).mean()
        return LossOutput(loss, h[:b], {"z_std": z_std})
