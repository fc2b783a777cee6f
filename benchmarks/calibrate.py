"""How fast a method learns on the prepared data: its linear-probe accuracy every N optimizer steps.

    python benchmarks/calibrate.py simclr --steps 372 --every 124 [hydra overrides of the pretrain config ...]
    python benchmarks/calibrate.py simclr --steps 500 --total 1500 pretrain.views.min_scale=0.3

Used to calibrate the embedded default (docs/calibration.md). The method is built exactly as the pretrain stage
builds it (encoder spec, views, optimizer config, method hooks) but trained by a plain loop, without Lightning or
checkpoints, so that the encoder can be probed mid-run: a scikit-learn logistic regression (C = 0.1) on the
standardised downstream embeddings (what `embed` writes: mu for Bayes-H, backbone features otherwise) of the train
split, scored on the val split (never test); the loss printed is the mean SSL loss of the steps since the last probe.
Warm-up + cosine over `--total` steps (default `--steps`), SGD or AdamW as configured, lr scaled by batch / 256.
Needs `dvc repro prepare` first.
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

from sslbench.data.splits import open_split
from sslbench.training.config import build_method, optim_config


class _Clock:
    """The step counter that the methods' schedules read through `global_step` / `current_epoch`."""

    step = 0
    per_epoch = 1


def _patch_lightning_clock() -> None:
    # outside a Trainer, LightningModule.global_step is 0; the methods' EMA and temperature schedules need the step
    L.LightningModule.global_step = property(lambda self: _Clock.step)  # type: ignore[assignment,method-assign]
    L.LightningModule.current_epoch = property(  # type: ignore[assignment,method-assign]
        lambda self: _Clock.step // _Clock.per_epoch)


def _features(module: Any, images: torch.Tensor) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        x = images.permute(0, 3, 1, 2).float().div(255)
        # the embedding the study's probe reads (mu for Bayes-H, the backbone features h otherwise)
        out = torch.cat([module.encoder(x[i : i + 500]).embedding for i in range(0, len(x), 500)]).numpy()
    module.train()
    return out


def probe(module: Any, train: tuple[torch.Tensor, np.ndarray], val: tuple[torch.Tensor, np.ndarray]) -> float:
    a, b = _features(module, train[0]), _features(module, val[0])
    scaler = StandardScaler().fit(a)
    clf = LogisticRegression(max_iter=300, C=0.1).fit(scaler.transform(a), train[1])
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
    optim = optim_config(cfg)
    module = build_method(cfg)
    tr = open_split(args.data, cfg.dataset.name, cfg.dataset.train)
    va = open_split(args.data, cfg.dataset.name, cfg.dataset.val)
    train = (torch.from_numpy(np.array(tr.images(slice(None)))), tr.labels)
    val = (torch.from_numpy(np.array(va.images(slice(None)))), va.labels)
    total = args.total or args.steps
    _Clock.per_epoch = max(1, len(tr) // batch)
    _patch_lightning_clock()
    module._trainer = SimpleNamespace(num_training_batches=_Clock.per_epoch, estimated_stepping_batches=total)
    params = [p for n, p in module.named_parameters() if not n.startswith("online_probe") and p.requires_grad]
    lr = optim.lr * batch / 256
    opt: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
        if optim.name == "sgd" else torch.optim.AdamW(params, lr=lr, weight_decay=optim.weight_decay))
    warmup = total // 6
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    losses: list[float] = []  # the SSL loss of each step since the last report (the report prints their mean)
    print(f"{args.method} step 0 probe {probe(module, train, val):.3f}", flush=True)
    while _Clock.step < args.steps:
        order = rng.permutation(len(tr))
        for k in range(0, len(order) - batch + 1, batch):
            idx = order[k : k + batch]
            module.on_train_batch_start(None, _Clock.step)
            with torch.no_grad():
                views = module.views(train[0][idx].permute(0, 3, 1, 2).float().div(255))
            out = module.loss_step(views, torch.from_numpy(train[1][idx]))
            s = _Clock.step
            progress = (s - warmup) / max(1, total - warmup)
            factor = (s + 1) / (warmup + 1) if s < warmup else 0.5 * (1 + math.cos(math.pi * progress))
            for group in opt.param_groups:
                group["lr"] = lr * factor
            opt.zero_grad()
            out.loss.backward()
            module.on_after_backward()
            opt.step()
            losses.append(out.loss.item())
            module.on_train_batch_end(None, None, s)
            _Clock.step += 1
            if _Clock.step % args.every == 0 or _Clock.step == args.steps:
                acc = probe(module, train, val)
                print(f"{args.method} step {_Clock.step} loss {np.mean(losses):.3f} probe {acc:.3f} "
                      f"t {time.perf_counter() - start:.0f}s", flush=True)
                losses.clear()
            if _Clock.step >= args.steps:
                break


if __name__ == "__main__":
    main()
