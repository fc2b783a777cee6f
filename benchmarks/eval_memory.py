"""Peak memory and time of the evaluation's large-table steps, the current code against the previous (whole-table)
implementation, side by side at growing sizes of synthetic data, extrapolated to ImageNet.

    python benchmarks/eval_memory.py                                  # every part, the default sizes (~3 min)
    python benchmarks/eval_memory.py --parts knn,kl_knn --scale 2     # two parts, sizes doubled
    python benchmarks/eval_memory.py --scale 0.02 --points 1          # a smoke run (the test's)
    python benchmarks/eval_memory.py --float16 simclr,supervised      # accuracy of float16-rounded tables

Parts (ImageNet figures: 50,000 test images of 224 px per ImageNet-C set, 95 sets; 1,281,167 train embeddings of
2048 floats; the ood area's scores are extrapolated per query set of 50,000 rows):
- `ssim`: `sslbench.eval.ssim.paired_ssim` of n random 224-px image pairs (the corrupt stage's SSIM of one set);
- `knn`: `sslbench.eval.ood.knn_score`, n train rows x 2048 (clustered Gaussian data), 1,000 queries, k = 50; the
  current code on its large-table path (float32 candidates, float64 score), which it takes above `WHOLE_BYTES`;
- `kl_knn`: `sslbench.eval.ood.kl_knn`, n train Gaussians of 2048 dims, 500 queries, k = 50;
- `robustness`: `sslbench.areas.robustness.load_tables` + `evaluate` (given a probe) on 95 Parquet tables of n rows
  x 2048; the current code runs with its memory limits (`HOLD_BYTES`, `GROUP_BYTES`) scaled by n / 50,000, so that
  it streams as it does at ImageNet size;
- `fits`: the ood area's two fits on n train rows x 512, `fit_mahalanobis` (100 classes) and
  `fit_kmeans_mahalanobis` (10 clusters), the current code on its large-table path (blocked sums; k-means centring
  its float64 copy in place); extrapolated in rows x dims (a 512-d row is a quarter of a 2048-d one).

Each (part, size, implementation) runs in its own process; the process resets its resident-set high-water mark
(`/proc/self/clear_refs`) once its inputs are built, so "peak" is the memory the call itself added (torch CPU
tensors included, which tracemalloc does not see). Old and new alternate. Both are extrapolated linearly in n (a
least-squares line through the sizes for peak memory; time in proportion to the largest size). The results of the
two implementations are compared too ("rel. diff": max |old − new| / max |old|).

`--float16 METHODS` reads the study's embeddings (`data/embeddings/<method>/<dataset>/`) and compares the linear
probe (the study's `probe.linear` protocol) and the kNN classifier (k = 20, T = 0.07) on the float32 tables and on
the same tables rounded to float16 (the storage `io.EmbeddingWriter(dtype="float16")` writes).

The reference implementations below are copies of the code before the memory work, kept only for this comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MIB = 1024.0**2
GIB = 1024.0**3
IMAGENET = {"ssim": 50_000, "knn": 1_281_167, "kl_knn": 1_281_167, "robustness": 50_000, "fits": 1_281_167}
SETS = 95
SIZES = {"ssim": [24, 48, 96], "knn": [8192, 16384, 32768], "kl_knn": [4096, 8192, 16384],
         "robustness": [200, 400, 800], "fits": [16384, 32768, 65536]}
QUERIES = {"knn": 1000, "kl_knn": 500}
DIM = 2048
FIT_DIM = 512  # `fits` runs at 512 dims (its D x D inverse would dominate small runs) and scales by rows x dims
K = 50


# ==================================================================== the reference: the previous implementation
# Copies of the functions as they were before they were blocked/streamed (sslbench.eval.ssim, sslbench.eval.ood,
# sslbench.areas.robustness); only for this side-by-side measurement.


def old_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    a, b = np.asarray(a), np.asarray(b)
    x, y = a.astype(np.float64), b.astype(np.float64)

    def mean(z: np.ndarray) -> np.ndarray:
        return uniform_filter(z, size=(1, 7, 7, 1))

    norm = 49 / 48
    ux, uy = mean(x), mean(y)
    vx = norm * (mean(x * x) - ux * ux)
    vy = norm * (mean(y * y) - uy * uy)
    vxy = norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return np.asarray(s[:, 3:-3, 3:-3, :].mean(axis=(1, 2, 3)))


def old_paired_ssim(clean: np.ndarray, clean_index: np.ndarray, corrupted: np.ndarray,
                    corrupted_index: np.ndarray) -> np.ndarray:
    order = np.argsort(clean_index)
    pos = np.searchsorted(clean_index[order], corrupted_index)
    return old_ssim(np.asarray(clean)[order[pos]], corrupted)


def old_l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


def old_knn_score(train_x: np.ndarray, x: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    import torch

    bank = torch.from_numpy(old_l2_normalise(train_x))
    query = torch.from_numpy(old_l2_normalise(x))
    out = []
    for i in range(0, len(query), chunk):
        cos = query[i : i + chunk] @ bank.T
        kth = torch.topk(cos, k, dim=1).values[:, k - 1]
        out.append(-(2 - 2 * kth).clamp_min(0).sqrt())
    return torch.cat(out).numpy()


def old_gaussian_kl_matrix(mu_q: np.ndarray, logvar_q: np.ndarray, mu_p: np.ndarray, logvar_p: np.ndarray
                           ) -> np.ndarray:
    import torch

    mq, lq = (torch.tensor(np.asarray(a), dtype=torch.float64) for a in (mu_q, logvar_q))
    mp, lp = (torch.tensor(np.asarray(a), dtype=torch.float64) for a in (mu_p, logvar_p))
    inv_p = torch.exp(-lp)
    quad = (torch.exp(lq) + mq.pow(2)) @ inv_p.T - 2 * mq @ (mp * inv_p).T + (mp.pow(2) * inv_p).sum(1)
    kl = 0.5 * (quad + lp.sum(1) - lq.sum(1)[:, None] - mq.shape[1])
    return np.asarray(kl.clamp_min(0.0).numpy())


def old_kl_knn(train_mu: np.ndarray, train_logvar: np.ndarray, mu: np.ndarray, logvar: np.ndarray, k: int,
               chunk: int = 1024) -> np.ndarray:
    import torch

    out = []
    for i in range(0, len(mu), chunk):
        kl = torch.from_numpy(old_gaussian_kl_matrix(mu[i : i + chunk], logvar[i : i + chunk], train_mu,
                                                     train_logvar))
        out.append(torch.topk(kl, k, dim=1, largest=False).values[:, k - 1].numpy())
    return np.concatenate(out)


def old_fit_mahalanobis(x: np.ndarray, labels: np.ndarray, means: np.ndarray | None = None) -> Any:
    from sklearn.covariance import EmpiricalCovariance

    from sslbench.eval.ood import Mahalanobis

    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if means is None:
        classes = np.unique(labels)
        means = np.zeros((int(labels.max()) + 1, x.shape[1]))
        for c in classes:
            means[c] = x[labels == c].mean(0)
        means = means[classes]
        labels = np.searchsorted(classes, labels)
    means = np.asarray(means, dtype=np.float64)
    centred = x - means[labels]
    precision = EmpiricalCovariance(assume_centered=True).fit(centred).precision_
    return Mahalanobis(means=means, precision=precision)


def old_fit_kmeans_mahalanobis(train_x: np.ndarray, n_clusters: int, seed: int) -> Any:
    from sklearn.cluster import KMeans

    u = old_l2_normalise(train_x)
    km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed).fit(u)
    return old_fit_mahalanobis(u, km.labels_, means=km.cluster_centers_)


def old_robustness_errors(study: Any, method: str, family: dict[str, Any], probe: Any) -> dict[str, dict[int, float]]:
    """The corrupted-set half of the previous `load_tables` + `evaluate`: every table read and kept, then one
    concatenation and one probe call."""
    from sslbench.eval.corruption import top1_error
    from sslbench.io import embeddings_path, read_embeddings

    sets = []
    for corruption in family["corruptions"]:
        for severity in family["severities"]:
            split = f"{corruption}_{severity}"
            path = embeddings_path(study.data, method, f"{study.dataset}_c", split)
            sets.append((corruption, int(severity), read_embeddings(path, method=method, split=split)))
    predictions = probe.predict(np.concatenate([e.embedding for *_, e in sets]))
    errors: dict[str, dict[int, float]] = {}
    start = 0
    for corruption, severity, emb in sets:
        stop = start + len(emb.label)
        errors.setdefault(corruption, {})[severity] = top1_error(predictions[start:stop], emb.label)
        start = stop
    return errors


# ============================================================================ measurement


def _status(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return float(match.group(1)) * 1024.0 if match else 0.0


def reset_peak() -> bool:
    """Reset this process's resident-set high-water mark (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> float:
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def clustered(rng: np.random.Generator, n: int, d: int, centres: np.ndarray) -> np.ndarray:
    """n rows of float32 around random centres (unit noise), filled in place (no temporary of the table's size)."""
    x = np.empty((n, d), np.float32)
    for i in range(0, n, 4096):
        m = min(4096, n - i)
        rng.standard_normal(out=x[i : i + m], dtype=np.float32)
        x[i : i + m] += centres[rng.integers(0, len(centres), m)]
    return x


