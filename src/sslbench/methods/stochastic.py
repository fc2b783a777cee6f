"""Stochastic embeddings, Bayes-H and Bayes-Z (Janiak et al., "Enhancing Out-of-Distribution Detection
Through Stochastic Embeddings in Self-supervised Learning", ICCS 2024; reference code
graphml-lab-pwr/stochastic-embeddings-ssl `src/task/bayesian_ssl.py`; docs/methods.md),
as a wrapper around ANY loss over two embeddings (B, D) x (B, D) -> scalar (Barlow Twins, VICReg, ...).

The encoder owns the diagonal Gaussian q = N(μ, diag σ²) (`encoder.gaussian`, clamped) and its prior
(`encoder.prior`: standard normal or a learned mixture), so that `encoder.pt` holds what embedding and OOD scores
need. Per view, M reparameterised samples are drawn:

- Bayes-H: h → (μ, log σ²) → samples h⁽ᵐ⁾ → projector (owned by this method) → z⁽ᵐ⁾; online probe on μ;
- Bayes-Z: h → encoder.projector → (μ, log σ²) → samples z⁽ᵐ⁾; online probe on h;

    loss = 1/M Σ_m base(z₁⁽ᵐ⁾, z₂⁽ᵐ⁾) + β · ½ (KL̂₁ + KL̂₂),
    KL̂ = mean_batch Σ_dims-jointly 1/M Σ_m [log q(s⁽ᵐ⁾) − log p(s⁽ᵐ⁾)]        (Monte-Carlo KL(q ‖ p)),

pairing the m-th sample of view 1 with the m-th of view 2. Defaults β = 1e-3, M = 12 (the reference's). The
projector sees one sample set (both views, as the deterministic Barlow Twins / VICReg here) per call, so its BN
statistics are those of one sample set, as in the reference (which projects each sample set separately).
Multi-GPU: the base loss gathers its own batch statistics; the KL is a per-example mean (DDP averages it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sslbench.errors import UserError
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.models.heads import MLP
from sslbench.models.stochastic import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    MixturePrior,
    StandardNormalPrior,
    gaussian_log_prob,
    rsample,
)

Prior = StandardNormalPrior | MixturePrior


def mc_kl(samples: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, prior: Prior) -> torch.Tensor:
    """Monte-Carlo KL(q ‖ p) from samples (M, B, D) of q = N(mu, diag exp(logvar)): summed over D, mean over M, B."""
    return (gaussian_log_prob(samples, mu, logvar) - prior.log_prob(samples)).mean()


class StochasticLoss(nn.Module):
    """Mean base loss over M paired sample sets, plus β times the mean MC-KL of both views (formula above).

    Args:
        base: any loss over two embeddings (B, D), (B, D) -> scalar.
        mc_samples: M >= 1.
        beta: β >= 0.
    Raises:
        UserError: M < 1 or β < 0 (naming the key).
    """

    def __init__(self, base: nn.Module, mc_samples: int = 12, beta: float = 1e-3) -> None:
        super().__init__()
        check_mc_beta(mc_samples, beta)
        self.base = base
        self.mc_samples = mc_samples
        self.beta = beta

    def forward(
        self,
        gaussians: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        prior: Prior,
        projector: nn.Module | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Args: gaussians: ((μ₁, log σ²₁), (μ₂, log σ²₂)), each (B, D); prior: p of that space; projector:
        applied to each sample set (Bayes-H) or None (Bayes-Z). Returns the loss and its terms."""
        (mu1, logvar1), (mu2, logvar2) = gaussians
        s1, s2 = rsample(mu1, logvar1, self.mc_samples), rsample(mu2, logvar2, self.mc_samples)
        terms = []
        for a, b in zip(s1, s2, strict=True):
            if projector is not None:  # both views of one sample set in one batch, as Barlow Twins / VICReg do
                a, b = projector(torch.cat([a, b])).chunk(2)
            terms.append(self.base(a, b))
        base = torch.stack(terms).mean()
        kl = 0.5 * (mc_kl(s1, mu1, logvar1, prior) + mc_kl(s2, mu2, logvar2, prior))
        sigma = (0.5 * torch.cat([logvar1, logvar2])).exp().mean()
        logs = {"base_loss": base.detach(), "kl": kl.detach(), "sigma": sigma.detach()}
        return base + self.beta * kl, logs


