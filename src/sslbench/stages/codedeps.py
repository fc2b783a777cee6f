"""`codedeps`: write the code fingerprint of every stage, on which dvc.yaml's stages depend (README, "Design changes").

python -m sslbench.stages.codedeps

Writes `reports/codedeps/<stage>.json` for `prepare`, `corrupt`, `embed`, `evaluate`, `report`, and
`reports/codedeps/pretrain/<method>.json` for every method config: {"stage": ..., "files": {path: sha256}}, the
files being the ones the stage runs (`sslbench.codedeps`). DVC reruns this stage whenever anything under
`src/sslbench` changes, but a fingerprint whose files did not change is rewritten byte for byte, so only the
stages that run the changed code rerun after it.

Under DVC it also checks that every method of params.yaml's `methods:` has a config, so that a misspelt method
fails here, at the first stage, with the valid names.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslbench import codedeps
from sslbench.errors import UserError, unknown_choice
from sslbench.io import atomic_path
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.codedeps")


def check_study_methods(params_path: Path, valid: list[str]) -> None:
    """Raise `UserError` naming the valid methods when params.yaml's `methods:` lists one without a config."""
    import yaml

    params = yaml.safe_load(params_path.read_text()) or {}
    study = params.get("methods") or {}
    if not isinstance(study, dict):
        raise UserError(f"{params_path}: `methods:` must map method names to overrides ({{}} for none), got "
                        f"{type(study).__name__}")
    for name in study:
        if name not in valid:
            raise unknown_choice("method", str(name), valid)


def run(cfg: DictConfig) -> dict[str, Any]:
    src_root = Path(cfg.codedeps.src)
    if not (src_root / codedeps.PACKAGE).is_dir():
        raise UserError(f"codedeps.src={cfg.codedeps.src!r} holds no {codedeps.PACKAGE}/ package; set it to the folder "
                        "that holds the sources DVC tracks (src, relative to the repository root)")
    root = os.environ.get("DVC_ROOT")
    if root and (Path(root) / "params.yaml").is_file():
        check_study_methods(Path(root) / "params.yaml", codedeps.methods(src_root))
    prints = codedeps.all_fingerprints(src_root)
    out = Path(cfg.paths.reports) / "codedeps"
    with atomic_path(out) as tmp:
        for name, files in prints.items():
            path = tmp / f"{name}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"stage": name, "files": files}, indent=1) + "\n")
    n_files = len({f for files in prints.values() for f in files})
    log.info("codedeps: %d fingerprints of %d files -> %s", len(prints), n_files, out)
    return {"fingerprints": len(prints), "files": n_files}


main = stage_main(run, "codedeps")

if __name__ == "__main__":
    main()
