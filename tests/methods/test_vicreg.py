import pytest
import torch

from sslbench.errors import UserError
from sslbench.methods.vicreg import VICRegLoss


def test_hand_computed_value() -> None:
    # identical views: no invariance term; dim 0 has std sqrt(2) > 1 (no hinge), dim 1 std sqrt(1e-4) = 0.01
    # (hinge 0.99), and the dims are uncorrelated: L = 25 * (0.99 / 2)
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert VICRegLoss()(z, z.clone()).item() == pytest.approx(25 * 0.99 / 2, rel=1e-6)


def test_agrees_with_lightly_and_is_symmetric() -> None:
    from lightly.loss import VICRegLoss as Lightly

    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(32, 16, generator=gen), 0.3 * torch.randn(32, 16, generator=gen)
    ours = VICRegLoss(25, 25, 1)(z1, z2)
    oracle = Lightly(lambda_param=25, mu_param=25, nu_param=1, eps=1e-4)(z1, z2)
    assert ours.item() == pytest.approx(oracle.item(), rel=1e-5)
    assert ours.item() == pytest.approx(VICRegLoss(25, 25, 1)(z2, z1).item(), rel=1e-6)


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(1)
    z1 = (0.1 * torch.randn(32, 8, generator=gen)).requires_grad_()
    z2 = (0.1 * torch.randn(32, 8, generator=gen)).requires_grad_()
    opt, loss = torch.optim.Adam([z1, z2], lr=0.05), VICRegLoss()
    first = loss(z1, z2).item()
    for _ in range(30):
        opt.zero_grad()
        loss(z1, z2).backward()
        opt.step()
    assert loss(z1, z2).item() < first / 2


def test_bad_input() -> None:
    with pytest.raises(UserError, match="coefficients"):
        VICRegLoss(-1.0)
