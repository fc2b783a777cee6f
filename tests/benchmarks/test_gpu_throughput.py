"""`benchmarks/gpu_throughput.py` runs on CPU at tiny sizes (`--smoke`) and reports every column; bad device settings
stop it before any work. Its timings are not asserted (docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.tier3 import run

SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"


def test_smoke_run_reports_ratios_against_the_backbone_and_lightly(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = run([sys.executable, str(SCRIPT), "--smoke", "--methods", "simclr,dino,dissl", "--json", str(out)],
               cwd=tmp_path, extra_env={"OMP_NUM_THREADS": "1"})
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["precision"] == "32-true"
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["simclr", "dino", "dissl"]
    assert rows["dino"]["views"] == 4  # 2 global + the smoke setting's 2 local crops
    for r in rows.values():
        assert r["setting"] == "smoke" and r["batch"] == 8
        assert r["ours_img_s"] > 0 and r["backbone_img_s"] > 0
        assert math.isclose(r["ours_over_backbone"], r["ours_img_s"] / r["backbone_img_s"], rel_tol=0.01)
    for method in ("simclr", "dino"):  # lightly has these two ...
        assert rows[method]["lightly_img_s"] > 0 and rows[method]["ours_over_lightly"] > 0
    assert rows["dissl"]["ours_over_lightly"] is None  # ... but not DISSL
    assert "dissl" in proc.stdout and "ours/lightly" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.json"]


def test_bad_device_settings_stop_before_any_work(tmp_path: Path) -> None:
    proc = run([sys.executable, str(SCRIPT), "--smoke", "--precision", "16-mixed"], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "16-mixed (fp16 autocast) runs only on GPUs" in proc.stderr and "Traceback" not in proc.stderr
    assert "method" not in proc.stdout  # no table started
