"""How fast a method learns on the prepared data: its linear-probe accuracy every N optimizer steps.

    python benchmarks/calibrate.py simclr --steps 372 --every 124 [hydra overrides of the pretrain config ...]
    python benchmarks/calibrate.py simclr --steps 500 --total 1500 pretrain.views.min_scale=0.3

Used to calibrate the embedded default (docs/calibration.md). The method is built and trained exactly as the
pretrain stage builds and trains it (encoder spec, views reseeded per step from `--seed` as the stage does from
`study.seed`, method hooks, NHWC weights when `pretrain.channels_last`, and the stage's own optimizer and schedule,
`SSLMethod.optimizer_and_schedule`: weight decay on weights only, warm-up over `optim.warmup_epochs` epochs, cosine
decay over `--total` steps, default `--steps`), but by a plain loop, without Lightning or checkpoints, so that the
encoder can be probed mid-run: a scikit-learn logistic regression (C = 0.1) on the standardised downstream
embeddings (what `embed` writes: mu for Bayes-H, backbone features otherwise) of the train split, scored on the val
split (never test); the loss printed is the mean SSL loss of the steps since the last probe. The online probe is not
trained (it never reaches the encoder). Needs `dvc repro prepare` first.
"""

from __future__ import annotations

import argparse
import math
import time
from types import SimpleNamespace
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_module
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from sslbench.accel import prepare_module
from sslbench.data.splits import open_split
from sslbench.methods.base import NonFiniteLossError, OptimConfig
from sslbench.training.config import build_method


class _Clock:
    """The step counter that the methods' schedules read through `global_step` / `current_epoch`."""

    step = 0
    per_epoch = 1


def _patch_lightning_clock() -> None:
    # outside a Trainer, LightningModule.global_step is 0; the methods' EMA and temperature schedules need the step
    L.LightningModule.global_step = property(lambda self: _Clock.step)  # type: ignore[assignment,method-assign]
    L.LightningModule.current_epoch = property(  # type: ignore[assignment,method-assign]
        lambda self: _Clock.step // _Clock.per_epoch)


def warmup_steps(optim: OptimConfig, per_epoch: int, total: int) -> int:
    """The stage's warm-up: `optim.warmup_epochs` epochs of `per_epoch` steps (at most `total` - 1)."""
    return min(total - 1, int(optim.warmup_epochs * per_epoch))


def attach_clock(module: Any, per_epoch: int, total: int) -> None:
    """Give `module` what its schedules read from a Trainer: steps per epoch, planned steps, the step counter."""
    _Clock.step, _Clock.per_epoch = 0, max(1, per_epoch)
    _patch_lightning_clock()
    module._trainer = SimpleNamespace(num_training_batches=_Clock.per_epoch, estimated_stepping_batches=total,
                                      max_epochs=max(1, math.ceil(total / _Clock.per_epoch)), global_rank=0)


def load_split(data: str, cfg: Any, split: str) -> tuple[torch.Tensor, np.ndarray]:
    """All uint8 images (N, H, W, 3) and labels of a split of the prepared dataset."""
    s = open_split(data, cfg.dataset.name, split)
    return torch.from_numpy(np.array(s.images(slice(None)))), np.asarray(s.labels)


def _features(module: Any, images: torch.Tensor) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        x = images.permute(0, 3, 1, 2).float().div(255)
        # the embedding the study's probe reads (mu for Bayes-H, the backbone features h otherwise)
        out = torch.cat([module.encoder(x[i : i + 500]).embedding for i in range(0, len(x), 500)]).numpy()
    module.train()
    return out


def probe(module: Any, train: tuple[torch.Tensor, np.ndarray], val: tuple[torch.Tensor, np.ndarray],
          max_iter: int = 300) -> float:
    """Val accuracy of a logistic regression (C = 0.1) on the standardised embeddings of `module.encoder`."""
    a, b = _features(module, train[0]), _features(module, val[0])
    scaler = StandardScaler().fit(a)
    clf = LogisticRegression(max_iter=max_iter, C=0.1).fit(scaler.transform(a), train[1])
    return float(clf.score(scaler.transform(b), val[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    parser.add_argument("--steps", type=int, default=372)
    parser.add_argument("--every", type=int, default=124)
    parser.add_argument("--total", type=int, default=0, help="steps of the lr schedule (default: --steps)")
    parser.add_argument("--data", default="data")
    parser.add_argument("--seed", type=int, default=0)
    args, overrides = parser.parse_known_args()
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfg = compose("pretrain", [f"method={args.method}", *overrides])
    torch.manual_seed(args.seed)
    batch = int(cfg.pretrain.batch_size)
    module = build_method(cfg)
    module.view_seed = args.seed  # the stage's per-step reseeding of the augmentations (study.seed there)
    prepare_module(module, channels_last=bool(cfg.pretrain.channels_last), compile_backend=None)
    train, val = load_split(args.data, cfg, cfg.dataset.train), load_split(args.data, cfg, cfg.dataset.val)
    total = args.total or args.steps
    per_epoch = len(train[1]) // batch
    attach_clock(module, per_epoch, total)
    opt, sched = module.optimizer_and_schedule(total, warmup_steps(module.optim, per_epoch, total))
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    losses: list[float] = []  # the SSL loss of each step since the last report (the report prints their mean)
    print(f"{args.method} step 0 probe {probe(module, train, val):.3f}", flush=True)
    while _Clock.step < args.steps:
        order = rng.permutation(len(train[1]))
        for k in range(0, len(order) - batch + 1, batch):
            idx = order[k : k + batch]
            loss = train_step(module, opt, sched, train[0][idx], torch.from_numpy(train[1][idx]))
            losses.append(loss)
            if _Clock.step % args.every == 0 or _Clock.step == args.steps:
                acc = probe(module, train, val)
                print(f"{args.method} step {_Clock.step} loss {np.mean(losses):.3f} probe {acc:.3f} "
                      f"t {time.perf_counter() - start:.0f}s", flush=True)
                losses.clear()
            if _Clock.step >= args.steps:
                break


def train_step(module: Any, opt: torch.optim.Optimizer, sched: Any, images: torch.Tensor,
               labels: torch.Tensor) -> float:
    """One optimizer step of the stage on a uint8 batch (B, H, W, 3), in the order of Lightning's loop: views (after
    the batch transfer), batch start hook, loss, backward, after-backward hook, step, scheduler step, batch end hook;
    advances the clock. Returns the SSL loss (a non-finite one stops, as the stage does)."""
    s = _Clock.step
    views, labels = module.on_after_batch_transfer((images, labels), 0)
    module.on_train_batch_start(None, s)
    out = module.loss_step(views, labels)
    if not torch.isfinite(out.loss):
        raise NonFiniteLossError(f"non-finite SSL loss {out.loss.item()} at step {s}")
    opt.zero_grad()
    out.loss.backward()
    module.on_after_backward()
    opt.step()
    sched.step()
    module.on_train_batch_end(None, None, s)
    _Clock.step += 1
    return float(out.loss.item())


if __name__ == "__main__":
    main()
