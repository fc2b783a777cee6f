"""Overhead of a full pretraining step over the bare backbone, per method, measured side by side in one process.

    python benchmarks/pretrain_overhead.py [--methods simclr,byol] [--batch-size 128] [--repeats 5] [overrides...]

For each method (default: every `conf/method/*.yaml` but random_init), on the same uint8 batch of shapes train
images (random images when the dataset is not prepared):
- full step: views (on_after_batch_transfer) + method hooks + `training_step` (SSL loss and online probe) + backward +
  optimizer and schedule step, as the pretrain stage runs it (without Lightning's own bookkeeping);
- bare backbone: forward + backward of the backbone alone over the same views (every view of the step, each
  resolution group in one call), i.e. the work a step cannot avoid.
ratio = images/s of the full step / images/s of the bare backbone (1.0 = no overhead); views/full = the share of the
full step spent drawing the views alone (timed alternately with the bare backbone), the part of the overhead that
the method's heads and loss do not explain. Full step and bare backbone are timed alternately,
`--repeats` times each after a warm-up, and the medians are compared, so that load from other processes affects both.
Extra arguments are Hydra overrides of the pretrain config (e.g. `backbone.width=16 dataset.image_size=24`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_module

from sslbench.accel import prepare_module
from sslbench.data.splits import open_split
from sslbench.training import config as training_config

CONF = Path(training_config.__file__).parents[1] / "conf" / "method"


def build(method: str, overrides: list[str], batch: int) -> tuple[Any, Any]:
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfg = compose("pretrain", [f"method={method}", f"pretrain.batch_size={batch}", *overrides])
    torch.manual_seed(0)
    return training_config.build_method(cfg), cfg


def batch_of(cfg: Any, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        source = open_split(cfg.paths.data, cfg.dataset.name, cfg.dataset.train)
        return torch.from_numpy(np.array(source.images(slice(0, batch)))), torch.from_numpy(source.labels[:batch])
    except Exception:  # dataset not prepared: random images of the configured size
        size = int(cfg.dataset.image_size)
        return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8), torch.randint(0, 10, (batch,))


def full_step_fn(module: Any, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One training step of `module` on the batch as the pretrain stage runs it, without Lightning's bookkeeping."""
    module.train()
    module._trainer = SimpleNamespace(estimated_stepping_batches=1000, max_epochs=10, global_step=0, global_rank=0,
                                      num_training_batches=100, current_epoch=0)
    module.log = lambda *args, **kwargs: None  # Lightning's logging is not part of the method's cost
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]

    def full_step() -> None:
        views, y = module.on_after_batch_transfer((images, labels), 0)
        module.on_train_batch_start((views, y), 0)
        loss = module.training_step((views, y), 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        module.on_after_backward()
        opt.step()
        sched.step()
        module.on_train_batch_end(None, (views, y), 0)

    return full_step


def measure(method: str, overrides: list[str], batch: int, repeats: int) -> dict[str, float]:
    module, cfg = build(method, overrides, batch)
    # the memory format the stage trains in (pretrain.channels_last), for both the full step and the bare backbone
    prepare_module(module, channels_last=bool(cfg.pretrain.channels_last), compile_backend=None)
    images, labels = batch_of(cfg, batch)
    full_step = full_step_fn(module, images, labels)

    float_images = images.permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        fixed_views = module.views(float_images)
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for v in fixed_views:
        groups.setdefault(tuple(v.shape[1:]), []).append(v)
    bare_inputs = [torch.cat(g) for g in groups.values()]

    def bare_step() -> None:
        module.encoder.zero_grad(set_to_none=True)
        for x in bare_inputs:
            module.encoder.features(x).sum().backward()

    def views_only() -> None:
        with torch.no_grad():
            module.views(float_images)

    full, bare = alternate(full_step, bare_step, repeats)
    views_s, _ = alternate(views_only, bare_step, repeats)
    return {"full_img_s": batch / full, "bare_img_s": batch / bare, "ratio": bare / full, "views": len(fixed_views),
            "views_share": views_s / full}


def alternate(a: Callable[[], None], b: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, timed alternately `repeats` times after a warm-up call of each, so that
    load from other processes affects both."""
    for fn in (a, b):
        fn()
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def parse_args(description: str) -> tuple[list[str], list[str], int, int]:
    """The benchmarks' shared command line: (methods, Hydra overrides, batch size, repeats); prints the set-up."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="", help="comma-separated; default: every method config")
    parser.add_argument("--batch-size", type=int, default=0, help="default: the pretrain config's batch_size")
    parser.add_argument("--repeats", type=int, default=5)
    args, overrides = parser.parse_known_args()
    methods = args.methods.split(",") if args.methods else sorted(
        p.stem for p in CONF.glob("*.yaml") if p.stem != "random_init")
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        batch = args.batch_size or int(compose("pretrain", overrides).pretrain.batch_size)
    print(f"batch {batch}, overrides {overrides or 'none'}, torch threads {torch.get_num_threads()}")
    return methods, overrides, batch, int(args.repeats)


def main() -> None:
    methods, overrides, batch, repeats = parse_args(__doc__ or "")
    print(f"{'method':<24}{'views':>6}{'full img/s':>12}{'backbone img/s':>16}{'ratio':>8}{'views/full':>12}")
    for method in methods:
        r = measure(method, overrides, batch, repeats)
        print(f"{method:<24}{r['views']:>6}{r['full_img_s']:>12.1f}{r['bare_img_s']:>16.1f}{r['ratio']:>8.2f}"
              f"{r['views_share']:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
