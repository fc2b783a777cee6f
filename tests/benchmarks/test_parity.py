"""`benchmarks/parity.py --smoke` trains sslbench's and lightly's version of every method lightly implements on a
tiny generated shapes split and writes a probe table; the accuracies themselves are not asserted (docs/parity.md)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.tier3 import run

SCRIPT = REPO / "benchmarks" / "parity.py"
METHODS = ["simclr", "simsiam", "byol", "barlow_twins", "swav", "dino", "vicreg"]


def test_smoke_trains_both_implementations_of_every_method(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "parity.json"
    proc = run([sys.executable, str(SCRIPT), "--smoke", "--data", str(tiny_data), "--out", str(out)],
               cwd=REPO / "benchmarks", extra_env={"OMP_NUM_THREADS": "1"})
    payload = json.loads(out.read_text())
    results = payload["results"]
    assert {(r["method"], r["impl"]) for r in results} == {(m, i) for m in METHODS for i in ("ours", "lightly")}
    for r in results:
        assert 0.0 <= r["probe"] <= 1.0
        assert r["step"] in (0, 3)
        if r["step"] == 3:  # the mean SSL loss of the 3 steps
            assert math.isfinite(r["loss"]), r
    # both sides start from the same backbone weights: identical probes before the first step
    start = {(r["method"], r["impl"]): r["probe"] for r in results if r["step"] == 0}
    assert all(start[(m, "ours")] == start[(m, "lightly")] for m in METHODS)
    rows = payload["table"]
    assert [r["method"] for r in rows if r["step"] == 3] == METHODS
    assert all(math.isclose(r["diff"], r["ours_mean"] - r["lightly_mean"], abs_tol=1e-12) for r in rows)
    printed = [line.split()[1] for line in proc.stdout.splitlines() if line.split()[:1] == ["3"]]
    assert printed == METHODS
