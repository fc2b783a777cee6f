import math

import pytest
import torch

from sslbench.data.views import symmetric_views
from sslbench.errors import UserError
from sslbench.methods.base import OptimConfig
from sslbench.methods.supervised import Supervised
from sslbench.models.encoder import EncoderSpec


def _model(**kw: float) -> Supervised:
    torch.manual_seed(0)
    return Supervised(encoder=EncoderSpec(), views=symmetric_views(n_views=1), num_classes=4, optim=OptimConfig(),
                      batch_size=8, **kw)


def test_hand_computed_value_with_zero_classifier() -> None:
    model = _model()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    out = model.loss_step([torch.rand(5, 3, 32, 32)], torch.tensor([0, 1, 2, 3, 0]))
    assert out.loss.item() == pytest.approx(math.log(4), rel=1e-6)
    assert out.features.shape == (5, 256)


def test_loss_falls_on_a_fixed_batch() -> None:
    model = _model()
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first = model.loss_step([x], y).loss.item()
    for _ in range(3):
        opt.zero_grad()
        model.loss_step([x], y).loss.backward()
        opt.step()
    assert model.loss_step([x], y).loss.item() < first


def test_bad_label_smoothing() -> None:
    with pytest.raises(UserError, match="label_smoothing"):
        _model(label_smoothing=1.0)
