"""Linear probe on frozen, precomputed features, plus the accuracy metrics every probe reports.

Protocol (DISSL repo): one linear layer on non-augmented features, SGD lr 0.3, momentum 0.9, cosine schedule
(per step), batch 512, 100 epochs, one probe per weight decay in {1e-4, 1e-5, 1e-6}. **Decision** (the DISSL
paper reports the best candidate on test): the weight decay is *selected on a validation split* (never on test);
every candidate is kept so that callers can report the per-weight-decay test numbers too. Features are
standardised with the train mean and std.

Memory and speed (why this is hand-written rather than an `sklearn` estimator or a Lightning loop): the table may
be ImageNet-sized (1.28M x 2048 float32 = 9.8 GiB), so
- the features are never copied: mean/std are computed in chunks and each mini-batch is gathered from the caller's
  array and standardised on the fly;
- the weight-decay candidates are trained *together* as one stacked weight (K, C, D): each mini-batch is gathered
  once and fed to all K probes. Their losses are summed, so each probe receives exactly the gradient it would get
  alone; weight decay is added per probe to the gradient.
- the gradient of the cross-entropy of a linear layer is written out (softmax - onehot) and the update is
  `torch.optim.SGD`'s (momentum 0.9, dampening 0, L2 weight decay added to the gradient) with the closed-form
  cosine schedule of `CosineAnnealingLR` (eta_min 0) per step. Hand-written because constructing any
  `torch.optim` optimizer imports `torch._dynamo` (2-4 s per evaluation process on the target machine, x 15
  methods x 3 evaluation stages), and the closed form skips autograd's per-step overhead. Tests check the update
  against autograd + `torch.optim.SGD`.
Peak memory is therefore the table plus O(batch x D + K x C x D) (measured in `benchmarks/probe_memory.py`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from sslbench.io import Embeddings

Array = np.ndarray | torch.Tensor


def as_float32(x: Array) -> torch.Tensor:
    """A float32 CPU tensor view of `x` (no copy when `x` already is float32 and C-contiguous)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32)
    array = np.ascontiguousarray(x, dtype=np.float32)
    with warnings.catch_warnings():  # read-only arrays (memory maps, Arrow buffers) are only ever read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _chunk_rows(n_cols: int, budget_floats: int = 1 << 22) -> int:
    return max(1, budget_floats // max(1, n_cols))


def feature_stats(x: Array) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and unbiased std of `x` (N, D), in float64 chunks (two passes, no copy of `x`)."""
    xt = as_float32(x)
    n = len(xt)
    if n == 0:
        raise ValueError("cannot standardise an empty feature table")
    step = _chunk_rows(xt.shape[1])
    total = torch.zeros(xt.shape[1], dtype=torch.float64)
    for i in range(0, n, step):
        total += xt[i : i + step].sum(0, dtype=torch.float64)
    mean = total / n
    sq = torch.zeros_like(mean)
    for i in range(0, n, step):
        sq += (xt[i : i + step].double() - mean).pow(2).sum(0)
    std = (sq / max(1, n - 1)).sqrt()
    return mean.float(), std.float().clamp_min(1e-6)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Micro top-1 accuracy, a fraction in [0, 1]: mean(pred == label)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(pred == labels))


def macro_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Macro accuracy, a fraction in [0, 1]: the mean over the classes present in `labels` of each class's recall.

    Equals `sklearn.metrics.balanced_accuracy_score` (tested); hand-written because importing
    `sklearn.metrics` costs ~2 s per evaluation process on the target machine.
    """
    pred, labels = np.asarray(pred), np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) == 0:
        return float("nan")
    recalls = [np.mean(pred[labels == c] == c) for c in classes]
    return float(np.mean(recalls))


