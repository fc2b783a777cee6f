"""SwAV: swapping assignments between views (Caron et al., NeurIPS 2020, https://arxiv.org/abs/2006.09882).

Each crop v of an image is mapped to a unit vector z_v = normalize(g(h_v)) and scored against K unit-norm prototypes
C: s_v = z_v Cᵀ (cosine similarities, in [-1, 1]). The codes of a global crop i are an equipartitioned soft
assignment of the batch to the prototypes, computed without gradient by Sinkhorn-Knopp (3 iterations, ε = 0.05):

    Q = exp(S / ε)ᵀ;  alternately normalise rows (prototypes) to 1/K and columns (samples) to 1/B;  q = B·Qᵀ.

Swapped prediction: every other crop predicts the codes of crop i with a softmax at temperature τ = 0.1,

    loss = 1/|G| Σ_{i ∈ G} 1/(V−1) Σ_{v ≠ i} mean_b( −Σ_k q_{i,bk} log softmax(s_{v,b} / τ)_k ),

over the global crops G and all V crops (multi-crop: 2 global + small local crops; only global crops are assigned).
As in the reference code (facebookresearch/swav `main_swav.py`), the prototypes are re-normalised to the unit
sphere before every step and kept frozen for the first iterations (`freeze_prototypes_epochs`).

Multi-GPU: the Sinkhorn sums run over the whole global batch (all-reduced across ranks), as in the reference.
Deviation: no feature queue (the paper adds one only for small batches on ImageNet; here the default batch of 256
over a 10-class set needs none, and a queue would make the loss depend on past steps).
Prototypes: a linear layer without bias, as the reference's `nn.Linear(output_dim, nmb_prototypes, bias=False)`, so
the scores are cosines in [-1, 1]; lightly's `SwaVPrototypes` (github.com/lightly-ai/lightly) gives each prototype a
learned bias, which its re-normalisation (of the weights only) leaves free, so its scores are not cosines. The swapped
loss itself (codes of the global crops, every other crop predicting them, averaged over V - 1 crops) matches lightly's
`SwaVLoss`; side-by-side learning curves are in docs/parity.md (`benchmarks/parity.py`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods import dist
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.models.encoder import Encoder
from sslbench.models.heads import MLP


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp codes of SwAV: an (approximately) equipartitioned soft assignment of samples to prototypes.

    Args:
        scores: (B, K) prototype scores of the local batch; the sums run over the global batch of all ranks.
        epsilon: entropic regularisation (the exponent is scores / epsilon).
        iterations: alternating row/column normalisations.
    Returns:
        (B, K) codes, each row summing to 1, in fp32.
    """
    q = torch.exp(scores.float() / epsilon).t()  # (K, B)
    n_prototypes, total_batch = q.shape[0], q.shape[1] * dist.world_size()
    q /= dist.all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= dist.all_reduce_sum(q.sum(dim=1, keepdim=True))  # every prototype gets mass 1/K ...
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)  # ... and every sample mass 1/B
        q /= total_batch
    return (q * total_batch).t()


