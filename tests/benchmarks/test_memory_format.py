"""`benchmarks/memory_format.py` runs and prints one row of NHWC speed-ups per method; the speed-ups themselves are
not asserted (docs/benchmarks.md)."""

from __future__ import annotations

import sys

from tests.conftest import REPO
from tests.tier3 import run

SCRIPT = REPO / "benchmarks" / "memory_format.py"


def test_prints_a_train_and_an_embed_speed_up_per_method() -> None:
    proc = run([sys.executable, str(SCRIPT), "--methods", "supervised,simclr", "--repeats", "1", "--batch-size", "8"],
               cwd=REPO / "benchmarks", extra_env={"OMP_NUM_THREADS": "1"})
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("supervised", "simclr"))]
    assert [r[0] for r in rows] == ["supervised", "simclr"]
    assert all(len(r) == 3 and float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
