"""Peak memory of the linear probe on an ImageNet-sized embedding table (1.28M x 2048 float32 = 9.8 GiB).

    python benchmarks/probe_memory.py --rows 1281167 --classes 1000       # the full size (needs ~11 GiB free RAM)
    python benchmarks/probe_memory.py --rows 128000                      # a 10x smaller quick run
    python benchmarks/probe_memory.py --rows 128000 --source parquet     # the probe stage's path: Parquet -> probe

Random data (standard normal features, uniform labels), `--val-rows` = rows / 25.6 as for ImageNet (50k / 1.28M).
`--source memory` fills a preallocated float32 array chunk by chunk (peak of the generation = the table) and trains
`sslbench.eval.linear.train_linear_probe` on it. `--source parquet` first writes the tables with
`io.EmbeddingWriter` (chunked), then, in a fresh child process, reads them back with `io.read_embeddings` and trains
the probe, as `probe@<method>` does. Each phase runs in its own process and reports its peak resident set size
(`ru_maxrss`), the table size and the difference (the probe's own overhead). Target: peak <= 12 GiB at full size.
Compute scales with rows x classes x epochs: `--classes 10` keeps the full-size run short while the table (what
dominates memory) keeps its size; the class-dependent part (K weight decays x C x D floats for weights, momentum and
gradient) is printed so that it can be added for C = 1000.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 1024**3


def peak_rss() -> float:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def current_rss() -> float:
    """Resident set size of this process now, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024.0
    return peak_rss()


def random_table(rows: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.empty((rows, dim), np.float32)
    for i in range(0, rows, 65536):
        rng.standard_normal(out=x[i : i + 65536], dtype=np.float32)
    return x, rng.integers(0, classes, rows)


def train(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    from sslbench.eval.linear import train_linear_probe

    before = peak_rss()
    start = time.perf_counter()
    probe = train_linear_probe(x, y, xv, yv, num_classes=args.classes, epochs=args.epochs,
                               batch_size=args.batch_size)
    return {"seconds": time.perf_counter() - start, "peak_before_probe": before, "peak": peak_rss(),
            "val_top1": probe.val_top1[probe.weight_decay]}


def child(args: argparse.Namespace) -> None:
    """Read the Parquet tables like the probe stage and train; print a JSON line."""
    import torch  # noqa: F401  (imported before measuring, as in the stage)

    from sslbench.io import read_embeddings

    base = current_rss()
    folder = Path(args.child)
    start = time.perf_counter()
    train_t, val_t = read_embeddings(folder / "train.parquet"), read_embeddings(folder / "val.parquet")
    read_s = time.perf_counter() - start
    after_read = peak_rss()
    out = train(train_t.embedding, train_t.label, val_t.embedding, val_t.label, args)
    print(json.dumps({"base": base, "after_read": after_read, "read_seconds": read_s, **out}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_281_167)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--val-rows", type=int, default=0, help="0: rows / 25.6")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--source", choices=["memory", "parquet"], default="memory")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    val_rows = args.val_rows or max(1, int(args.rows / 25.6))
    table = args.rows * args.dim * 4
    if args.child:
        child(args)
        return

    import torch

    print(f"table {args.rows} x {args.dim} float32 = {table / GIB:.2f} GiB (+ val {val_rows} rows = "
          f"{val_rows * args.dim * 4 / GIB:.2f} GiB), {args.classes} classes, {args.epochs} epoch(s), "
          f"{torch.get_num_threads()} torch threads, source {args.source}")
    base = current_rss()
    if args.source == "memory":
        x, y = random_table(args.rows, args.dim, args.classes, 0)
        xv, yv = random_table(val_rows, args.dim, args.classes, 1)
        out = train(x, y, xv, yv, args)
        data = out["peak_before_probe"] - base
        print(f"process before data: {base / GIB:.2f} GiB; after generating the tables: peak "
              f"{out['peak_before_probe'] / GIB:.2f} GiB ({data / GIB:.2f} GiB of data)")
    else:
        from sslbench.io import EmbeddingWriter

        with tempfile.TemporaryDirectory(prefix="probe-mem-") as tmp_name:
            folder = Path(tmp_name)
            start = time.perf_counter()
            for split, rows, seed in (("train", args.rows, 0), ("val", val_rows, 1)):
                rng = np.random.default_rng(seed)
                with EmbeddingWriter(folder / f"{split}.parquet", method="bench", dataset="imagenet", split=split,
                                     dim=args.dim) as writer:
                    for i in range(0, rows, 8192):
                        n = min(8192, rows - i)
                        writer.write(np.arange(i, i + n), rng.integers(0, args.classes, n),
                                     rng.standard_normal((n, args.dim), dtype=np.float32))
            print(f"wrote Parquet in {time.perf_counter() - start:.1f} s "
                  f"({(folder / 'train.parquet').stat().st_size / GIB:.2f} GiB on disk); writer peak "
                  f"{peak_rss() / GIB:.2f} GiB")
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", str(folder)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out = json.loads(done.stdout.strip().splitlines()[-1])
        base = out["base"]
        print(f"child process before reading: {base / GIB:.2f} GiB; after io.read_embeddings: peak "
              f"{out['after_read'] / GIB:.2f} GiB ({(out['after_read'] - base) / GIB:.2f} GiB for "
              f"{(table + val_rows * args.dim * 4) / GIB:.2f} GiB of tables; read {out['read_seconds']:.1f} s)")
    weights = 3 * 3 * args.classes * args.dim * 4  # K=3 candidates x (weight, momentum, gradient)
    print(f"probe: {out['seconds']:.1f} s, val top-1 {out['val_top1']:.3f} (random data: chance)")
    print(f"PEAK RSS {out['peak'] / GIB:.2f} GiB = {out['peak'] / table:.2f} x the train table; probe overhead above "
          f"its input {(out['peak'] - out['peak_before_probe']) / GIB:.3f} GiB (of which weights/momentum/grads "
          f"{weights / GIB:.3f} GiB; at 1000 classes: {3 * 3 * 1000 * args.dim * 4 / GIB:.3f} GiB); target <= 12 GiB")


if __name__ == "__main__":
    main()
