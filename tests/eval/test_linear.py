"""Linear probe (docs/protocols.md): the hand-written update equals torch.optim.SGD's, weight decay is chosen on
validation, the stacked candidates train as if alone, the table is never copied, metrics are right."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sslbench.eval.linear import (
    _cross_entropy_grads,
    accuracy,
    as_float32,
    feature_stats,
    macro_accuracy,
    sampled_logits,
    train_linear_probe,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # the test machine's 2 cores are shared by several processes: small tensor ops run much faster on one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blobs(n: int, d: int = 16, c: int = 4, seed: int = 0, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 1, (c, d))
    y = rng.integers(0, c, n)
    return (centers[y] + spread * rng.normal(0, 1, (n, d))).astype(np.float32), y


def test_accuracy_and_macro_accuracy_by_hand() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 2])
    assert accuracy(pred, y) == pytest.approx(5 / 7)
    assert macro_accuracy(pred, y) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)  # sklearn balanced_accuracy_score
    assert np.isnan(accuracy(np.array([]), np.array([])))


def test_feature_stats_match_numpy_in_chunks() -> None:
    x = np.random.default_rng(0).normal(3, 2, (1000, 7)).astype(np.float32)
    mean, std = feature_stats(x)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, x.std(0, ddof=1), rtol=1e-4)


def test_stacked_gradients_equal_autograd() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 5, generator=gen), torch.randint(0, 3, (9,), generator=gen)
    w, b = torch.randn(2 * 3, 5, generator=gen), torch.randn(2 * 3, generator=gen)
    gw, gb = _cross_entropy_grads(x, y, w, b, k=2)
    wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = sum(F.cross_entropy(x @ wr[3 * j : 3 * j + 3].T + br[3 * j : 3 * j + 3], y) for j in range(2))
    loss.backward()  # type: ignore[union-attr]
    torch.testing.assert_close(gw, wr.grad)
    torch.testing.assert_close(gb, br.grad)


def test_training_equals_torch_optim_sgd_with_cosine_schedule() -> None:
    x, y = blobs(70, d=6, c=3)
    xv, yv = blobs(20, d=6, c=3, seed=1)
    probe = train_linear_probe(x, y, xv, yv, num_classes=3, weight_decays=[1e-2], epochs=3, lr=0.3, batch_size=32,
                               seed=5)
    # reference: autograd + torch.optim.SGD(weight_decay) + CosineAnnealingLR, same init, order and standardisation
    gen = torch.Generator().manual_seed(5)
    layer = torch.nn.Linear(6, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.empty(3, 6).normal_(0, 0.01, generator=gen))
        layer.bias.zero_()
    mean, std = feature_stats(x)
    xt, yt = (torch.from_numpy(x) - mean) / std, torch.from_numpy(y)
    opt = torch.optim.SGD(layer.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3 * 3)
    for _ in range(3):
        order = torch.randperm(70, generator=gen)
        for i in range(0, 70, 32):
            idx = order[i : i + 32]
            opt.zero_grad()
            F.cross_entropy(layer(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    torch.testing.assert_close(probe.weight, layer.weight.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(probe.bias, layer.bias.detach(), rtol=1e-4, atol=1e-5)


def test_stacked_candidates_train_as_if_alone() -> None:
    x, y = blobs(100)
    xv, yv = blobs(30, seed=1)
    both = train_linear_probe(x, y, xv, yv, num_classes=4, weight_decays=[1e-1, 1e-4], epochs=5, batch_size=16)
    alone = train_linear_probe(x, y, xv, yv, num_classes=4, weight_decays=[1e-1], epochs=5, batch_size=16)
    torch.testing.assert_close(both.candidates[1e-1].weight, alone.weight, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(both.candidates[1e-4].weight, alone.weight)


def test_separable_data_is_learned_and_wd_is_chosen_on_validation() -> None:
    x, y = blobs(600)
    xv, yv = blobs(200, seed=1)
    xt, yt = blobs(200, seed=2)
    probe = train_linear_probe(x, y, xv, yv, num_classes=4, epochs=20)
    assert accuracy(probe.predict(xt), yt) > 0.95
    assert set(probe.candidates) == {1e-4, 1e-5, 1e-6}
    assert probe.val_top1[probe.weight_decay] == max(probe.val_top1.values())
    for wd, cand in probe.candidates.items():  # val_top1 is each candidate's accuracy on validation
        assert probe.val_top1[wd] == pytest.approx(float(np.mean(cand.predict(xv) == yv)))
    # a huge decay shrinks the weights to nothing: validation must then prefer the small one
    pick = train_linear_probe(x, y, xv, yv, num_classes=4, weight_decays=[30.0, 1e-6], epochs=10)
    assert pick.weight_decay == 1e-6 and pick.val_top1[30.0] < pick.val_top1[1e-6]
    # as_module folds the standardisation in
    module = probe.as_module()
    np.testing.assert_allclose(module(torch.from_numpy(xt)).detach().numpy(), probe.logits(xt), rtol=1e-4, atol=1e-4)


def test_table_is_used_in_place_and_read_only_arrays_work() -> None:
    x, y = blobs(64)
    x.setflags(write=False)  # like a memory map or an Arrow buffer
    assert as_float32(x).data_ptr() == x.ctypes.data  # no copy
    probe = train_linear_probe(x, y, x, y, num_classes=4, epochs=2)
    assert probe.weight.shape == (4, 16)


def test_bad_inputs() -> None:
    x, y = blobs(10)
    with pytest.raises(ValueError, match="labels must lie in"):
        train_linear_probe(x, y + 10, x, y, num_classes=4)
    with pytest.raises(ValueError, match="non-empty"):
        train_linear_probe(x[:0], y[:0], x, y, num_classes=4)


def test_sampled_logits_average_draws_reproducibly() -> None:
    x, y = blobs(200)
    probe = train_linear_probe(x, y, x, y, num_classes=4, epochs=5)
    tiny = np.full_like(x, -30.0)  # sigma ~ 3e-7: every draw is mu
    np.testing.assert_allclose(sampled_logits(probe, x, tiny, n_samples=3, seed=0), probe.logits(x), atol=1e-4)
    wide = np.zeros_like(x)  # sigma = 1
    a = sampled_logits(probe, x, wide, n_samples=8, seed=0, chunk_floats=100)
    np.testing.assert_allclose(a, sampled_logits(probe, x, wide, n_samples=8, seed=0, chunk_floats=100))
    assert not np.allclose(a, probe.logits(x), atol=1e-2)
    # the average of many draws approaches the logits of mu (the head is linear)
    many = sampled_logits(probe, x[:20], wide[:20], n_samples=4000, seed=1)
    np.testing.assert_allclose(many, probe.logits(x[:20]), atol=0.35)


def test_equal_inputs_train_equal_probes() -> None:
    """Training is a function of the inputs' content and the settings only, which lets `evaluate@<method>` train the
    probe once and hand it to the three areas: equal content in other arrays gives the same probe bit for bit."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)).astype(np.float32), rng.integers(0, 3, 60)
    vx, vy = rng.normal(size=(20, 5)).astype(np.float32), rng.integers(0, 3, 20)
    kwargs = {"num_classes": 3, "epochs": 3, "batch_size": 16}
    first = train_linear_probe(x, y, vx, vy, **kwargs)
    again = train_linear_probe(x.copy(), y.copy(), vx.copy(), vy.copy(), **kwargs)  # equal content, other arrays
    assert torch.equal(again.weight, first.weight) and torch.equal(again.bias, first.bias)
    assert again.val_top1 == first.val_top1 and again.weight_decay == first.weight_decay
    assert not torch.equal(train_linear_probe(x, y, vx, vy, **{**kwargs, "epochs": 4}).weight, first.weight)
    x2 = x.copy()
    x2[0, 0] += 1.0
    assert not torch.equal(train_linear_probe(x2, y, vx, vy, **kwargs).weight, first.weight)  # other features