class SwAVLoss(nn.Module):
    """Swapped prediction of Sinkhorn codes (see the module docstring for the formula).

    Args:
        temperature: τ of the predicting softmax (0.1 in the paper).
        epsilon: ε of Sinkhorn-Knopp (0.05).
        sinkhorn_iterations: 3 in the paper.
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3) -> None:
        super().__init__()
        if temperature <= 0 or epsilon <= 0 or sinkhorn_iterations < 1:
            raise UserError(
                "swav: need temperature > 0, epsilon > 0 and sinkhorn_iterations >= 1 "
                f"(got {temperature}, {epsilon}, {sinkhorn_iterations})"
            )
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(self, scores: list[torch.Tensor], n_global: int = 2) -> torch.Tensor:
        """Args: scores: one (B, K) score matrix per crop, the `n_global` global crops first. Returns a scalar."""
        if not 1 <= n_global <= len(scores) or len(scores) < 2:
            raise ValueError(f"SwAV needs >= 2 crops and 1 <= n_global <= crops, got {len(scores)}, {n_global}")
        shape = scores[0].shape
        assert all(s.shape == shape for s in scores), f"score shapes differ: {[tuple(s.shape) for s in scores]}"
        log_probs = [F.log_softmax(s.float() / self.temperature, dim=1) for s in scores]
        total = scores[0].new_zeros((), dtype=torch.float32)
        for i in range(n_global):
            codes = sinkhorn(scores[i].detach(), self.epsilon, self.sinkhorn_iterations)
            terms = [-(codes * log_probs[v]).sum(dim=1).mean() for v in range(len(scores)) if v != i]
            total = total + torch.stack(terms).mean()
        return total / n_global


class SwAVHead(nn.Module):
    """Projector MLP (Linear-BN-ReLU hidden layers, linear output), l2 normalisation, and K prototypes.

    The paper's head for ResNet-50: 2048 -> 2048 (BN, ReLU) -> 128, 3000 prototypes.

    Args:
        dims: `[feature_dim, hidden..., out_dim]` of the projector.
        n_prototypes: K.
    Returns (forward): (B, K) cosine scores between projections and prototypes.
    """

    def __init__(self, dims: list[int], n_prototypes: int) -> None:
        super().__init__()
        if n_prototypes < 2:
            raise UserError(f"method.module.n_prototypes must be >= 2, got {n_prototypes}")
        self.projector = MLP(dims)
        self.prototypes = nn.Linear(self.projector.out_dim, n_prototypes, bias=False)
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.prototypes(F.normalize(self.projector(h), dim=1))


class SwAV(SSLMethod):
    """SwAV with multi-crop.

    Args:
        projector_dims: hidden and output widths of the projector (input = backbone feature dim).
        n_prototypes: K; temperature, epsilon, sinkhorn_iterations: the loss's.
        freeze_prototypes_epochs: the prototypes get no update for this many (fractional) epochs.
        n_global_views: the leading views that are global crops (assigned codes); the rest are local crops.
        **base: `SSLMethod` arguments (encoder, views, num_classes, optim, batch_size).
    """

    def __init__(
        self,
        projector_dims: list[int],
        n_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        freeze_prototypes_epochs: float = 1.0,
        n_global_views: int = 2,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.n_global_views = n_global_views
        self.head = SwAVHead([self.encoder.feature_dim, *projector_dims], n_prototypes)
        self.criterion = SwAVLoss(temperature, epsilon, sinkhorn_iterations)
        self.freeze_prototypes_epochs = freeze_prototypes_epochs

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        check_views(views, self.n_global_views, "swav")
        self.head.normalize_prototypes()
        features = multi_crop_features(self.encoder, views)
        scores = self.head(torch.cat(features)).chunk(len(features))  # one head pass: BN over all crops
        loss = self.criterion(list(scores), n_global=self.n_global_views)
        return LossOutput(loss, features[0], {})

    def on_after_backward(self) -> None:
        if epochs_done(self) < self.freeze_prototypes_epochs:
            self.head.prototypes.weight.grad = None  # no update at all (SGD skips parameters without a gradient)


def epochs_done(module: SSLMethod) -> float:
    """Fractional epochs completed (global step / steps per epoch); 0 outside a Trainer. For per-step schedules."""
    trainer = module._trainer
    if trainer is None:
        return 0.0
    return module.global_step / max(1, int(trainer.num_training_batches))


# Multi-crop (introduced by SwAV, reused by DINO and DISSL): the `n_global_views` global crops come first.


def check_views(views: list[torch.Tensor], n_global_views: int, method: str) -> None:
    if not 1 <= n_global_views <= len(views) or len(views) < 2:
        raise UserError(
            f"{method} needs >= 2 views with method.module.n_global_views={n_global_views} of them global; "
            f"the views config gives {len(views)}"
        )


def multi_crop_features(encoder: Encoder, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Backbone features of every view, one forward per run of equal-resolution views (as DINO's MultiCropWrapper:
    crops of one size share a batch, so BN sees them together and the backbone runs fewer, larger batches)."""
    out: list[torch.Tensor] = []
    start = 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        feats = encoder.features(torch.cat(views[start:end]))
        out.extend(feats.chunk(end - start))
        start = end
    return out
