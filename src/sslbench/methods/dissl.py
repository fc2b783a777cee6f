"""DISSL: distillation ISSL (Dubois et al., NeurIPS 2022, "Improving Self-Supervised Learning by Characterizing
Idealized Representations", https://arxiv.org/abs/2209.06235).

One encoder pass over all views; no stop-gradient and no EMA. A teacher head T (unconstrained MLP) and a student
head S with the linear probe's architecture map each view's representation z_i to C logits ("equivalence
classes"). With p_i = softmax(T(z_i)/τ_t), log q_i = log_softmax(S(z_i)/τ_s), over views i ≠ j:

    loss =      mean_{i≠j} CE(p_i → q_j)                  distillation: the teacher is NOT detached (it also makes
                                                           p invariant and deterministic)
         − λ ·  mean_i H( mean_batch p_i )                 maximality: use every class (batch-mean over all ranks)
         + β ·  mean_{i≠j} CE(p_i → log p_j)               extra invariance/determinism of the teacher

with λ = 2.3, β = 0.8, τ_t = 0.5, τ_s = 1.0, C = 16384 at TinyImageNet scale; computed in fp32 (reference:
YannDubs/Invariant-Self-Supervised-Learning `issl/losses/dissl.py`).
Heads: T = d→1024 (BN, ReLU) → 1024→512 (no bias) → BN → 512→C; S = d→512 (no bias) → BN → 512→C.
Multi-crop: the teacher distributions come from the global crops, the student predicts from every crop.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods import dist
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.methods.swav import check_views, multi_crop_features
from sslbench.models.heads import MLP


def _cross_entropy(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """mean_b −Σ_k p_bk log q_bk."""
    return -(p * log_q).sum(dim=1).mean()


class DISSLLoss(nn.Module):
    """The DISSL objective (formula in the module docstring).

    Args:
        lambda_maximality: λ, weight of the batch-marginal entropy.
        beta_det_inv: β, weight of the teacher-to-teacher cross-entropy.
        teacher_temp: τ_t; student_temp: τ_s.
    """

    def __init__(
        self,
        lambda_maximality: float = 2.3,
        beta_det_inv: float = 0.8,
        teacher_temp: float = 0.5,
        student_temp: float = 1.0,
    ) -> None:
        super().__init__()
        if teacher_temp <= 0 or student_temp <= 0 or lambda_maximality < 0 or beta_det_inv < 0:
            raise UserError(
                "dissl: need teacher_temp > 0, student_temp > 0, lambda_maximality >= 0, beta_det_inv >= 0 "
                f"(got {teacher_temp}, {student_temp}, {lambda_maximality}, {beta_det_inv})"
            )
        self.lambda_maximality = lambda_maximality
        self.beta_det_inv = beta_det_inv
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp

    def forward(
        self, teacher: list[torch.Tensor], student: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Args: teacher: (B, C) logits per global view; student: (B, C) logits per view (global views first).

        Returns: the scalar loss and its terms (`distillation`, `marginal_entropy`, `det_inv`).
        """
        if len(teacher) < 1 or len(student) < 2 or len(teacher) > len(student):
            raise ValueError(f"DISSL needs >= 1 teacher and >= 2 student views, got {len(teacher)}, {len(student)}")
        with torch.autocast(device_type=teacher[0].device.type, enabled=False):
            log_p = [F.log_softmax(t.float() / self.teacher_temp, dim=1) for t in teacher]
            p = [lp.exp() for lp in log_p]
            log_q = [F.log_softmax(s.float() / self.student_temp, dim=1) for s in student]
            distill = torch.stack(
                [_cross_entropy(p[i], log_q[j]) for i in range(len(p)) for j in range(len(log_q)) if i != j]
            ).mean()
            marginals = [dist.gather(pi).mean(dim=0) for pi in p]
            # clamped log: an empty class (m = 0) has a finite gradient, as torch.distributions.Categorical's
            entropy = torch.stack([-(m * m.clamp_min(torch.finfo(m.dtype).tiny).log()).sum() for m in marginals]).mean()
            pairs = [_cross_entropy(p[i], log_p[j]) for i in range(len(p)) for j in range(len(p)) if i != j]
            det_inv = torch.stack(pairs).mean() if pairs else distill.new_zeros(())
            loss = distill - self.lambda_maximality * entropy + self.beta_det_inv * det_inv
        logs = {"distillation": distill, "marginal_entropy": entropy, "det_inv": det_inv}
        return loss, {key: value.detach() for key, value in logs.items()}


def teacher_head(in_dim: int, hidden_dim: int, bottleneck_dim: int, n_classes: int) -> nn.Sequential:
    """T: in_dim → hidden (BN, ReLU) → bottleneck (no bias) → BN → n_classes."""
    return nn.Sequential(
        MLP([in_dim, hidden_dim, bottleneck_dim], last_bias=False),
        nn.BatchNorm1d(bottleneck_dim),
        nn.Linear(bottleneck_dim, n_classes),
    )


def student_head(in_dim: int, bottleneck_dim: int, n_classes: int) -> nn.Sequential:
    """S (the probe's architecture, linear): in_dim → bottleneck (no bias) → BN → n_classes."""
    bottleneck = nn.Linear(in_dim, bottleneck_dim, bias=False)
    return nn.Sequential(bottleneck, nn.BatchNorm1d(bottleneck_dim), nn.Linear(bottleneck_dim, n_classes))


class DISSL(SSLMethod):
    """DISSL (see the module docstring).

    Args:
        n_classes: C, the number of equivalence classes (outputs of both heads).
        hidden_dim, bottleneck_dim: the teacher's hidden width and both heads' bottleneck.
        lambda_maximality, beta_det_inv, teacher_temp, student_temp: the loss's.
        n_global_views: the leading views whose teacher distributions are targets (the rest: local crops).
        **base: `SSLMethod` arguments (encoder, views, num_classes, optim, batch_size).
    """

    def __init__(
        self,
        n_classes: int = 16384,
        hidden_dim: int = 1024,
        bottleneck_dim: int = 512,
        lambda_maximality: float = 2.3,
        beta_det_inv: float = 0.8,
        teacher_temp: float = 0.5,
        student_temp: float = 1.0,
        n_global_views: int = 2,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.n_global_views = n_global_views
        if n_classes < 2:
            raise UserError(f"method.module.n_classes (DISSL's C) must be >= 2, got {n_classes}")
        d = self.encoder.feature_dim
        self.teacher = teacher_head(d, hidden_dim, bottleneck_dim, n_classes)
        self.student = student_head(d, bottleneck_dim, n_classes)
        self.criterion = DISSLLoss(lambda_maximality, beta_det_inv, teacher_temp, student_temp)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        check_views(views, self.n_global_views, "dissl")
        n_global = self.n_global_views
        features = multi_crop_features(self.encoder, views)  # one encoder pass per crop resolution
        teacher = list(self.teacher(torch.cat(features[:n_global])).chunk(n_global))
        student = list(self.student(torch.cat(features)).chunk(len(features)))
        loss, logs = self.criterion(teacher, student)
        return LossOutput(loss, features[0], logs)
