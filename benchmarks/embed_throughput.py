"""The embed stage's loop vs the bare encoder forward, on the same images, in the same run.

    python benchmarks/embed_throughput.py --n 4000 --batch-size 256 --repeats 3

Generated `shapes` images (32 px) are written as a prepared split (`io.write_split`) and embedded by a random-init
encoder (`--backbone`) two ways, alternately, `--repeats` times each:
- bare forward: `encoder(x)` under `torch.inference_mode()` over batches of float images already in memory
  (conversion from uint8 done beforehand, outside the timing);
- embed loop: `sslbench.embedding.embed_split`, i.e. what `embed@<method>` runs per split: memory-mapped uint8
  reads, conversion, the forward pass, and streaming Parquet writes (`io.EmbeddingWriter`, zstd).
Prints images/s of each (best of the repeats) and the ratio embed / bare (target >= 0.9): the median over the
repeats of each back-to-back pair (the headline: neighbours' load drifts less within a pair) and best / best; in
wall-clock time and in
this process's CPU time (`time.process_time`, all threads). On a machine shared with other jobs the wall-clock
ratio swings with the neighbours' load; the CPU-time ratio shows the loop's own overhead.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--backbone", default="convnet")
    parser.add_argument("--stochastic-space", default="none", choices=["none", "h", "z"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from sslbench.data.shapes import SHAPES, generate
    from sslbench.data.splits import open_split
    from sslbench.embedding import Target, embed_split
    from sslbench.io import EmbeddingWriter, write_split
    from sslbench.models.encoder import Encoder, EncoderSpec

    images, labels = generate(0, {"train": args.n}, list(SHAPES)[:10], 32)["train"]
    torch.manual_seed(0)
    spec = EncoderSpec(backbone=args.backbone, stochastic_space=args.stochastic_space, projector_dims=[256, 64])
    encoder = Encoder(spec).eval()
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp_name:
        tmp = Path(tmp_name)
        write_split(tmp / "datasets" / "shapes" / "train", images, labels, {"classes": list(SHAPES)[:10]})
        source = open_split(tmp, "shapes", "train")
        target = Target("shapes", "train", source, np.arange(len(source)))
        x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div_(255.0)

        def bare() -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                for i in range(0, args.n, args.batch_size):
                    encoder(x_all[i : i + args.batch_size])
            return time.perf_counter() - start, time.process_time() - cpu

        def loop(r: int) -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            with EmbeddingWriter(tmp / f"out{r}.parquet", method="bench", dataset="shapes", split="train",
                                 dim=encoder.embedding_dim, stochastic_space=spec.stochastic_space,
                                 stochastic_dim=encoder.stochastic_dim) as writer:
                embed_split(encoder, target, writer, batch_size=args.batch_size)
            return time.perf_counter() - start, time.process_time() - cpu

        bare()  # warm-up (allocator, kernels)
        t_bare, t_loop = [], []
        for r in range(args.repeats):
            t_bare.append(bare())
            t_loop.append(loop(r))
    print(f"{args.n} images 32 px, {args.backbone} (stochastic {args.stochastic_space}), batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats}")
    for j, clock in enumerate(("wall-clock", "CPU time")):
        bare_rate = args.n / min(t[j] for t in t_bare)
        loop_rate = args.n / min(t[j] for t in t_loop)
        ratios = [b[j] / t[j] for b, t in zip(t_bare, t_loop, strict=True)]  # each pair measured back to back
        print(f"{clock}: bare encoder forward {bare_rate:7.1f} img/s, embed loop (mmap read + convert + forward + "
              f"Parquet) {loop_rate:7.1f} img/s (best of {args.repeats}); ratio embed / bare: median of the paired "
              f"repeats {float(np.median(ratios)):.3f} (each: {', '.join(f'{r:.2f}' for r in ratios)}), "
              f"best / best {loop_rate / bare_rate:.3f}; target >= 0.9")


if __name__ == "__main__":
    main()
