import math

import pytest
import torch

from sslbench.errors import UserError
from sslbench.methods.simclr import NTXentLoss


def test_hand_computed_orthogonal_case() -> None:
    # views identical, images orthogonal: every anchor sees its positive at cos 1 and two candidates at cos 0
    z = torch.eye(2)
    loss = NTXentLoss(temperature=0.5)(z, z.clone())
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-2.0)), rel=1e-6)


def test_agrees_with_lightly_and_is_symmetric() -> None:
    from lightly.loss import NTXentLoss as LightlyNTXent

    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    for tau in (0.07, 0.5):
        ours = NTXentLoss(tau)(z1, z2)
        assert ours.item() == pytest.approx(LightlyNTXent(temperature=tau)(z1, z2).item(), rel=1e-5)
        assert ours.item() == pytest.approx(NTXentLoss(tau)(z2, z1).item(), rel=1e-6)


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(1)
    z1 = torch.randn(16, 8, generator=gen).requires_grad_()
    z2 = torch.randn(16, 8, generator=gen).requires_grad_()
    loss_fn, opt = NTXentLoss(0.5), torch.optim.Adam([z1, z2], lr=0.1)
    first = loss_fn(z1, z2).item()
    for _ in range(20):
        opt.zero_grad()
        loss_fn(z1, z2).backward()
        opt.step()
    assert loss_fn(z1, z2).item() < first - 0.5


def test_bad_input() -> None:
    with pytest.raises(UserError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(AssertionError, match="two \\(B, D\\)"):
        NTXentLoss()(torch.randn(4, 3), torch.randn(5, 3))