@dataclass
class LinearProbe:
    """A trained linear classifier on standardised features.

    `logits(x)` applies the stored feature standardisation (train mean/std) and the linear layer, in chunks.
    """

    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    weight_decay: float
    val_top1: dict[float, float] = field(default_factory=dict)  # weight decay -> validation top-1 (fraction)
    candidates: dict[float, LinearProbe] = field(default_factory=dict)

    def logits(self, x: Array, chunk: int = 0) -> np.ndarray:
        """Logits (N, C) of features `x` (N, D), standardised in chunks of `chunk` rows (0: ~4M values each)."""
        xt = as_float32(x)
        step = chunk or _chunk_rows(xt.shape[1])
        out = [((xt[i : i + step] - self.mean) / self.std) @ self.weight.T + self.bias
               for i in range(0, len(xt), step)]
        if not out:
            return np.zeros((0, len(self.bias)), np.float32)
        return torch.cat(out).numpy()

    def predict(self, x: Array) -> np.ndarray:
        return self.logits(x).argmax(1)

    def as_module(self) -> nn.Linear:
        """The probe as an `nn.Linear` on *raw* features (standardisation folded into the weights)."""
        layer = nn.Linear(self.weight.shape[1], self.weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(self.weight / self.std)
            layer.bias.copy_(self.bias - (self.weight / self.std) @ self.mean)
        return layer


def sampled_logits(
    probe: LinearProbe,
    mu: Array,
    logvar: Array,
    *,
    n_samples: int,
    seed: int,
    normalize: bool = False,
    chunk_floats: int = 1 << 24,
) -> np.ndarray:
    """Bayes-H evaluation (as in the stochastic-SSL reference): the probe applied to each of `n_samples` draws of
    q(h) = N(mu, diag(exp(logvar))) and the logits averaged over the draws.

    The draws come from a generator seeded with `seed`, so the result is reproducible; rows are processed in chunks
    of at most `chunk_floats` sampled values. `normalize` L2-normalises each draw (for probes trained on
    L2-normalised features).
    """
    from sslbench.models.stochastic import rsample

    mu_t, logvar_t = as_float32(mu), as_float32(logvar)
    if mu_t.shape != logvar_t.shape:
        raise ValueError(f"mu {tuple(mu_t.shape)} and logvar {tuple(logvar_t.shape)} must have the same shape")
    gen = torch.Generator().manual_seed(seed)
    step = max(1, chunk_floats // max(1, n_samples * mu_t.shape[1]))
    out = np.zeros((len(mu_t), len(probe.bias)), np.float32)
    for i in range(0, len(mu_t), step):
        draws = rsample(mu_t[i : i + step], logvar_t[i : i + step], n_samples, generator=gen)  # (M, B, D)
        if normalize:
            draws = F.normalize(draws, dim=-1)
        logits = probe.logits(draws.reshape(-1, draws.shape[-1])).reshape(n_samples, -1, len(probe.bias))
        out[i : i + step] = logits.mean(0)
    return out


def _cross_entropy_grads(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of sum_k mean_b CE(x_b W_k^T + b_k, y_b) for K stacked probes (weight (K*C, D), bias (K*C,)).

    d CE / d logits = softmax(logits) - onehot(y), divided by the batch size for the mean.
    """
    n = len(x)
    logits = torch.addmm(bias, x, weight.T).reshape(n, k, -1)  # (B, K, C)
    delta = torch.softmax(logits, dim=-1).sub_(F.one_hot(y, logits.shape[-1]).unsqueeze(1))
    delta = delta.reshape(n, -1).div_(n)
    return delta.T @ x, delta.sum(0)


def _standardised_rows(x: torch.Tensor, idx: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                       device: torch.device) -> torch.Tensor:
    """(x[idx] - mean) / std as a new float32 tensor, computed with NumPy on CPU.

    One gathered copy standardised in place (torch would allocate twice more), on one thread: torch splits these
    small element-wise passes over every intra-op thread, which on a machine whose cores are shared with other jobs
    waits for descheduled threads. Measured per step of 512 x 256 on the 2-core test machine, 1 thread: 2.4 ms ->
    1.3 ms.
    """
    rows = x.numpy()[idx.numpy()]
    rows -= mean.numpy()
    rows /= std.numpy()
    return torch.from_numpy(rows)


def _sgd_momentum_(param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, lr: float, momentum: float = 0.9
                   ) -> None:
    """In place: buf = momentum * buf + grad; param -= lr * buf (`torch.optim.SGD`, dampening 0, no Nesterov)."""
    buf.mul_(momentum).add_(grad)
    param.sub_(buf, alpha=lr)


def train_linear_probe(
    train_x: Array,
    train_y: np.ndarray,
    val_x: Array,
    val_y: np.ndarray,
    *,
    num_classes: int,
    weight_decays: Sequence[float] = (1e-4, 1e-5, 1e-6),
    epochs: int = 100,
    lr: float = 0.3,
    batch_size: int = 512,
    seed: int = 0,
    device: str = "cpu",
) -> LinearProbe:
    """Train one probe per weight decay; return the one with the best validation top-1 (ties: first in the grid).

    Args:
        train_x, val_x: features (N, D); float32 NumPy arrays are used in place (never copied).
        train_y, val_y: integer labels (N,) in [0, num_classes).
        weight_decays: the grid of L2 penalties (the DISSL protocol's: 1e-4, 1e-5, 1e-6).
        epochs, lr, batch_size: SGD (momentum 0.9) with a per-step cosine schedule from `lr` to 0.
        seed: initialisation (N(0, 0.01) weights, zero bias; identical for every candidate) and batch order.
        device: where the mini-batches and weights live (`cpu`, `cuda`); the table stays in host memory.
    Returns:
        The selected `LinearProbe`; its `.candidates` holds every weight decay's probe and `.val_top1` their
        validation accuracies (fractions in [0, 1]).
    Raises:
        ValueError: on empty inputs, labels outside [0, num_classes) or an empty weight-decay grid.
    """
    xt = as_float32(train_x)
    yt = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    if len(xt) == 0 or len(val_x) == 0:
        raise ValueError("the linear probe needs non-empty train and validation sets")
    if len(yt) != len(xt) or xt.ndim != 2:
        raise ValueError(f"train features {tuple(xt.shape)} and labels {tuple(yt.shape)} do not match")
    if int(yt.min()) < 0 or int(yt.max()) >= num_classes:
        raise ValueError(f"train labels must lie in [0, {num_classes}), got [{int(yt.min())}, {int(yt.max())}]")
    wds = [float(wd) for wd in weight_decays]
    if not wds or epochs < 1 or batch_size < 1:
        raise ValueError("need at least one weight decay, epochs >= 1 and batch_size >= 1")
    dev = torch.device(device)
    mean, std = feature_stats(xt)
    gen = torch.Generator().manual_seed(seed)
    k, c, d = len(wds), num_classes, xt.shape[1]
    init = torch.empty(c, d).normal_(0, 0.01, generator=gen)
    weight = init.reshape(1, c * d).repeat(k, 1).reshape(k * c, d).to(dev)  # K stacked (C, D) probes
    bias = torch.zeros(k * c, device=dev)
    decay = torch.tensor(wds, device=dev).repeat_interleave(c)  # (K*C,) each probe's weight decay
    momentum_w, momentum_b = torch.zeros_like(weight), torch.zeros_like(bias)
    steps = epochs * -(-len(xt) // batch_size)
    mean_d, std_d = mean.to(dev), std.to(dev)
    on_cpu = dev.type == "cpu"
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = order[i : i + batch_size]
            xb = _standardised_rows(xt, idx, mean, std, dev) if on_cpu else (
                (xt.index_select(0, idx).to(dev, non_blocking=True) - mean_d) / std_d)
            yb = yt[idx].to(dev, non_blocking=True)
            grad_w, grad_b = _cross_entropy_grads(xb, yb, weight, bias, k)
            lr_now = 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))  # cosine to 0, per step
            _sgd_momentum_(weight, grad_w.add_(weight * decay[:, None]), momentum_w, lr_now)
            _sgd_momentum_(bias, grad_b.add_(bias * decay), momentum_b, lr_now)
            step += 1
    weight, bias = weight.reshape(k, c, d).cpu(), bias.reshape(k, c).cpu()
    candidates: dict[float, LinearProbe] = {}
    val_top1: dict[float, float] = {}
    val_labels = np.asarray(val_y)
    for j, wd in enumerate(wds):
        probe = LinearProbe(weight[j].clone(), bias[j].clone(), mean, std, wd)
        candidates[wd] = probe
        val_top1[wd] = float(np.mean(probe.predict(val_x) == val_labels))
    best = max(val_top1, key=lambda wd: (val_top1[wd], -wds.index(wd)))
    chosen = candidates[best]
    chosen.val_top1 = val_top1
    chosen.candidates = candidates
    return chosen


# ----------------------------------------------------------------------------------------------- on embedding tables


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def logits_of(probe: LinearProbe, table: Embeddings, n_samples: int, seed: int, normalize: bool = False
              ) -> np.ndarray:
    """The probe's logits on an embedding table. Bayes-H tables (`stochastic_space == 'h'`): the logits averaged
    over `n_samples` draws of q(h) (`sampled_logits`, seeded with `seed`); the probe itself is trained on mu."""
    if table.meta["stochastic_space"] != "h":
        return probe.logits(l2_normalize(table.embedding) if normalize else table.embedding)
    assert table.mu is not None and table.logvar is not None
    return sampled_logits(probe, table.mu, table.logvar, n_samples=n_samples, seed=seed, normalize=normalize)


def linear_test_metrics(probe: LinearProbe, test: Embeddings, *, n_samples: int, seed: int, normalize: bool = False
                        ) -> dict[str, float]:
    """Test metrics (fractions) of a probe from `train_linear_probe`: `top1_wd<wd>` of every weight-decay
    candidate, `top1` and `macro_acc` of the selected one, its `weight_decay` and `val_top1`."""
    out: dict[str, float] = {}
    for wd, candidate in probe.candidates.items():
        pred = logits_of(candidate, test, n_samples, seed, normalize).argmax(1)
        out[f"top1_wd{wd:.0e}"] = accuracy(pred, test.label)
        if candidate is probe:
            out["top1"] = out[f"top1_wd{wd:.0e}"]
            out["macro_acc"] = macro_accuracy(pred, test.label)
    out["weight_decay"] = probe.weight_decay
    out["val_top1"] = probe.val_top1[probe.weight_decay]
    return out


def linear_eval(
    train: Embeddings, val: Embeddings, test: Embeddings, *, num_classes: int, linear: dict[str, Any], seed: int,
    device: str, n_samples: int, normalize: bool = False,
) -> tuple[LinearProbe, dict[str, float]]:
    """Train the probe on `train` (weight decay selected on `val`; `linear`: the keyword arguments of
    `train_linear_probe`) and return it with its test metrics (`linear_test_metrics`). `normalize` L2-normalises
    the features (the transfer protocol)."""
    def feats(t: Embeddings) -> np.ndarray:
        return l2_normalize(t.embedding) if normalize else t.embedding

    probe = train_linear_probe(feats(train), train.label, feats(val), val.label, num_classes=num_classes,
                               seed=seed, device=device, **linear)
    return probe, linear_test_metrics(probe, test, n_samples=n_samples, seed=seed, normalize=normalize)
