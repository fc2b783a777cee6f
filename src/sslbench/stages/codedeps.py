"""`codedeps`: write the code fingerprint of every stage, on which dvc.yaml's stages depend (docs/decisions.md).

python -m sslbench.stages.codedeps

Writes `reports/codedeps/<stage>.json` for `prepare`, `corrupt`, `embed`, `evaluate`, `report`, and
`reports/codedeps/pretrain/<method>.json` for every method config and every method of params.yaml's `methods:`
(`{"stage": ..., "files": {path: sha256}}`), the files being the ones the stage runs (`sslbench.codedeps`). DVC
reruns this stage whenever anything under `src/sslbench` or `methods:` changes, but a fingerprint whose files did
not change is rewritten byte for byte, so only the stages that run the changed code rerun after it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslbench import codedeps
from sslbench.errors import UserError
from sslbench.io import atomic_path
from sslbench.params import PARAMS_FILE, read_params, recipe_of
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.codedeps")


def run(cfg: DictConfig) -> dict[str, Any]:
    src_root = Path(cfg.codedeps.src)
    if not (src_root / codedeps.PACKAGE).is_dir():
        raise UserError(f"codedeps.src={cfg.codedeps.src!r} holds no {codedeps.PACKAGE}/ package; set it to the folder "
                        "that holds the sources DVC tracks (src, relative to the repository root)")
    params = read_params(Path(PARAMS_FILE)) or {}  # the study's methods, each under its own name
    study = {str(name): recipe_of(str(name), entry) for name, entry in (params.get("methods") or {}).items()}
    prints = codedeps.all_fingerprints(src_root, study)
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
