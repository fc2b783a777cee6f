import pytest
import torch

from sslbench.errors import UserError
from sslbench.methods.barlow_twins import BarlowTwinsLoss, off_diagonal


def test_off_diagonal() -> None:
    m = torch.arange(9.0).view(3, 3)
    assert off_diagonal(m).tolist() == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]


def test_hand_computed_value() -> None:
    # each dim is already standardised (up to BN's eps); C = [[c, -c], [c, -c]] with c = 1 / (1 + 1e-5)
    z1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    z2 = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    c = 1 / (1 + 1e-5)
    lam = 5e-3
    expected = (1 - c) ** 2 + (1 + c) ** 2 + lam * (c**2 + c**2)
    assert BarlowTwinsLoss(lam)(z1, z2).item() == pytest.approx(expected, rel=1e-6)


def test_agrees_with_lightly_and_is_symmetric() -> None:
    from lightly.loss import BarlowTwinsLoss as Lightly

    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(32, 16, generator=gen), torch.randn(32, 16, generator=gen)
    ours = BarlowTwinsLoss(5e-3)(z1, z2)
    assert ours.item() == pytest.approx(Lightly(lambda_param=5e-3)(z1, z2).item(), rel=1e-5)
    assert ours.item() == pytest.approx(BarlowTwinsLoss(5e-3)(z2, z1).item(), rel=1e-5)


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(1)
    z1 = torch.randn(64, 8, generator=gen).requires_grad_()
    z2 = torch.randn(64, 8, generator=gen).requires_grad_()
    opt, loss = torch.optim.SGD([z1, z2], lr=0.5), BarlowTwinsLoss()
    first = loss(z1, z2).item()
    for _ in range(50):
        opt.zero_grad()
        loss(z1, z2).backward()
        opt.step()
    assert loss(z1, z2).item() < first / 2


def test_bad_input() -> None:
    with pytest.raises(UserError, match="lambda_offdiag"):
        BarlowTwinsLoss(-1.0)
    with pytest.raises(AssertionError):
        BarlowTwinsLoss()(torch.randn(4, 3), torch.randn(4, 2))
