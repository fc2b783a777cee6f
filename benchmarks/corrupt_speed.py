"""Throughput of the corrupt stage's generator vs a plain single-process loop of `imagecorruptions.corrupt` calls.

    python benchmarks/corrupt_speed.py --n 100 --workers 2

Both sides corrupt the same generated `shapes` test images (32 px) under the same corruptions and severities, one
after the other in this process, after glass_blur's numba kernel is compiled (or loaded) for both. The generator
(`sslbench.data.corruptions.generate_corrupted`) seeds every image, restores the global RNG, decodes frost's
packaged images once per process and runs `--workers` processes (timed with its pool start-up, and once more in
one process). The baseline calls `corrupt(image, severity, corruption_name)` per image, unseeded, on the library
as shipped. Prints images/s of each and their ratios. On a machine shared with other jobs, the ratios are what to
read, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="images per (corruption, severity) set")
    parser.add_argument("--workers", type=int, default=2, help="processes of the generator")
    parser.add_argument("--corruptions", default="all", help="all, common, a group or a name")
    parser.add_argument("--severities", default="all", help="all or one severity")
    args = parser.parse_args()

    import cv2
    from imagecorruptions import corrupt, corruptions

    from sslbench.data import corruptions as C
    from sslbench.data.shapes import SHAPES, generate

    images, _ = generate(0, {"test": args.n}, list(SHAPES)[:10], 32)["test"]
    index = np.arange(args.n)
    names = C.resolve_corruptions(args.corruptions)
    severities = C.resolve_severities(args.severities if args.severities == "all" else int(args.severities))
    total = args.n * len(names) * len(severities)
    C.corrupt_image(images[0], "glass_blur", 1, 0)  # numba kernel: compile or load, both signatures
    C.corrupt_image(images[0], "glass_blur", 3, 0)

    # the baseline is the library as shipped: without the stage's read-once frost images
    patched, corruptions.cv2 = corruptions.cv2, cv2
    try:
        start = time.perf_counter()
        for name in names:
            for severity in severities:
                for image in images:
                    corrupt(image, severity=severity, corruption_name=name)
        baseline = total / (time.perf_counter() - start)
    finally:
        corruptions.cv2 = patched

    def generator(workers: int) -> float:
        start = time.perf_counter()
        for _ in C.generate_corrupted(images, index, names, severities, seed=0, workers=workers, progress=False):
            pass
        return total / (time.perf_counter() - start)

    seeded = generator(1)
    stage = generator(args.workers)

    print(f"{total} corruptions of 32 px images ({len(names)} corruptions x {len(severities)} severities x {args.n})")
    print(f"single-process imagecorruptions.corrupt loop:      {baseline:8.1f} img/s")
    print(f"stage generator, 1 process (seeded per image):     {seeded:8.1f} img/s  ({seeded / baseline:.2f}x)")
    print(f"stage generator, {args.workers} workers (with pool start-up): {stage:8.1f} img/s  "
          f"({stage / baseline:.2f}x)")
    print(f"ratio (stage generator, {args.workers} workers / loop): {stage / baseline:.2f}x")


if __name__ == "__main__":
    main()
