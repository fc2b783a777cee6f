"""Stochastic embeddings (Bayes-H / Bayes-Z): reduction to the base loss, MC-KL, construction errors, descent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from sslbench.errors import UserError
from sslbench.methods.barlow_twins import BarlowTwinsLoss
from sslbench.methods.base import OptimConfig
from sslbench.methods.stochastic import StochasticLoss, StochasticSSL, mc_kl
from sslbench.methods.vicreg import VICRegLoss
from sslbench.models.encoder import EncoderSpec
from sslbench.models.stochastic import LOGVAR_MIN, MixturePrior, StandardNormalPrior, rsample


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on the shared CPU (25x slower measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _Correlation(nn.Module):
    """A small two-embedding loss with batch statistics (Barlow Twins' invariance term)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = (a - a.mean(0)) / (a.std(0) + 1e-5)
        b = (b - b.mean(0)) / (b.std(0) + 1e-5)
        return (1 - (a * b).mean(0)).pow(2).sum()


def _gaussians(gen: torch.Generator, batch: int = 16, dim: int = 6) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    return tuple(
        (torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen).clamp(-3, 1))
        for _ in range(2)
    )


@pytest.mark.parametrize("base", [BarlowTwinsLoss(), VICRegLoss()], ids=["barlow_twins", "vicreg"])
def test_one_sample_no_kl_equals_base_loss_on_the_samples(base: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    (mu1, lv1), (mu2, lv2) = _gaussians(gen)
    projector = nn.Linear(6, 4)
    torch.manual_seed(7)
    wrapper = StochasticLoss(base, mc_samples=1, beta=0.0)
    loss, logs = wrapper(((mu1, lv1), (mu2, lv2)), StandardNormalPrior(6), projector)
    torch.manual_seed(7)
    s1, s2 = rsample(mu1, lv1, 1)[0], rsample(mu2, lv2, 1)[0]
    z1, z2 = projector(torch.cat([s1, s2])).chunk(2)
    torch.testing.assert_close(loss, base(z1, z2))
    torch.testing.assert_close(logs["base_loss"], loss)


def test_minimal_variance_reduces_to_the_base_loss_on_mu() -> None:
    gen = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(32, 5, generator=gen), torch.randn(32, 5, generator=gen)
    tiny = torch.full_like(mu1, LOGVAR_MIN)  # sigma = 0.01
    base = _Correlation()
    loss, _ = StochasticLoss(base, mc_samples=4, beta=0.0)(((mu1, tiny), (mu2, tiny)), StandardNormalPrior(5))
    assert loss.item() == pytest.approx(base(mu1, mu2).item(), rel=0.02)


def test_mc_kl_is_zero_when_q_is_the_prior() -> None:
    samples = torch.randn(20, 8, 3)
    zeros = torch.zeros(8, 3)
    assert mc_kl(samples, zeros, zeros, StandardNormalPrior(3)).abs().item() < 1e-5
    mixture = MixturePrior(3, n_components=1)  # a one-component mixture is a Gaussian
    mean, logvar = mixture.means.detach()[0].expand(8, 3), mixture.logvars.detach()[0].expand(8, 3)
    assert mc_kl(rsample(mean, logvar, 20), mean, logvar, mixture).abs().item() < 1e-4


def test_mc_kl_matches_the_closed_form_for_the_standard_prior() -> None:
    gen = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen).clamp(-2, 1)
    closed = 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(1).mean()
    estimate = mc_kl(rsample(mu, logvar, 20000, generator=gen), mu, logvar, StandardNormalPrior(5))
    assert estimate.item() == pytest.approx(closed.item(), rel=0.02)


def test_kl_enters_with_beta() -> None:
    gen = torch.Generator().manual_seed(3)
    gaussians = _gaussians(gen)
    base = _Correlation()
    torch.manual_seed(0)
    loss, logs = StochasticLoss(base, mc_samples=3, beta=0.5)(gaussians, StandardNormalPrior(6))
    torch.testing.assert_close(loss, logs["base_loss"] + 0.5 * logs["kl"])