def build(part: str, n: int, folder: Path) -> Callable[[str], np.ndarray]:
    """The inputs of `part` at size n, and a function running the `old` or `new` implementation on them."""
    rng = np.random.default_rng(0)
    if part == "ssim":
        from sslbench.eval.ssim import paired_ssim

        clean = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
        corrupted = np.clip(clean.astype(np.int16) + rng.integers(-40, 41, clean.shape, dtype=np.int16), 0,
                            255).astype(np.uint8)
        index = rng.permutation(n) + 1000
        return lambda impl: (old_paired_ssim if impl == "old" else paired_ssim)(clean, index, corrupted, index)
    if part == "knn":
        from sslbench.eval import ood
        from sslbench.eval.ood import knn_score

        ood.WHOLE_BYTES = 0  # the path of a large (ImageNet) table: float32 candidates, float64 score

        centres = rng.normal(0, 0.6, (100, DIM)).astype(np.float32)
        train, queries = clustered(rng, n, DIM, centres), clustered(rng, QUERIES[part], DIM, centres)
        return lambda impl: (old_knn_score if impl == "old" else knn_score)(train, queries, K)
    if part == "kl_knn":
        from sslbench.eval.ood import kl_knn

        centres = rng.normal(0, 2.0, (100, DIM)).astype(np.float32)
        mu, q_mu = clustered(rng, n, DIM, centres), clustered(rng, QUERIES[part], DIM, centres)
        logvar = rng.uniform(-4, 1, (n, DIM)).astype(np.float32)
        q_logvar = rng.uniform(-4, 1, (QUERIES[part], DIM)).astype(np.float32)
        return lambda impl: (old_kl_knn if impl == "old" else kl_knn)(mu, logvar, q_mu, q_logvar, K)
    if part == "fits":
        from sslbench.eval import ood

        ood.WHOLE_BYTES = 0  # the path of a large (ImageNet) table
        centres = rng.normal(0, 0.6, (100, FIT_DIM)).astype(np.float32)
        labels = np.repeat(np.arange(100), n // 100 + 1)[:n]
        x = np.empty((n, FIT_DIM), np.float32)
        for i in range(0, n, 4096):
            block = labels[i : i + 4096]
            x[i : i + 4096] = rng.standard_normal((len(block), FIT_DIM), dtype=np.float32) + centres[block]
        probe_rows = x[:200].copy()

        def fits(impl: str) -> np.ndarray:
            maha = (old_fit_mahalanobis if impl == "old" else ood.fit_mahalanobis)(x, labels)
            km = (old_fit_kmeans_mahalanobis if impl == "old" else ood.fit_kmeans_mahalanobis)(x, 10, 0)
            return np.concatenate([maha.score(probe_rows), km.score(ood.l2_normalise(probe_rows))])

        return fits
    if part == "robustness":
        return robustness_run(n, folder)
    raise ValueError(part)


def write_robustness_tables(n: int, folder: Path) -> None:
    """A study folder with 95 corrupted-set tables of n rows x 2048 (and small train/val, a test of n rows)."""
    from sslbench.data import corruptions as C
    from sslbench.io import EmbeddingWriter, embeddings_path

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, n)
    tables = [("shapes", s, 64 if s != "test" else n) for s in ("train", "val", "test")]
    tables += [("shapes_c", f"{c}_{s}", n) for c in C.CORRUPTIONS for s in range(1, 6)]
    for dataset, split, rows in tables:
        with EmbeddingWriter(embeddings_path(folder, "bench", dataset, split), method="bench", dataset=dataset,
                             split=split, dim=DIM) as writer:
            writer.write(np.arange(rows), labels[:rows] if rows == n else rng.integers(0, 100, rows),
                         rng.standard_normal((rows, DIM), dtype=np.float32))


