"""Linear probe on frozen, precomputed features (REFERENCE.md §2.1).

One linear layer trained with SGD (momentum 0.9, cosine schedule) on non-augmented features, for each weight
decay of a small grid; the weight decay is **selected on a validation split** (never on test) and the selected
probe is returned together with every candidate's validation accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class LinearProbe:
    """A trained linear classifier on standardised features.

    `logits(x)` applies the stored feature standardisation (train mean/std) and the linear layer.
    """

    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    weight_decay: float
    val_top1: dict[float, float] = field(default_factory=dict)  # weight decay -> validation top-1 of each candidate
    candidates: dict[float, LinearProbe] = field(default_factory=dict)

    def logits(self, x: np.ndarray | torch.Tensor, chunk: int = 65536) -> np.ndarray:
        out = []
        for i in range(0, len(x), chunk):
            xb = torch.as_tensor(np.asarray(x[i : i + chunk]), dtype=torch.float32)
            out.append(((xb - self.mean) / self.std) @ self.weight.T + self.bias)
        if not out:
            return np.zeros((0, len(self.bias)), np.float32)
        return torch.cat(out).numpy()

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.logits(x).argmax(1)

    def as_module(self) -> nn.Linear:
        """The probe as an `nn.Linear` on *standardised* features (for Grad-CAM etc.)."""
        layer = nn.Linear(self.weight.shape[1], self.weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(self.weight / self.std)
            layer.bias.copy_(self.bias - (self.weight / self.std) @ self.mean)
        return layer


def _fit_one(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    layer = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=gen)
        layer.bias.zero_()
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(x) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(layer(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return layer.weight.detach().clone(), layer.bias.detach().clone()


def train_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    num_classes: int,
    weight_decays: Sequence[float] = (1e-4, 1e-5, 1e-6),
    epochs: int = 100,
    lr: float = 0.3,
    batch_size: int = 512,
    seed: int = 0,
) -> LinearProbe:
    """Train one probe per weight decay; return the one with the best validation top-1 (ties: first in the grid).

    Features are standardised with the train mean/std (stored in the probe). Deterministic for a given seed.
    """
    if len(train_x) == 0 or len(val_x) == 0:
        raise ValueError("the linear probe needs non-empty train and validation sets")
    xt = torch.as_tensor(np.asarray(train_x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-6)
    xt = (xt - mean) / std
    candidates: dict[float, LinearProbe] = {}
    val_top1: dict[float, float] = {}
    for wd in weight_decays:
        w, b = _fit_one(xt, yt, num_classes, float(wd), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        probe = LinearProbe(w, b, mean, std, float(wd))
        candidates[float(wd)] = probe
        val_top1[float(wd)] = float((probe.predict(val_x) == np.asarray(val_y)).mean())
    best = max(val_top1, key=lambda wd: (val_top1[wd], -list(val_top1).index(wd)))
    chosen = candidates[best]
    chosen.val_top1 = val_top1
    chosen.candidates = candidates
    return chosen
