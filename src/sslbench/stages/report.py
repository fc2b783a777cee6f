"""`report`: every method's metrics -> `reports/summary.md`, `reports/figures/`, `reports/metrics.json`,
`reports/headline.json`.

python -m sslbench.stages.report dataset=shapes report.params_file=params.yaml

Reads `reports/{pretrain,probe,robustness,ood}/<method>.json`, the robustness and OOD plot tables, the Grad-CAM
panels, `reports/corrupt/ssim.csv` and `models/<method>/config.yaml`. A missing input shows as "—" with a footnote
naming the file and the `dvc repro` command; only a study with no metrics at all is an error. No torch or
lightning import: the stage reads JSON/CSV and draws with matplotlib (Agg) + seaborn.

`headline.json` holds a handful of numbers per method (`sslbench.report.headline`) for a readable `dvc exp show`;
`figures/data/*.csv` the plot tables that dvc.yaml declares under `plots:` (`sslbench.report.plotdata`).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sslbench.errors import UserError
from sslbench.io import atomic_path, ensure_writable, write_json, write_text
from sslbench.report.headline import HEADLINE_FILE, headline
from sslbench.report.load import AREAS, load_study
from sslbench.report.summary import build_summary, draw_figures, metrics_json, ood_groups, roc_score
from sslbench.report.tables import ssl_above_random_init
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.report")
METHOD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def read_params(path: Path | None) -> dict[str, Any] | None:
    """The study's params file as a dict; None when not configured or absent (the protocol then says so)."""
    import yaml

    if path is None or not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML ({err}); fix the file (it is the study's params file)") from err
    return data if isinstance(data, dict) else None


def study_methods(cfg: DictConfig, params: dict[str, Any] | None, params_file: str) -> list[str]:
    """`study.methods` from the config, else the keys of `methods:` in the params file; checked to be unique."""
    source = "study.methods"
    raw: Any = cfg.study.methods
    if raw is None:
        # params.yaml lists the study's methods as the keys of `methods:` (values: per-method overrides)
        raw = (params or {}).get("methods")
        if isinstance(raw, dict):
            raw = list(raw)
        source = f"`methods` of {params_file or 'the params file'}"
        if raw is None:
            raise UserError(
                f"no method list: set study.methods=[...] or give report.params_file with a `methods:` section "
                f"({params_file or 'no params file'} has none)"
            )
    if isinstance(raw, ListConfig):
        raw = OmegaConf.to_container(raw)
    if not isinstance(raw, list) or not raw:
        raise UserError(f"{source} must be a non-empty list of method names, got {raw!r}")
    methods = [str(m) for m in raw]
    bad = [m for m in methods if not METHOD_NAME.match(m)]
    if bad:
        raise UserError(f"{source} has invalid method names {bad}: use lower_snake_case names such as simclr")
    duplicates = sorted({m for m in methods if methods.count(m) > 1})
    if duplicates:
        raise UserError(f"{source} lists {duplicates} more than once")
    return methods


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    dpi = int(cfg.report.dpi)
    if not 30 <= dpi <= 600:
        raise UserError(f"report.dpi={dpi} is out of range; use 30..600")
    params_file = str(cfg.report.params_file or "")
    params = read_params(Path(params_file) if params_file else None)
    methods = study_methods(cfg, params, params_file)
    reports, models = Path(cfg.paths.reports), Path(cfg.paths.models)
    ensure_writable(reports / "summary.md", reports / "metrics.json", reports / HEADLINE_FILE, reports / "figures")
    dataset = {str(k): v for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items()}  # type: ignore[union-attr]

    study = load_study(reports, models, methods)
    if not study.has_any_metrics():
        raise UserError(
            f"no metrics at all under {reports}/{{{','.join(AREAS)}}}/ for methods {', '.join(methods)}; "
            "run `dvc repro` to build the study first"
        )
    if params is None and params_file:
        log.warning("params file %s not found: the protocol section lists no stage settings", params_file)

    groups = ood_groups(dataset)
    score = roc_score(study.roc, str(cfg.report.roc_score))
    with atomic_path(reports / "figures") as tmp:
        tmp.mkdir()
        figs = draw_figures(study, tmp, dpi, groups=groups, score=score)
        summary = build_summary(study, figs, dataset=dataset, params=params, params_file=params_file,
                                models_dir=str(models), reports_dir=str(reports))
        above = ssl_above_random_init(methods, study.area("probe"))
        metrics = metrics_json(study, None if above is None else len(above))
        write_text(reports / "summary.md", summary)
        write_json(reports / "metrics.json", metrics)
        write_json(reports / HEADLINE_FILE, headline(study))

    complete = sum(all(study.area(a).get(m) is not None for a in AREAS) for m in methods)
    log.info(
        "report: %d methods (%d complete, %d missing files), %d figures -> %s in %.1fs",
        len(methods), complete, len(study.missing), len(figs.images), reports / "summary.md",
        time.perf_counter() - start,
    )
    return {
        "methods": methods,
        "complete": complete,
        "missing": [str(m.path) for m in study.missing],
        "figures": sorted(figs.images),
        "ssl_above_random_init": above,
    }


main = stage_main(run, "report")

if __name__ == "__main__":
    main()
