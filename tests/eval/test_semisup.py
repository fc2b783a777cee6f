"""Semi-supervised fine-tuning (docs/protocols.md): AdamW equals torch's, it learns, early-stops on validation,
leaves the pretrained encoder alone, and averages Bayes-H logits over draws."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from sslbench.eval.semisup import AdamW, FinetuneConfig, classify, finetune, predict
from sslbench.models.encoder import Encoder, EncoderSpec


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Images:
    data: np.ndarray

    def images(self, indices: np.ndarray | slice) -> np.ndarray:
        return self.data[indices]


def dark_or_bright(n: int, seed: int) -> tuple[Images, np.ndarray]:
    """Class 0: dark noisy images; class 1: bright noisy images (16 px)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    base = np.where(y[:, None, None, None] == 1, 170, 60)
    x = np.clip(base + rng.normal(0, 30, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
    return Images(x), y


def test_adamw_equals_torch_optim_adamw() -> None:
    gen = torch.Generator().manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(4, 3, generator=gen)), torch.nn.Parameter(torch.randn(3, generator=gen))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = AdamW([([a[0]], 1e-2), ([a[1]], 1e-1)], weight_decay=0.05)
    ref = torch.optim.AdamW([{"params": [b[0]], "lr": 1e-2}, {"params": [b[1]], "lr": 1e-1}], weight_decay=0.05)
    for step, scale in enumerate([1.0, 0.8, 0.3, 0.05]):
        grads = [torch.randn(p.shape, generator=gen) for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step(scale)
        for group, lr in zip(ref.param_groups, (1e-2, 1e-1), strict=True):
            group["lr"] = lr * scale
        ref.step()
        for p, q in zip(a, b, strict=True):
            torch.testing.assert_close(p, q, msg=f"step {step}")


def test_finetune_learns_and_keeps_the_pretrained_encoder() -> None:
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec(image_size=16)).eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train, ytrain = dark_or_bright(24, 0)
    val, yval = dark_or_bright(20, 1)
    test, ytest = dark_or_bright(40, 2)
    cfg = FinetuneConfig(epochs=6, patience=5, batch_size=8, head_lr=1e-2, seed=0)
    epochs: list[int] = []
    result = finetune(encoder, train, np.arange(24), ytrain, val, np.arange(20), yval, num_classes=2, cfg=cfg,
                      on_epoch=lambda e, _: epochs.append(e))
    pred = predict(result.encoder, result.head, test, np.arange(40), batch_size=16, n_samples=1, seed=0)
    assert np.mean(pred == ytest) >= 0.9
    assert result.val_top1[result.best_epoch - 1] == max(result.val_top1) and epochs == list(range(1, 7))
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_early_stopping_on_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    import sslbench.eval.semisup as semisup

    val_accuracy = iter([0.5, 0.75, 0.75, 0.5, 0.75, 1.0, 1.0])  # best at epoch 2, no strict gain for 3 epochs
    # validation labels are all 1; predicting 1 for the first 4 * accuracy images gives that accuracy
    monkeypatch.setattr(semisup, "predict", lambda *a, **k: (np.arange(4) < 4 * next(val_accuracy)).astype(int))
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec(image_size=16))
    train, ytrain = dark_or_bright(8, 0)
    cfg = FinetuneConfig(epochs=10, patience=3, batch_size=8, seed=0)
    result = finetune(encoder, train, np.arange(8), ytrain, train, np.arange(4), np.ones(4, np.int64), num_classes=2,
                      cfg=cfg)
    assert result.val_top1 == [0.5, 0.75, 0.75, 0.5, 0.75] and result.best_epoch == 2 and result.epochs_run == 5



def test_min_steps_makes_each_round_several_epochs_and_counts_patience_in_rounds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """8 images in batches of 8 are 1 step per epoch: min_steps=12 with 3 rounds is 3 rounds of 4 epochs; with
    patience 1, the round after the best one stops the run."""
    import sslbench.eval.semisup as semisup

    val_accuracy = iter([0.5, 0.75, 0.5, 1.0])
    monkeypatch.setattr(semisup, "predict", lambda *a, **k: (np.arange(4) < 4 * next(val_accuracy)).astype(int))
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec(image_size=16))
    train, ytrain = dark_or_bright(8, 0)
    rounds: list[int] = []

    def run(cfg: FinetuneConfig) -> semisup.FinetuneResult:
        return finetune(encoder, train, np.arange(8), ytrain, train, np.arange(4), np.ones(4, np.int64),
                        num_classes=2, cfg=cfg, on_epoch=lambda e, _: rounds.append(e))

    result = run(FinetuneConfig(epochs=3, patience=1, min_steps=12, batch_size=8, seed=0))
    assert rounds == [4, 8, 12] and result.val_top1 == [0.5, 0.75, 0.5]
    assert result.best_epoch == 8 and result.epochs_run == 12 and result.steps_run == 12
    val_accuracy = iter([0.75, 0.5, 1.0])
    rounds.clear()
    result = run(FinetuneConfig(epochs=3, patience=1, min_steps=12, batch_size=8, seed=0))
    assert rounds == [4, 8] and result.best_epoch == 4 and result.steps_run == 8  # stopped one round after the best
    # without min_steps every round is one epoch: the protocol's loop
    val_accuracy = iter([0.5, 0.75, 1.0])
    rounds.clear()
    result = run(FinetuneConfig(epochs=3, patience=1, batch_size=8, seed=0))
    assert rounds == [1, 2, 3] and result.steps_run == 3 and result.epochs_run == 3

def test_bayes_h_averages_logits_over_draws_and_bayes_z_uses_h() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    bayes_h = Encoder(EncoderSpec(image_size=16, stochastic_space="h")).eval()
    head = torch.nn.Linear(bayes_h.embedding_dim, 4)
    with torch.no_grad():
        one = classify(bayes_h, head, x, 5, torch.Generator().manual_seed(1))
        again = classify(bayes_h, head, x, 5, torch.Generator().manual_seed(1))
        out = bayes_h(x)
        assert out.mu is not None and out.logvar is not None
        eps = torch.randn((5, *out.mu.shape), generator=torch.Generator().manual_seed(1))
        manual = head(out.mu + (0.5 * out.logvar).exp() * eps).mean(0)
    torch.testing.assert_close(one, again)
    torch.testing.assert_close(one, manual)
    bayes_z = Encoder(EncoderSpec(image_size=16, stochastic_space="z", projector_dims=[8, 4])).train()
    logits = classify(bayes_z, head, x[:1], 5, None)  # batch of one in train mode: the projector's BN is not run
    assert logits.shape == (1, 4)