def robustness_run(n: int, folder: Path) -> Callable[[str], np.ndarray]:
    import torch

    from sslbench.areas import robustness
    from sslbench.areas.common import LinearSettings, Study
    from sslbench.data import corruptions as C
    from sslbench.eval.linear import LinearProbe

    study = Study(method="bench", data=folder, models=folder, reports=folder, dataset="shapes", train="train",
                  val="val", test="test", num_classes=100, seed=0)
    family = {"index": list(range(n)), "corruptions": list(C.CORRUPTIONS), "severities": [1, 2, 3, 4, 5]}
    gen = torch.Generator().manual_seed(0)
    probe = LinearProbe(weight=torch.randn(100, DIM, generator=gen), bias=torch.zeros(100), mean=torch.zeros(DIM),
                        std=torch.ones(DIM), weight_decay=0.0)
    settings = robustness.RobustnessSettings(study=study, linear=LinearSettings(1, 0.1, 32, (0.0,)),
                                             reference="supervised", gradcam_images=0, gradcam_corruptions=(),
                                             gradcam_severity=1)
    scale = n / IMAGENET["robustness"]

    def run(impl: str) -> np.ndarray:
        if impl == "old":
            errors = old_robustness_errors(study, "bench", family, probe)
        else:
            tables = robustness.load_tables(study, "bench", family, hold_bytes=int(robustness.HOLD_BYTES * scale))
            errors = robustness.evaluate(settings, tables, probe,
                                         group_bytes=int(robustness.GROUP_BYTES * scale)).errors
        return np.array([errors[c][s] for c in sorted(errors) for s in sorted(errors[c])])

    return run


