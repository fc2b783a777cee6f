"""Semi-supervised evaluation by full fine-tuning on a small labelled subset.

Protocol (stochastic-SSL repo): the pretrained backbone plus a new linear head are fine-tuned on a class-balanced
1% or 10% subset of the train labels (`sslbench.eval.subsets`) with AdamW (backbone lr 1e-4, head lr 1e-3,
weight decay 1e-5), a per-step cosine schedule over at most 50 epochs, and early stopping with patience 5 on the
validation accuracy. **Decision:** early stopping and the choice of the returned weights use the validation split,
never the test set. Stochastic-H (Bayes-H) encoders apply the head to each of M samples of q(h) and average the
logits, in training and in evaluation.

Deviations, both deliberate: images are not augmented (the protocol does not name augmentations, and the probe
area must stay within the CPU budget); the loop is plain PyTorch rather than a Lightning `Trainer` because the
evaluation stages must not import Lightning (~7 s per process) and the loop is one screen long.

Images are read in batches from an `ImageSource` (`sslbench.data.splits.SplitSource`), never all at once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sslbench.models.encoder import Encoder
from sslbench.models.stochastic import rsample

EVAL_BATCH = 256  # images per forward pass when predicting (no gradients: larger batches are cheaper per image)


class AdamW:
    """AdamW (Loshchilov & Hutter 2019): the update of `torch.optim.AdamW` (betas 0.9/0.999, eps 1e-8, decoupled
    weight decay p <- p - lr * wd * p), with one learning rate per parameter group.

    Hand-written because constructing any `torch.optim` optimizer imports `torch._dynamo` (2-4 s per evaluation
    process on the target machine); tests check it against `torch.optim.AdamW` step by step.

    Args:
        groups: (parameters, learning rate) pairs.
        weight_decay: decoupled weight decay of every group.
    """

    def __init__(self, groups: list[tuple[list[nn.Parameter], float]], *, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups, self.weight_decay, self.betas, self.eps = groups, weight_decay, betas, eps
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.steps = 0

    def zero_grad(self) -> None:
        for params, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self, lr_scale: float = 1.0) -> None:
        """One update with each group's learning rate times `lr_scale` (the schedule)."""
        self.steps += 1
        beta1, beta2 = self.betas
        c1, c2 = 1.0 - beta1**self.steps, 1.0 - beta2**self.steps
        for params, base_lr in self.groups:
            lr = base_lr * lr_scale
            for p in params:
                if p.grad is None:
                    continue
                m, v = self.state.setdefault(id(p), (torch.zeros_like(p), torch.zeros_like(p)))
                p.mul_(1.0 - lr * self.weight_decay)
                m.lerp_(p.grad, 1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                p.addcdiv_(m, (v.sqrt() / math.sqrt(c2)).add_(self.eps), value=-lr / c1)


class ImageSource(Protocol):
    """Anything with `images(indices) -> uint8 (B, H, W, 3)` (e.g. `SplitSource`)."""

    def images(self, indices: np.ndarray | slice) -> np.ndarray: ...


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning hyper-parameters (the stochastic-SSL protocol's values as defaults; epochs are the upper bound)."""

    epochs: int = 50
    patience: int = 5
    min_steps: int = 0  # at least this many optimizer steps (see `finetune`); 0: exactly `epochs` passes
    batch_size: int = 256
    backbone_lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-5
    n_samples: int = 12  # Bayes-H only: samples of q(h) whose logits are averaged
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.n_samples < 1 or self.min_steps < 0:
            raise ValueError(f"fine-tuning needs epochs, patience, batch_size, n_samples >= 1, min_steps >= 0 "
                             f"(got {self})")


@dataclass
class FinetuneResult:
    """The fine-tuned encoder and head at the best validation epoch, and the run's history."""

    encoder: Encoder
    head: nn.Linear
    best_epoch: int  # 1-based epoch (pass over the subset) whose weights are kept
    epochs_run: int  # passes over the labelled subset
    val_top1: list[float]  # per validation round, fraction in [0, 1]
    steps_run: int = 0  # optimizer steps


def to_float_images(batch: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1] on `device` (the `Encoder` input contract).

    On CPU the conversion is one NumPy pass (transpose + divide into a preallocated array): NumPy runs it on one
    thread, whereas torch's element-wise kernels use every intra-op thread and, on a machine whose cores are shared
    with other jobs, can take ~30x longer waiting for a descheduled thread (measured: 35 ms vs 0.8 ms per 256
    images of 32 px). On a GPU the uint8 batch is sent as is (4x less transfer) and converted there.
    """
    dev = torch.device(device)
    if dev.type != "cpu":
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev, non_blocking=True)
        return x.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    out = np.empty((batch.shape[0], batch.shape[3], batch.shape[1], batch.shape[2]), np.float32)
    np.divide(batch.transpose(0, 3, 1, 2), np.float32(255.0), out=out)
    return torch.from_numpy(out)


def classify(encoder: Encoder, head: nn.Module, x: torch.Tensor, n_samples: int,
             generator: torch.Generator | None) -> torch.Tensor:
    """Logits of `head` on the encoder's representation; Bayes-H: mean over `n_samples` draws of q(h).

    Deterministic and Bayes-Z encoders: the representation is h (`Encoder.features`; the Bayes-Z projector is not
    run). Bayes-H: the draws of q(h) = N(mu, diag(exp(logvar))).
    """
    if encoder.spec.stochastic_space != "h":
        return head(encoder.features(x))
    out = encoder(x)
    assert out.mu is not None and out.logvar is not None
    draws = rsample(out.mu, out.logvar, n_samples, generator=generator)  # (M, B, D)
    return head(draws).mean(0)


def predict(encoder: Encoder, head: nn.Module, source: ImageSource, indices: np.ndarray, *, batch_size: int,
            n_samples: int, seed: int, device: str = "cpu") -> np.ndarray:
    """Predicted labels of the images `indices` of `source` (eval mode, inference mode, fixed sampling seed)."""
    dev = torch.device(device)
    encoder.eval()
    head.eval()
    gen = torch.Generator(device=dev).manual_seed(seed)
    preds = []
    with torch.inference_mode():
        for i in range(0, len(indices), batch_size):
            x = to_float_images(source.images(indices[i : i + batch_size]), dev)
            preds.append(classify(encoder, head, x, n_samples, gen).argmax(1).cpu())
    return torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)


def finetune(
    encoder: Encoder,
    source: ImageSource,
    train_idx: np.ndarray,
    train_labels: np.ndarray,
    val_source: ImageSource,
    val_idx: np.ndarray,
    val_labels: np.ndarray,
    *,
    num_classes: int,
    cfg: FinetuneConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of `encoder` + a new linear head on `source[train_idx]`; early-stop on the validation set.

    Args:
        encoder: the pretrained encoder (not modified: a deep copy is trained).
        source, train_idx, train_labels: the labelled subset (rows of the train split and their labels).
        val_source, val_idx, val_labels: the validation images used for early stopping.
        cfg: hyper-parameters; `cfg.epochs` is the maximum number of validation rounds (and of passes over the
            subset, unless `cfg.min_steps` asks for more).
        on_epoch: called with (epoch, validation top-1 as a fraction) after each round (progress reporting).

    A subset of a few batches gives few optimizer steps per pass: 40 images in batches of 32 are 2 steps, so 2
    epochs of the 1 % subset train the new head for 4 steps and leave it at chance. `cfg.min_steps` lengthens such
    a run to at least that many steps by making each validation round several passes (the same number each), so that
    the cost of validating, and the early-stopping patience counted in rounds, do not grow with it. With
    `min_steps=0` every round is one pass: the protocol's epochs.
    Returns:
        `FinetuneResult` holding the weights of the best validation epoch (first best on ties).
    """
    if len(train_idx) == 0 or len(train_idx) != len(train_labels):
        raise ValueError("fine-tuning needs a non-empty labelled subset with one label per image")
    dev = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    sample_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    # NHWC convolution weights, as the pretrain and embed stages run: 1.2-1.5x faster convolutions and pooling here
    model = copy.deepcopy(encoder).to(dev).to(memory_format=torch.channels_last)
    head = nn.Linear(model.embedding_dim, num_classes).to(dev)
    with torch.no_grad():
        head.weight.copy_(torch.empty(head.weight.shape).normal_(0, 0.01, generator=gen))
        head.bias.zero_()
    opt = AdamW([(list(model.parameters()), cfg.backbone_lr), (list(head.parameters()), cfg.head_lr)],
                weight_decay=cfg.weight_decay)
    per_pass = -(-len(train_idx) // cfg.batch_size)
    passes = max(cfg.epochs, -(-cfg.min_steps // per_pass))
    rounds = min(cfg.epochs, passes)
    per_round = -(-passes // rounds)
    steps = rounds * per_round * per_pass
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    val_true = np.asarray(val_labels)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()), copy.deepcopy(head.state_dict()))
    history: list[float] = []
    for round_ in range(1, rounds + 1):
        model.train()
        head.train()
        for _ in range(per_round):
            order = torch.randperm(len(train_idx), generator=gen).numpy()
            for i in range(0, len(order), cfg.batch_size):
                rows = order[i : i + cfg.batch_size]
                rows = rows[np.argsort(train_idx[rows], kind="stable")]  # increasing image rows: sequential reads
                x = to_float_images(source.images(train_idx[rows]), dev)
                y = labels[rows].to(dev)
                loss = F.cross_entropy(classify(model, head, x, cfg.n_samples, sample_gen), y)
                opt.zero_grad()
                loss.backward()
                opt.step(0.5 * (1.0 + math.cos(math.pi * opt.steps / steps)))  # cosine to 0, per step
        epoch = round_ * per_round
        pred = predict(model, head, val_source, val_idx, batch_size=max(cfg.batch_size, EVAL_BATCH),
                       n_samples=cfg.n_samples, seed=cfg.seed, device=cfg.device)
        top1 = float(np.mean(pred == val_true))
        history.append(top1)
        if on_epoch is not None:
            on_epoch(epoch, top1)
        if top1 > best[0]:
            best = (top1, epoch, copy.deepcopy(model.state_dict()), copy.deepcopy(head.state_dict()))
        elif round_ - best[1] // per_round >= cfg.patience:
            break
    model.load_state_dict(best[2])
    head.load_state_dict(best[3])
    return FinetuneResult(model.eval(), head.eval(), best_epoch=best[1], epochs_run=len(history) * per_round,
                          val_top1=history, steps_run=opt.steps)
