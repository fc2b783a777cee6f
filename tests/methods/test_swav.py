"""SwAV: Sinkhorn codes, the swapped-prediction loss (vs lightly), hand-computed value, symmetry, descent."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from sslbench.errors import UserError
from sslbench.methods.swav import SwAVHead, SwAVLoss, check_views, multi_crop_features, sinkhorn


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on the shared CPU (25x slower measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scores(gen: torch.Generator, n_crops: int, batch: int = 16, dim: int = 8, k: int = 12) -> list[torch.Tensor]:
    prototypes = F.normalize(torch.randn(k, dim, generator=gen), dim=1)
    return [F.normalize(torch.randn(batch, dim, generator=gen), dim=1) @ prototypes.T for _ in range(n_crops)]


def test_sinkhorn_codes_are_distributions_and_equipartition() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = _scores(gen, 1, batch=64, k=8)[0]
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    assert codes.shape == (64, 8)
    torch.testing.assert_close(codes.sum(1), torch.ones(64))
    # with enough iterations every prototype receives B/K of the mass
    many = sinkhorn(scores, epsilon=0.05, iterations=200)
    torch.testing.assert_close(many.sum(0), torch.full((8,), 64 / 8), rtol=1e-3, atol=1e-3)
    from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

    torch.testing.assert_close(codes, lightly_sinkhorn(scores, iterations=3, epsilon=0.05))


def test_matches_lightly_multi_crop() -> None:
    from lightly.loss import SwaVLoss as LightlySwaV

    gen = torch.Generator().manual_seed(1)
    scores = _scores(gen, 6)
    ours = SwAVLoss(temperature=0.1, epsilon=0.05, sinkhorn_iterations=3)(scores, n_global=2)
    theirs = LightlySwaV(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)(scores[:2], scores[2:])
    torch.testing.assert_close(ours, theirs.squeeze(), rtol=1e-5, atol=1e-6)


def test_hand_computed_two_by_two() -> None:
    # scores of 2 samples x 2 prototypes, identical for both crops: by symmetry the codes are
    # [[x, 1 - x], [1 - x, x]] with x = sigmoid(1 / eps); the prediction is softmax([1, 0] / tau)
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    eps, tau = 0.5, 0.25  # mild values, so that the expected loss is far from 0 in float32
    x = 1 / (1 + math.exp(-1 / eps))
    log_p_hit = -math.log1p(math.exp(-1 / tau))
    log_p_miss = -1 / tau - math.log1p(math.exp(-1 / tau))
    expected = -(x * log_p_hit + (1 - x) * log_p_miss)
    loss = SwAVLoss(temperature=tau, epsilon=eps)([s, s.clone()], n_global=2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_symmetric_in_the_global_crops() -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = _scores(gen, 2)
    loss = SwAVLoss()
    torch.testing.assert_close(loss([a, b]), loss([b, a]))


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(3)
    z = [torch.randn(32, 16, generator=gen).requires_grad_() for _ in range(2)]
    prototypes = torch.randn(10, 16, generator=gen).requires_grad_()
    loss_fn = SwAVLoss()
    opt = torch.optim.SGD([*z, prototypes], lr=0.5)

    def loss() -> torch.Tensor:
        c = F.normalize(prototypes, dim=1)
        return loss_fn([F.normalize(v, dim=1) @ c.T for v in z])

    first = loss().item()
    for _ in range(60):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first


def test_head_scores_are_cosines_and_bad_prototypes_rejected() -> None:
    head = SwAVHead([8, 16, 4], n_prototypes=5)
    head.prototypes.weight.data.mul_(3.0)
    head.normalize_prototypes()
    torch.testing.assert_close(head.prototypes.weight.norm(dim=1), torch.ones(5))
    scores = head(torch.randn(6, 8))
    assert scores.shape == (6, 5) and scores.abs().max() <= 1 + 1e-5
    with pytest.raises(UserError, match="n_prototypes"):
        SwAVHead([8, 4], n_prototypes=1)


def test_multi_crop_features_group_by_resolution() -> None:
    from sslbench.models.encoder import Encoder, EncoderSpec

    encoder = Encoder(EncoderSpec()).eval()  # eval: BN statistics do not depend on the grouping
    gen = torch.Generator().manual_seed(4)
    views = [torch.rand(3, 3, 32, 32, generator=gen) for _ in range(2)]
    views += [torch.rand(3, 3, 16, 16, generator=gen) for _ in range(3)]
    check_views(views, 2, "swav")
    with pytest.raises(UserError, match="n_global_views=3"):
        check_views(views[:2], 3, "swav")
    with torch.no_grad():
        grouped = multi_crop_features(encoder, views)
        single = [encoder.features(v) for v in views]
    assert len(grouped) == 5
    for g, s in zip(grouped, single, strict=True):
        torch.testing.assert_close(g, s, rtol=1e-4, atol=1e-5)