def child(part: str, n: int, impl: str, folder: Path) -> None:
    """Build the inputs, reset the high-water mark, run once; print a JSON line."""
    import pyarrow.parquet  # noqa: F401  (imported before measuring, as in the stages)
    import scipy.ndimage  # noqa: F401
    import torch  # noqa: F401

    if part != "robustness":  # a first call on tiny inputs: lazy imports and one-time allocations are not counted
        build(part, 2 if part == "ssim" else 2 * K, folder)(impl)
    run = build(part, n, folder)
    base = _status("VmRSS")
    exact = reset_peak()
    start = time.perf_counter()
    out = run(impl)
    seconds = time.perf_counter() - start
    np.save(folder / f"{part}_{n}_{impl}.npy", np.asarray(out, np.float64))
    print(json.dumps({"peak": peak_rss() - base, "seconds": seconds, "exact_peak": exact}))


def measure(part: str, n: int, impl: str, folder: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{part}:{n}:{impl}", "--folder", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        raise SystemExit(f"{part} n={n} {impl} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["values"] = np.load(folder / f"{part}_{n}_{impl}.npy")
    return result


def extrapolate(sizes: list[int], peaks: list[float], target: int) -> float:
    """The least-squares line of peak against size, at `target` (at least the largest measured peak)."""
    if len(sizes) == 1:
        return peaks[0] * target / sizes[0]
    slope, intercept = np.polyfit(np.asarray(sizes, float), np.asarray(peaks, float), 1)
    return float(max(slope * target + intercept, max(peaks)))


def target_size(part: str) -> int:
    """The ImageNet size in the units of the benchmark's n (`fits`: rows of FIT_DIM floats)."""
    return IMAGENET[part] * (DIM // FIT_DIM if part == "fits" else 1)


def time_factor(part: str, n: int) -> float:
    """ImageNet time / time at size n: per ImageNet-C set x 95 (ssim, robustness), per 50,000 queries (knn,
    kl_knn)."""
    if part in ("ssim", "robustness", "fits"):
        return target_size(part) / n * (SETS if part == "ssim" else 1)
    return IMAGENET[part] / n * 50_000 / QUERIES[part]


def benchmark(parts: list[str], scale: float, points: int) -> None:
    print(f"{'part':<11}{'size':>8}{'old MiB':>10}{'new MiB':>10}{'old s':>9}{'new s':>9}{'peak old/new':>13}"
          f"{'rel. diff':>12}")
    summary = []
    with tempfile.TemporaryDirectory(prefix="eval-mem-") as tmp:
        folder = Path(tmp)
        for part in parts:
            sizes = [max(1, int(s * scale)) for s in SIZES[part]][:points]
            rows: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
            for i, n in enumerate(sizes):
                if part == "robustness":
                    write_robustness_tables(n, folder / f"rob{n}")
                where = folder / f"rob{n}" if part == "robustness" else folder
                order = ("old", "new") if i % 2 == 0 else ("new", "old")
                got = {impl: measure(part, n, impl, where) for impl in order}
                for impl in ("old", "new"):
                    rows[impl].append(got[impl])
                a, b = got["old"]["values"], got["new"]["values"]
                diff = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-300)) if a.size else 0.0
                print(f"{part:<11}{n:>8}{got['old']['peak'] / MIB:>10.1f}{got['new']['peak'] / MIB:>10.1f}"
                      f"{got['old']['seconds']:>9.2f}{got['new']['seconds']:>9.2f}"
                      f"{got['old']['peak'] / max(got['new']['peak'], 1.0):>13.1f}{diff:>12.2e}", flush=True)
            peak = {impl: extrapolate(sizes, [r["peak"] for r in rows[impl]], target_size(part)) for impl in rows}
            secs = {impl: rows[impl][-1]["seconds"] * time_factor(part, sizes[-1]) for impl in rows}
            summary.append((part, IMAGENET[part], peak, secs))
    print("\nExtrapolated to ImageNet (linear in size; this machine's CPU, no GPU):")
    print(f"{'part':<11}{'ImageNet size':>15}{'old peak GiB':>14}{'new peak GiB':>14}{'old hours':>11}"
          f"{'new hours':>11}  unit")
    units = {"ssim": "peak per set, time for 95 sets", "knn": "per 50,000 queries", "kl_knn": "per 50,000 queries",
             "robustness": "95 sets of 50,000 rows", "fits": "both fits on the train table"}
    for part, target, peak, secs in summary:
        print(f"{part:<11}{target:>15,}{peak['old'] / GIB:>14.1f}{peak['new'] / GIB:>14.2f}"
              f"{secs['old'] / 3600:>11.2f}{secs['new'] / 3600:>11.2f}  {units[part]}")


