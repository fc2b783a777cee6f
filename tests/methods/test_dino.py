"""DINO: the loss against lightly (values and centre), a hand-computed value, descent, head and schedules."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sslbench.methods.dino import DINOHead, DINOLoss


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add contention on the shared CPU (25x slower measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_matches_lightly_over_steps_with_multi_crop() -> None:
    from lightly.loss import DINOLoss as LightlyDINO

    gen = torch.Generator().manual_seed(0)
    k = 32
    ours = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    theirs = LightlyDINO(k, warmup_teacher_temp=0.04, teacher_temp=0.07, student_temp=0.1, center_momentum=0.9)
    for step, temp in enumerate((0.04, 0.055, 0.07)):
        teacher = [torch.randn(8, k, generator=gen) for _ in range(2)]
        student = [torch.randn(8, k, generator=gen) for _ in range(5)]
        expected = theirs(teacher, student, teacher_temp=temp)
        got = ours(student, teacher, teacher_temp=temp)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=f"step {step}")
        torch.testing.assert_close(ours.center, theirs.center.view(1, k))


def test_hand_computed_and_centre_update() -> None:
    # uniform teacher (zero logits) over K = 2; student logits [1, 0] at tau 0.1 for both samples:
    # CE = -(log sigmoid(10) + log sigmoid(-10)) / 2 = log(1 + e^10) - 5
    loss_fn = DINOLoss(2, student_temp=0.1, center_momentum=0.9)
    teacher = [torch.zeros(2, 2), torch.zeros(2, 2)]
    student = [torch.tensor([[1.0, 0.0], [1.0, 0.0]])] * 2
    loss = loss_fn(student, teacher, teacher_temp=0.04)
    assert loss.item() == pytest.approx(math.log1p(math.exp(10)) - 5, rel=1e-6)
    loss_fn(student, [torch.full((2, 2), 2.0)] * 2, teacher_temp=0.04)
    torch.testing.assert_close(loss_fn.center, torch.full((1, 2), 0.2))  # 0.9 * 0 + 0.1 * 2
    loss_fn.eval()
    loss_fn(student, [torch.full((2, 2), 5.0)] * 2, teacher_temp=0.04)
    torch.testing.assert_close(loss_fn.center, torch.full((1, 2), 0.2))  # no update outside training


def test_gradient_reaches_student_only_and_loss_falls() -> None:
    gen = torch.Generator().manual_seed(1)
    k = 16
    teacher = [torch.randn(16, k, generator=gen).requires_grad_() for _ in range(2)]
    student = [torch.randn(16, k, generator=gen).requires_grad_() for _ in range(4)]
    loss_fn = DINOLoss(k).eval()  # fixed centre: a fixed objective for the student
    loss = loss_fn(student, teacher, teacher_temp=0.04)
    loss.backward()
    assert all(t.grad is None for t in teacher) and all(s.grad is not None for s in student)
    opt = torch.optim.SGD(student, lr=1.0)
    first = loss.item()
    for _ in range(30):
        opt.zero_grad()
        loss_fn(student, teacher, teacher_temp=0.04).backward()
        opt.step()
    assert loss_fn(student, teacher, teacher_temp=0.04).item() < 0.5 * first


def test_symmetric_in_the_two_global_crops() -> None:
    gen = torch.Generator().manual_seed(2)
    t = [torch.randn(8, 10, generator=gen) for _ in range(2)]
    s = [torch.randn(8, 10, generator=gen) for _ in range(2)]
    loss_fn = DINOLoss(10).eval()
    torch.testing.assert_close(loss_fn(s, t, 0.05), loss_fn(s[::-1], t[::-1], 0.05))


def test_head_last_layer_is_weight_normalised() -> None:
    head = DINOHead(12, 32, 8, 20)
    with torch.no_grad():
        head.last_layer.weight.mul_(7.0)  # the norm of the raw weight does not matter (g fixed to 1)
    out = head(torch.randn(5, 12))
    assert out.shape == (5, 20) and out.abs().max() <= 1 + 1e-5
    v = torch.nn.functional.normalize(head.mlp(torch.ones(1, 12)), dim=1)
    torch.testing.assert_close(head(torch.ones(1, 12)).norm(), (v @ torch.nn.functional.normalize(
        head.last_layer.weight, dim=1).T).norm())


def test_head_batchnorm_option_normalises_the_hidden_layers() -> None:
    plain, with_bn = DINOHead(12, 32, 8, 20), DINOHead(12, 32, 8, 20, n_layers=3, use_bn=True)
    bns = [m for m in with_bn.mlp if isinstance(m, torch.nn.BatchNorm1d)]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.mlp) and len(bns) == 2
    # a common offset of every input (all-positive pooled features) no longer makes the bottlenecks alike
    x = torch.randn(64, 12) + 5.0
    def mean_cos(head: DINOHead) -> float:
        with torch.no_grad():
            z = torch.nn.functional.normalize(head.mlp(x), dim=1)
        return float((z @ z.T).mean())
    assert mean_cos(with_bn) < mean_cos(plain)


def test_a_few_steps_lower_the_loss_on_embedded_data(compose: Any, tiny_data: Path) -> None:
    # the centre is frozen here: its moving average changes the teacher's targets from step to step (DINO's loss
    # rises while the centre settles), and this test is about the student's optimisation
    from hydra.utils import instantiate

    from sslbench.data.splits import open_split
    from sslbench.training import config as pretrain

    cfg = compose("pretrain", ["method=dino", f"paths.data={tiny_data}", "dataset.image_size=16",
                               "method.views.local_size=8", "method.views.n_local=2"])
    torch.manual_seed(0)
    build = instantiate(cfg.method.module, _partial_=True, _convert_="all")
    module = build(encoder=pretrain.encoder_spec(cfg), views=instantiate(cfg.method.views, _convert_="all"),
                   num_classes=10, optim=pretrain.optim_config(cfg), batch_size=32)
    module.criterion.eval()
    source = open_split(tiny_data, "shapes", "train")
    images = torch.tensor(source.images(slice(0, 32))).permute(0, 3, 1, 2).float() / 255  # a writable copy
    labels = torch.from_numpy(source.labels[:32])
    views = module.views(images)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss = module.loss_step(views, labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
