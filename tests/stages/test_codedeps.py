"""The `codedeps` stage: one fingerprint file per stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sslbench import codedeps
from sslbench.errors import UserError
from sslbench.stages import codedeps as stage


def config(reports: Path, src: Path = codedeps.SRC_ROOT) -> object:
    return OmegaConf.create({"paths": {"reports": str(reports)}, "codedeps": {"src": str(src)}})


def test_writes_one_fingerprint_per_stage_and_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stage.run(config(tmp_path))  # type: ignore[arg-type]
    out = tmp_path / "codedeps"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert written == sorted([f"{s}.json" for s in codedeps.SHARED_STAGES]
                             + [f"pretrain/{m}.json" for m in codedeps.methods()])
    simclr = json.loads((out / "pretrain" / "simclr.json").read_text())
    assert simclr["stage"] == "pretrain/simclr" and "sslbench/methods/simclr.py" in simclr["files"]
    first = {p: p.read_bytes() for p in out.rglob("*.json")}
    stage.run(config(tmp_path))  # type: ignore[arg-type]
    assert {p: p.read_bytes() for p in out.rglob("*.json")} == first  # byte-identical: DVC reruns nothing after it


def test_a_source_folder_without_the_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="codedeps.src"):
        stage.run(config(tmp_path / "reports", src=tmp_path))  # type: ignore[arg-type]