# ============================================================================ float16 storage


def float16_accuracy(methods: list[str], data: Path, dataset: str) -> None:
    """Linear-probe and kNN test top-1 on the float32 tables and on the same tables rounded to float16."""
    from sslbench.eval.knn import knn_predict
    from sslbench.eval.linear import accuracy, train_linear_probe
    from sslbench.io import embeddings_path, read_embeddings

    print(f"{'method':<24}{'linear f32':>11}{'linear f16':>11}{'diff':>9}{'kNN f32':>9}{'kNN f16':>9}{'diff':>9}"
          f"{'max rel rounding':>18}")
    for method in methods:
        tables = {s: read_embeddings(embeddings_path(data, method, dataset, s)) for s in ("train", "val", "test")}
        classes = int(max(t.label.max() for t in tables.values())) + 1
        row = []
        for dtype in (np.float32, np.float16):
            x = {s: t.embedding.astype(dtype).astype(np.float32) for s, t in tables.items()}
            probe = train_linear_probe(x["train"], tables["train"].label, x["val"], tables["val"].label,
                                       num_classes=classes, seed=0, epochs=100, lr=0.3, batch_size=512,
                                       weight_decays=[1e-4, 1e-5, 1e-6])
            linear = accuracy(probe.predict(x["test"]), tables["test"].label)
            knn = accuracy(knn_predict(x["train"], tables["train"].label, x["test"], num_classes=classes, k=20,
                                       temperature=0.07), tables["test"].label)
            row.append((linear, knn))
        e = tables["train"].embedding
        normal = np.abs(e) >= 2.0**-14  # float16's normal range (below it, the absolute error is <= 2^-25)
        rounding = np.abs(e.astype(np.float16).astype(np.float32) - e)[normal] / np.abs(e[normal])
        (l32, k32), (l16, k16) = row
        print(f"{method:<24}{l32:>11.4f}{l16:>11.4f}{l16 - l32:>+9.4f}{k32:>9.4f}{k16:>9.4f}{k16 - k32:>+9.4f}"
              f"{float(rounding.max()) if rounding.size else 0.0:>18.2e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="ssim,knn,kl_knn,robustness,fits")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size (e.g. 0.1 for a smoke run)")
    parser.add_argument("--points", type=int, default=3, help="how many of the sizes to run (1-3)")
    parser.add_argument("--float16", default="", help="methods whose float16-rounded tables to probe")
    parser.add_argument("--data", default="data", help="the study's data folder (--float16)")
    parser.add_argument("--dataset", default="shapes", help="the study's dataset (--float16)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        part, n, impl = args.child.split(":")
        child(part, int(n), impl, Path(args.folder))
        return
    if args.float16:
        float16_accuracy(args.float16.split(","), Path(args.data), args.dataset)
        return
    parts = args.parts.split(",")
    unknown = set(parts) - set(SIZES)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(SIZES)}")
    benchmark(parts, args.scale, args.points)


if __name__ == "__main__":
    main()