def check_mc_beta(mc_samples: int, beta: float) -> None:
    if int(mc_samples) != mc_samples or mc_samples < 1:
        raise UserError(f"method.module.mc_samples (M) must be an integer >= 1, got {mc_samples}")
    if not beta >= 0:
        raise UserError(f"method.module.beta must be >= 0, got {beta}")


MU_INITS = (None, "identity")


class StochasticSSL(SSLMethod):
    """Bayes-H / Bayes-Z around a two-embedding loss; the space comes from `encoder.stochastic_space`.

    Args (beyond `SSLMethod`'s):
        loss: the base loss module (e.g. `BarlowTwinsLoss`, `VICRegLoss`), built by Hydra from its `_target_`.
        projector_dims: Bayes-H: the projector's widths after the feature dim (required); Bayes-Z: must be empty
            (the projector is `encoder.projector`, set by `encoder.projector_dims`).
        mc_samples: M; beta: β.
        logvar_init: initial bias of the log σ² layer (`encoder.gaussian.logvar`), e.g. -8 (σ ≈ 0.02); None (default,
            the reference's) keeps PyTorch's Linear init, log σ² ≈ 0, i.e. σ ≈ 1 noise on a μ whose spread at init is
            far smaller, so the samples start as almost pure noise (docs/calibration.md).
        mu_init: None (default, the reference's: PyTorch's Linear init) or "identity": the μ layer
            (`encoder.gaussian.mu`) starts as the identity map with zero bias, so that μ = its input at step 0 and,
            with a small `logvar_init`, the model starts as its deterministic pair plus little noise. For Bayes-H,
            whose downstream representation is μ, a random μ layer costs the untrained probe 1-3 points
            (docs/calibration.md, 2026-12-04).
        **base: `SSLMethod` arguments (encoder, views, num_classes, optim, batch_size).
    Raises:
        UserError: M < 1, β < 0, a deterministic encoder, projector widths given to the wrong place, or a
            `logvar_init` outside the log σ² clamp, an unknown `mu_init`.
    """

    def __init__(
        self, loss: nn.Module, projector_dims: list[int] | None = None, mc_samples: int = 12, beta: float = 1e-3,
        logvar_init: float | None = None, mu_init: str | None = None, **base: Any,
    ) -> None:
        check_mc_beta(mc_samples, beta)
        if mu_init not in MU_INITS:
            raise UserError(f"method.module.mu_init must be one of {MU_INITS}, got {mu_init!r}")
        if logvar_init is not None and not LOGVAR_MIN < logvar_init < LOGVAR_MAX:
            raise UserError(
                f"method.module.logvar_init must lie inside the log-variance clamp ({LOGVAR_MIN:.3f}, {LOGVAR_MAX:.3f})"
                f" or be null, got {logvar_init}"
            )
        space = base["encoder"].stochastic_space
        dims = list(projector_dims or [])
        if space not in ("h", "z"):
            raise UserError(f"the stochastic wrapper needs method.encoder.stochastic_space 'h' or 'z', got {space!r}")
        if space == "h" and not dims:
            raise UserError("method.module.projector_dims is required for Bayes-H (the projector after the sampled h)")
        if space == "z" and dims:
            raise UserError(
                "method.module.projector_dims must be empty for Bayes-Z: its projector is method.encoder.projector_dims"
            )
        super().__init__(**base)
        self.projector = MLP([self.encoder.feature_dim, *dims]) if dims else None
        self.criterion = StochasticLoss(loss, mc_samples, beta)
        if logvar_init is not None:
            assert self.encoder.gaussian is not None
            with torch.no_grad():
                self.encoder.gaussian.logvar.bias.fill_(float(logvar_init))
        if mu_init == "identity":
            assert self.encoder.gaussian is not None
            with torch.no_grad():
                nn.init.eye_(self.encoder.gaussian.mu.weight)
                nn.init.zeros_(self.encoder.gaussian.mu.bias)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        if len(views) != 2:
            raise UserError(f"the stochastic wrapper uses exactly 2 views, got {len(views)}")
        enc = self.encoder
        assert enc.gaussian is not None and enc.prior is not None
        h = enc.features(torch.cat(views))
        stochastic_input = h if enc.projector is None else enc.projector(h)
        mu, logvar = enc.gaussian(stochastic_input)
        mu1, mu2 = mu.chunk(2)
        logvar1, logvar2 = logvar.chunk(2)
        loss, logs = self.criterion(((mu1, logvar1), (mu2, logvar2)), enc.prior, self.projector)
        probe_features = mu1 if enc.projector is None else h[: views[0].shape[0]]
        return LossOutput(loss, probe_features, logs)
