"""`benchmarks/eval_memory.py` runs every part at a tiny size and prints old/new peak memory, times, the difference
of the two implementations' results and the ImageNet extrapolation; the figures themselves are not asserted
(docs/benchmarks.md), only that both implementations agree."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO
from tests.tier3 import run

SCRIPT = REPO / "benchmarks" / "eval_memory.py"
PARTS = ("ssim", "knn", "kl_knn", "robustness", "fits")


def test_every_part_runs_side_by_side_and_extrapolates() -> None:
    proc = run([sys.executable, str(SCRIPT), "--scale", "0.02", "--points", "1"], cwd=REPO,
               extra_env={"OMP_NUM_THREADS": "1"})
    lines = proc.stdout.splitlines()
    measured = [line.split() for line in lines if line.split()[:1] and line.split()[0] in PARTS and
                len(line.split()) == 8]
    assert [r[0] for r in measured] == list(PARTS)
    for row in measured:
        assert all(float(v) >= 0 for v in row[1:6])
        assert float(row[7]) <= 1e-9  # old and new give the same values
    extrapolated = lines[lines.index(next(x for x in lines if x.startswith("Extrapolated"))) + 2:]
    assert [r.split()[0] for r in extrapolated] == list(PARTS)


def test_float16_accuracy_table(tmp_path: Path) -> None:
    from sslbench.io import EmbeddingWriter, embeddings_path

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 16))
    for split, n in (("train", 200), ("val", 60), ("test", 80)):
        labels = rng.integers(0, 4, n)
        with EmbeddingWriter(embeddings_path(tmp_path, "m", "shapes", split), method="m", dataset="shapes",
                             split=split, dim=16) as writer:
            writer.write(np.arange(n), labels, (centres[labels] + rng.normal(0, 1, (n, 16))).astype(np.float32))
    proc = run([sys.executable, str(SCRIPT), "--float16", "m", "--data", str(tmp_path)], cwd=REPO,
               extra_env={"OMP_NUM_THREADS": "1"})
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("m "))
    assert len(row) == 8 and 0 <= float(row[1]) <= 1 and 0 <= float(row[2]) <= 1
    assert 0 < float(row[7]) <= 2**-11  # float16 rounds to 11 significant bits
