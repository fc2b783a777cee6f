"""NHWC (channels_last) against NCHW convolutions on this machine, side by side in one process.

    python benchmarks/memory_format.py [--methods supervised,simclr] [--repeats 5] [hydra overrides ...]

Why `pretrain.channels_last` is on by default on CPU and the embed stage always embeds in NHWC. Per method, on the
same uint8 batch (the shapes train images, random ones when the dataset is not prepared):
- training step: the pretrain stage's full step (views, method hooks, loss, backward, optimizer; as
  benchmarks/pretrain_overhead.py) of two copies of the same initial model, one NCHW and one with
  `sslbench.accel.prepare_module(channels_last=True)`, timed alternately;
- embedding: the eval-mode encoder forward on 256 images (`torch.inference_mode`), NCHW vs NHWC.
speed-up = NCHW time / NHWC time (> 1: NHWC faster), medians over `--repeats`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from pretrain_overhead import alternate, batch_of, build, full_step_fn, parse_args

from sslbench.accel import prepare_module


def measure(method: str, overrides: list[str], batch: int, repeats: int) -> tuple[float, float]:
    nchw, cfg = build(method, [*overrides, "pretrain.channels_last=false"], batch)
    nhwc = copy.deepcopy(nchw)
    prepare_module(nhwc, channels_last=True, compile_backend=None)
    images, labels = batch_of(cfg, batch)
    t_nchw, t_nhwc = alternate(full_step_fn(nchw, images, labels), full_step_fn(nhwc, images, labels), repeats)
    train = t_nchw / t_nhwc

    x = torch.rand(256, 3, int(cfg.dataset.image_size), int(cfg.dataset.image_size))
    enc_a = copy.deepcopy(nchw.encoder).eval()
    enc_b = copy.deepcopy(nchw.encoder).eval().to(memory_format=torch.channels_last)

    def forward(encoder: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                encoder(x)
        return run

    e_nchw, e_nhwc = alternate(forward(enc_a), forward(enc_b), repeats)
    return train, e_nchw / e_nhwc


def main() -> None:
    methods, overrides, batch, repeats = parse_args(__doc__ or "")
    print(f"{'method':<24}{'train step NHWC speed-up':>26}{'embed forward NHWC speed-up':>30}")
    for method in methods:
        train, embed = measure(method, overrides, batch, repeats)
        print(f"{method:<24}{train:>26.2f}{embed:>30.2f}", flush=True)


if __name__ == "__main__":
    main()
