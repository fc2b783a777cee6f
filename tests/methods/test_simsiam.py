import pytest
import torch

from sslbench.data.views import symmetric_views
from sslbench.errors import UserError
from sslbench.methods.base import OptimConfig
from sslbench.methods.simsiam import NegativeCosineSimilarity, SimSiam
from sslbench.models.encoder import EncoderSpec


def test_hand_computed_values() -> None:
    loss = NegativeCosineSimilarity()
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert loss(z, 3 * z).item() == pytest.approx(-1.0)
    assert loss(z, torch.tensor([[0.0, 1.0], [-1.0, 0.0]])).item() == pytest.approx(0.0)


def test_agrees_with_lightly() -> None:
    from lightly.loss import NegativeCosineSimilarity as Lightly

    gen = torch.Generator().manual_seed(0)
    p, z = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
    assert NegativeCosineSimilarity()(p, z).item() == pytest.approx(Lightly()(p, z).item(), rel=1e-6)


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(1)
    p, z = torch.randn(16, 8, generator=gen).requires_grad_(), torch.randn(16, 8, generator=gen)
    opt, loss = torch.optim.Adam([p], lr=0.1), NegativeCosineSimilarity()
    first = loss(p, z).item()
    for _ in range(20):
        opt.zero_grad()
        loss(p, z).backward()
        opt.step()
    assert loss(p, z).item() < first - 0.5


def _simsiam() -> SimSiam:
    torch.manual_seed(0)
    return SimSiam([32, 32], [8, 32], encoder=EncoderSpec(), views=symmetric_views(), num_classes=3,
                   optim=OptimConfig(), batch_size=8)


def test_symmetric_in_the_views_and_stop_gradient() -> None:
    model = _simsiam()
    v1, v2 = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)
    labels = torch.zeros(6, dtype=torch.long)
    a, b = model.loss_step([v1, v2], labels).loss, model.loss_step([v2, v1], labels).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    # the target branch is detached: the loss has gradients only through the predictor branch
    z = model.projector(model.encoder.features(v1))
    assert model.criterion(model.predictor(z), z.detach()).grad_fn is not None


def test_bad_config() -> None:
    with pytest.raises(UserError, match="predictor_dims"):
        SimSiam([32, 32], [8, 16], encoder=EncoderSpec(), views=symmetric_views(), num_classes=3,
                optim=OptimConfig(), batch_size=8)
