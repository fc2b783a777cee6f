"""CISSL: hand-computed value, an independent implementation, symmetry, descent."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from sslbench.errors import UserError
from sslbench.methods.cissl import CISSLLoss


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on the shared CPU (25x slower measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reference(student: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """Row by row: a softmax over all 2B targets, half the target mass on the view itself, half on its pair."""
    n = student.shape[0]
    s, t = F.normalize(student, dim=1), F.normalize(target, dim=1)
    total = torch.zeros(())
    for i in range(n):
        logits = torch.stack([s[i] @ t[j] for j in range(n)]) / tau
        target_dist = torch.zeros(n)
        target_dist[i] = target_dist[(i + n // 2) % n] = 0.5
        total = total - (target_dist * torch.log_softmax(logits, 0)).sum()
    return total / n


def test_hand_computed_single_pair() -> None:
    # B = 1: the two views' unit vectors are orthogonal e1, e2 in both branches
    e = torch.eye(2)
    tau = 0.5
    lse = math.log(math.exp(1 / tau) + 1)
    expected = lse - 1 / (2 * tau)  # -1/2 [(1/tau - lse) + (0 - lse)]
    assert CISSLLoss(tau)(e, e).item() == pytest.approx(expected, rel=1e-6)


def test_matches_independent_implementation() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(10, 6, generator=gen), torch.randn(10, 6, generator=gen)
    torch.testing.assert_close(CISSLLoss(0.07)(s, t), _reference(s, t, 0.07), rtol=1e-5, atol=1e-5)


def test_symmetric_in_the_two_views() -> None:
    gen = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
    swap = torch.cat([torch.arange(4, 8), torch.arange(4)])
    loss = CISSLLoss()
    torch.testing.assert_close(loss(s, t), loss(s[swap], t[swap]))


def test_loss_falls_under_gradient_descent() -> None:
    gen = torch.Generator().manual_seed(2)
    s, t = torch.randn(32, 8, generator=gen).requires_grad_(), torch.randn(32, 8, generator=gen).requires_grad_()
    loss_fn = CISSLLoss(0.2)
    opt = torch.optim.SGD([s, t], lr=1.0)
    first = loss_fn(s, t).item()
    for _ in range(40):
        opt.zero_grad()
        loss_fn(s, t).backward()
        opt.step()
    # the floor is log 2 (half the mass on each of two targets): descent must approach it
    assert loss_fn(s, t).item() < 0.5 * (first + math.log(2))


def test_bad_temperature_rejected() -> None:
    with pytest.raises(UserError, match="temperature"):
        CISSLLoss(0.0)