@pytest.mark.parametrize(("kwargs", "key"), [({"mc_samples": 0}, "mc_samples"), ({"beta": -1e-3}, "beta")])
def test_bad_m_or_beta_rejected_at_construction(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(UserError, match=key):
        StochasticLoss(_Correlation(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=key):
        _module("h", **kwargs)


@pytest.mark.parametrize("space", ["h", "z"])
def test_logvar_init_sets_the_initial_sigma(space: str) -> None:
    assert _module(space, logvar_init=-8.0).encoder.gaussian.logvar.bias.eq(-8.0).all()  # type: ignore[union-attr]
    default = _module(space).encoder.gaussian  # logvar_init None: PyTorch's Linear init (the reference's), sigma ~ 1
    assert default is not None and default.logvar.bias.abs().max() <= default.dim**-0.5
    with pytest.raises(UserError, match="logvar_init"):
        _module(space, logvar_init=LOGVAR_MIN - 1)


def test_mu_init_identity_starts_mu_at_its_input() -> None:
    torch.manual_seed(0)
    method = _module("h", mu_init="identity")  # type: ignore[arg-type]
    method.eval()
    x = torch.rand(4, 3, 32, 32)
    out = method.encoder(x)
    assert out.mu is not None and torch.equal(out.mu, method.encoder.features(x))  # Bayes-H: mu = h at step 0
    default = _module("h").encoder  # mu_init None: PyTorch's Linear init (the reference's), mu != h
    assert not torch.allclose(default.gaussian.mu.weight, torch.eye(default.feature_dim))  # type: ignore[union-attr]
    with pytest.raises(UserError, match=r"mu_init must be one of \(None, 'identity'\), got 'eye'"):
        _module("h", mu_init="eye")  # type: ignore[arg-type]


def test_projector_placement_is_checked() -> None:
    with pytest.raises(UserError, match="projector_dims"):
        _module("h", projector_dims=[])
    with pytest.raises(UserError, match="projector_dims"):
        _module("z", projector_dims=[16])
    with pytest.raises(UserError, match="stochastic_space"):
        _module("none")


def _module(space: str, projector_dims: list[int] | None = None, prior: str = "standard",
            **kwargs: float) -> StochasticSSL:
    spec = EncoderSpec(stochastic_space=space, projector_dims=[32, 16] if space == "z" else [], prior=prior)
    if projector_dims is None:
        projector_dims = [32, 16] if space == "h" else []
    return StochasticSSL(encoder=spec, views=nn.Identity(), num_classes=3, optim=OptimConfig(), batch_size=8,
                         loss=_Correlation(), projector_dims=projector_dims, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("space", "prior"), [("h", "standard"), ("z", "mog")])
def test_loss_step_features_and_gradients(space: str, prior: str) -> None:
    torch.manual_seed(0)
    method = _module(space, prior=prior, mc_samples=3, beta=1e-3)
    views = [torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)]
    torch.manual_seed(1)
    out = method.loss_step(views, torch.zeros(8, dtype=torch.long))
    out.loss.backward()
    encoder = method.encoder
    with torch.no_grad():  # same train-mode pass: mu of view 1 for Bayes-H, h of view 1 for Bayes-Z
        h = encoder.features(torch.cat(views))
        assert encoder.gaussian is not None
        expected = encoder.gaussian(h)[0][:8] if space == "h" else h[:8]
    torch.testing.assert_close(out.features, expected)
    assert encoder.gaussian is not None and encoder.gaussian.logvar.weight.grad is not None
    if prior == "mog":
        assert isinstance(encoder.prior, MixturePrior) and encoder.prior.means.grad is not None
    assert set(out.logs) == {"base_loss", "kl", "sigma"}


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(4)
    params = [torch.randn(32, 6, generator=gen).requires_grad_() for _ in range(4)]
    loss_fn = StochasticLoss(_Correlation(), mc_samples=4, beta=1e-2)
    opt = torch.optim.Adam(params, lr=0.05)
    torch.manual_seed(1)
    first = loss_fn(((params[0], params[1]), (params[2], params[3])), StandardNormalPrior(6))[0].item()
    for _ in range(60):
        opt.zero_grad()
        loss_fn(((params[0], params[1]), (params[2], params[3])), StandardNormalPrior(6))[0].backward()
        opt.step()
    assert loss_fn(((params[0], params[1]), (params[2], params[3])), StandardNormalPrior(6))[0].item() < 0.5 * first


@pytest.mark.parametrize("method", ["barlow_twins_bayes_h", "barlow_twins_bayes_z", "vicreg_bayes_h", "vicreg_bayes_z"])
def test_study_variants_wire_the_base_loss_and_the_space(compose: Any, method: str) -> None:
    from hydra.utils import instantiate

    from sslbench.training import config as pretrain

    cfg = compose("pretrain", [f"method={method}"])
    build = instantiate(cfg.method.module, _partial_=True, _convert_="all")
    module = build(encoder=pretrain.encoder_spec(cfg), views=nn.Identity(), num_classes=10,
                   optim=pretrain.optim_config(cfg), batch_size=256)
    base, space = method.rsplit("_bayes_", 1)
    assert isinstance(module, StochasticSSL) and module.encoder.spec.stochastic_space == space
    assert isinstance(module.criterion.base, BarlowTwinsLoss if base == "barlow_twins" else VICRegLoss)
    assert (module.criterion.mc_samples, module.criterion.beta) == (12, 1e-3)
    assert (module.projector is None) == (space == "z") and (module.encoder.projector is None) == (space == "h")
