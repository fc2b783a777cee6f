"""Per-op cost of one augmented view, and the hand-written grayscale / solarize against kornia's, side by side.

    python benchmarks/view_ops.py [--batch 32] [--repeats 5]

Times each op of a BYOL-style view pipeline (`sslbench.data.views.ViewTransform`: crop + flip, colour jitter,
grayscale, solarize; no blur, as the study) on a batch of 32-px images, then kornia's `RandomGrayscale` and
`RandomSolarize` against ours at the same probabilities, alternately; prints medians in ms per call and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import kornia.augmentation as K
import torch

from sslbench.data.views import Grayscale, Solarize, ViewTransform


def per_call_ms(fn: Callable[[], object], calls: int = 50) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32)
    view = ViewTransform(crop_size=32, min_scale=0.3, cj_strength=0.5, blur_prob=0.0, solarize_prob=0.2)
    pairs = {
        "grayscale": (Grayscale(0.2), K.RandomGrayscale(p=0.2)),
        "solarize": (Solarize(0.2), K.RandomSolarize(thresholds=0.0, additions=0.0, p=0.2)),
    }
    timings: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for op in view.ops:
            timings.setdefault(type(op).__name__, []).append(per_call_ms(lambda op=op: op(x)))
        timings.setdefault("whole view", []).append(per_call_ms(lambda: view(x)))
        for name, (ours, theirs) in pairs.items():
            timings.setdefault(f"{name} ours", []).append(per_call_ms(lambda op=ours: op(x)))
            timings.setdefault(f"{name} kornia", []).append(per_call_ms(lambda op=theirs: op(x)))
    med = {k: statistics.median(v) for k, v in timings.items()}
    print(f"batch {args.batch}, 32 px, torch threads {torch.get_num_threads()}; ms per call (median of {args.repeats})")
    for name, ms in med.items():
        print(f"{name:20s} {ms:7.3f}")
    for name in pairs:
        print(f"{name}: kornia / ours = {med[f'{name} kornia'] / med[f'{name} ours']:.1f}x")


if __name__ == "__main__":
    main()
