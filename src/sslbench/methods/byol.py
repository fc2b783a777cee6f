"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent", https://arxiv.org/abs/2006.07733).

Online network: encoder f_theta, projector g_theta, predictor q_theta; target network: an exponential moving average
(f_xi, g_xi) of the online one, never back-propagated. With normalised q = q_theta(g_theta(f_theta(v))) and
z' = g_xi(f_xi(v')) (paper Eq. 2, symmetrised in Eq. 5):

    L = ||q1 - z'2||^2 + ||q2 - z'1||^2 = (2 - 2 cos(q1, z'2)) + (2 - 2 cos(q2, z'1)),   averaged over the batch,

and between steps xi <- tau xi + (1 - tau) theta, tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 (tau_base 0.99).
Per-sample loss and no negatives: no cross-rank gather needed.
Loss scale: the sum over both directions of 2 - 2 cos, as the paper's L + L~; lightly's examples
(github.com/lightly-ai/lightly) train on 0.5 (-cos(q1, z'2) - cos(q2, z'1)), the same minimiser with a quarter of the
gradient, so at the same SGD rate lightly's steps are 4x smaller (docs/parity.md). Its `update_momentum` averages
parameters only; here BN buffers are copied too (the target runs in training mode, so neither uses them in the loss).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.methods.ema import cosine_momentum, ema_update, frozen_copy
from sslbench.models.heads import MLP


class BYOLLoss(nn.Module):
    """Normalised MSE 2 - 2 cos(q, z), mean over the batch. The caller detaches the target z.

    Forward: q (B, D) online predictions, z (B, D) target projections -> scalar in [0, 4].
    """

    def forward(self, q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        assert q.ndim == 2 and q.shape == z.shape, f"expected two (B, D) tensors, got {q.shape}, {z.shape}"
        return (2 - 2 * F.cosine_similarity(q, z, dim=1)).mean()


class BYOL(SSLMethod):
    """BYOL with an EMA target (encoder + projector) whose momentum follows a cosine from `momentum_base` to
    `momentum_final`.

    Args:
        projector_dims: hidden and output widths of the projector (BN + ReLU in the hidden layer).
        predictor_dims: hidden and output widths of the predictor; output must equal the projector's.
        momentum_base, momentum_final: tau at the first and the last step.
        **base: `SSLMethod` arguments.
    """

    def __init__(self, projector_dims: list[int], predictor_dims: list[int], momentum_base: float = 0.99,
                 momentum_final: float = 1.0, **base: Any) -> None:
        super().__init__(**base)
        if predictor_dims[-1] != projector_dims[-1]:
            raise UserError(f"byol predictor_dims[-1]={predictor_dims[-1]} must equal projector_dims[-1]="
                            f"{projector_dims[-1]}")
        if not 0.0 <= momentum_base <= momentum_final <= 1.0:
            raise UserError(f"byol needs 0 <= momentum_base <= momentum_final <= 1, got {momentum_base}, "
                            f"{momentum_final}")
        self.projector = MLP([self.encoder.feature_dim, *projector_dims])
        self.predictor = MLP([projector_dims[-1], *predictor_dims])
        self.target_encoder = frozen_copy(self.encoder)
        self.target_projector = frozen_copy(self.projector)
        self.momentum_base, self.momentum_final = momentum_base, momentum_final
        self.criterion = BYOLLoss()

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        if len(views) != 2:
            raise UserError(f"byol needs exactly 2 views, got {len(views)}")
        b = views[0].shape[0]
        x = torch.cat(views)
        h = self.encoder.features(x)
        q = self.predictor(self.projector(h))
        with torch.no_grad():
            z = self.target_projector(self.target_encoder.features(x))
        loss = self.criterion(q[:b], z[b:]) + self.criterion(q[b:], z[:b])
        return LossOutput(loss, h[:b], {"momentum": torch.tensor(self.momentum())})

    def momentum(self) -> float:
        return cosine_momentum(self.global_step, self.total_steps, self.momentum_base, self.momentum_final)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # xi <- tau xi + (1 - tau) theta with the online weights of the previous step, done at the start of the step
        # rather than at the end of the previous one, so that a checkpoint written after a step (callbacks run
        # before the module's on_train_batch_end) holds the target that the next step uses
        m = self.momentum()
        ema_update(self.target_encoder, self.encoder, m)
        ema_update(self.target_projector, self.projector, m)
