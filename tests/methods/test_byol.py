import pytest
import torch
from torch import nn

from sslbench.data.views import asymmetric_views
from sslbench.methods.base import OptimConfig
from sslbench.methods.byol import BYOL, BYOLLoss
from sslbench.methods.ema import cosine_momentum, ema_update, frozen_copy
from sslbench.models.encoder import EncoderSpec


def test_hand_computed_values_and_lightly() -> None:
    from lightly.loss import NegativeCosineSimilarity

    z = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    assert BYOLLoss()(z, 2 * z).item() == pytest.approx(0.0, abs=1e-7)
    assert BYOLLoss()(z, -z).item() == pytest.approx(4.0)
    gen = torch.Generator().manual_seed(0)
    q, t = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    assert BYOLLoss()(q, t).item() == pytest.approx(2 + 2 * NegativeCosineSimilarity()(q, t).item(), rel=1e-6)


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(1)
    q, t = torch.randn(16, 8, generator=gen).requires_grad_(), torch.randn(16, 8, generator=gen)
    opt = torch.optim.Adam([q], lr=0.1)
    first = BYOLLoss()(q, t).item()
    for _ in range(20):
        opt.zero_grad()
        BYOLLoss()(q, t).backward()
        opt.step()
    assert BYOLLoss()(q, t).item() < first / 2


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)


def test_ema_update_math() -> None:
    online = nn.Linear(2, 2)
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        target.weight.zero_()
        online.weight.fill_(1.0)
    ema_update(target, online, 0.9)
    assert torch.allclose(target.weight, torch.full((2, 2), 0.1))
    ema_update(target, online, 1.0)
    assert torch.allclose(target.weight, torch.full((2, 2), 0.1))


def test_target_gets_no_gradient_and_follows_the_online_network() -> None:
    torch.manual_seed(0)
    model = BYOL([32, 16], [32, 16], encoder=EncoderSpec(), views=asymmetric_views(), num_classes=3,
                 optim=OptimConfig(), batch_size=4)
    views = [torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)]
    out = model.loss_step(views, torch.zeros(4, dtype=torch.long))
    out.loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is None for p in model.target_projector.parameters())
    # symmetric: swapping the views gives the same loss
    swapped = model.loss_step(views[::-1], torch.zeros(4, dtype=torch.long)).loss
    assert swapped.item() == pytest.approx(out.loss.item(), rel=1e-5)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = next(model.target_encoder.parameters()).clone()
    model.on_train_batch_start(None, 0)
    after = next(model.target_encoder.parameters())
    assert not torch.equal(before, after)
