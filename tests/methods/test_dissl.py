"""DISSL: hand-computed value, an independent implementation, symmetry, no stop-gradient, fp32, descent, heads."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch.distributions import Categorical

from sslbench.errors import UserError
from sslbench.methods.dissl import DISSLLoss, student_head, teacher_head


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on the shared CPU (25x slower measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reference(teacher: list[torch.Tensor], student: list[torch.Tensor], lam: float, beta: float,
               tau_t: float, tau_s: float) -> torch.Tensor:
    """The objective written with torch.distributions, view pair by view pair (Dubois et al. 2022, DISSL)."""
    p = [Categorical(logits=t / tau_t) for t in teacher]
    q = [Categorical(logits=s / tau_s) for s in student]
    distill, det = [], []
    for i, pi in enumerate(p):
        for j, qj in enumerate(q):
            if i != j:  # CE(p_i -> q_j) = KL(p_i || q_j) + H(p_i)
                distill.append((torch.distributions.kl_divergence(pi, qj) + pi.entropy()).mean())
        for j, pj in enumerate(p):
            if i != j:
                det.append((torch.distributions.kl_divergence(pi, pj) + pi.entropy()).mean())
    entropy = torch.stack([Categorical(probs=pi.probs.mean(0)).entropy() for pi in p]).mean()
    return torch.stack(distill).mean() - lam * entropy + beta * torch.stack(det).mean()


def test_hand_computed_uniform_case() -> None:
    # all logits zero: every CE and the marginal entropy are log C -> (1 - lambda + beta) log C
    c = 7
    zeros = [torch.zeros(4, c), torch.zeros(4, c)]
    loss, logs = DISSLLoss(2.3, 0.8)(zeros, zeros)
    assert loss.item() == pytest.approx((1 - 2.3 + 0.8) * math.log(c), rel=1e-6)
    assert logs["marginal_entropy"].item() == pytest.approx(math.log(c), rel=1e-6)


def test_matches_independent_implementation_with_multi_crop() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(10, 9, generator=gen) * 3 for _ in range(2)]
    student = [torch.randn(10, 9, generator=gen) * 3 for _ in range(4)]
    ours, _ = DISSLLoss(2.3, 0.8, 0.5, 1.0)(teacher, student)
    torch.testing.assert_close(ours, _reference(teacher, student, 2.3, 0.8, 0.5, 1.0), rtol=1e-5, atol=1e-5)


def test_symmetric_in_the_two_views() -> None:
    gen = torch.Generator().manual_seed(1)
    t = [torch.randn(6, 5, generator=gen) for _ in range(2)]
    s = [torch.randn(6, 5, generator=gen) for _ in range(2)]
    loss = DISSLLoss()
    torch.testing.assert_close(loss(t, s)[0], loss(t[::-1], s[::-1])[0])


def test_teacher_is_not_detached_and_loss_is_fp32() -> None:
    gen = torch.Generator().manual_seed(2)
    t = [torch.randn(6, 5, generator=gen).bfloat16().requires_grad_() for _ in range(2)]
    s = [torch.randn(6, 5, generator=gen).bfloat16().requires_grad_() for _ in range(2)]
    loss, _ = DISSLLoss(lambda_maximality=0.0, beta_det_inv=0.0)(t, s)  # the distillation term alone
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in (*t, *s))


def test_loss_falls_under_gradient_descent_without_collapse() -> None:
    gen = torch.Generator().manual_seed(3)
    z = [torch.randn(64, 16, generator=gen).requires_grad_() for _ in range(2)]
    heads = [torch.nn.Linear(16, 32), torch.nn.Linear(16, 32)]
    params = [*z, *heads[0].parameters(), *heads[1].parameters()]
    loss_fn = DISSLLoss()
    opt = torch.optim.Adam(params, lr=0.05)

    def loss() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return loss_fn([heads[0](v) for v in z], [heads[1](v) for v in z])

    first = loss()[0].item()
    for _ in range(60):
        opt.zero_grad()
        loss()[0].backward()
        opt.step()
    last, logs = loss()
    assert last.item() < first - 1.0
    assert logs["marginal_entropy"].item() > 0.8 * math.log(32)  # the maximality term keeps every class in use


def test_student_head_is_linear_and_teacher_is_not() -> None:
    torch.manual_seed(4)
    student, teacher = student_head(8, 16, 5), teacher_head(8, 32, 16, 5)
    x, y = torch.randn(20, 8), torch.randn(20, 8)
    student.train()(torch.randn(64, 8))  # give BN non-trivial running statistics
    teacher.train()(torch.randn(64, 8))
    student.eval()
    teacher.eval()
    mix = 0.3 * x + 0.7 * y
    torch.testing.assert_close(student(mix), 0.3 * student(x) + 0.7 * student(y), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(teacher(mix), 0.3 * teacher(x) + 0.7 * teacher(y), atol=1e-3)


def test_an_empty_class_keeps_gradients_finite() -> None:
    # class 0 has probability exactly 0 in every teacher row: d(m log m)/dm = log m + 1 must not be -inf there
    teacher = [torch.tensor([[-1e4, 0.0, 1.0], [-1e4, 1.0, 0.0]]).requires_grad_() for _ in range(2)]
    student = [torch.zeros(2, 3).requires_grad_() for _ in range(2)]
    loss, _ = DISSLLoss()(teacher, student)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(x.grad).all() for x in (*teacher, *student))


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(UserError, match="teacher_temp"):
        DISSLLoss(teacher_temp=0.0)
