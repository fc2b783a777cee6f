"""Load every metrics file and plot table that `report` reads, tolerating missing ones (docs/pipeline.md).

A missing or unreadable input never raises here: it becomes a `MissingInput` naming the file and the
`dvc repro` command that rebuilds it, and the tables show "—" for it. The stage raises only when nothing at all
exists. Metric keys are kept exactly as the stages wrote them (`group/name`); consumers parse them by prefix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslbench.data.corruption_names import COMMON
from sslbench.data.corruption_names import CORRUPTION_GROUPS as CORRUPTION_GROUPS
from sslbench.data.corruption_names import CORRUPTIONS as CORRUPTIONS
from sslbench.data.corruption_names import corruption_group as corruption_group
from sslbench.paths import not_applicable

if TYPE_CHECKING:
    import pandas as pd

# Per-method metrics files, in report order: area -> the stage that writes reports/<area>/<method>.json.
AREAS: tuple[str, ...] = ("pretrain", "probe", "robustness", "ood")

# ImageNet-C's corruption names (Hendrycks & Dietterich 2019), defined in sslbench.data.corruption_names: the 15
# standard ones of mCE (`COMMON` there) in 4 groups, plus 4 held-out "extra" ones
STANDARD_CORRUPTIONS: tuple[str, ...] = COMMON


@dataclass(frozen=True)
class MissingInput:
    """An input the report wanted but could not use: the file, why, and the command that rebuilds it."""

    path: Path
    rebuild: str
    reason: str = "missing"

    def sentence(self) -> str:
        return f"`{self.path}` is {self.reason}: run `{self.rebuild}` to build it."


@dataclass
class StudyResults:
    """Everything `report` read. `metrics[area][method]` is the flat dict, or None when that file is missing.

    Plot tables are long pandas frames (None when no method has them):
    errors: method, corruption, group, severity, error; roc: method, group, score, fpr, tpr;
    ssim: corruption, group, severity, ssim; curves: method, metric, step, epoch, value.
    """

    methods: list[str]
    metrics: dict[str, dict[str, dict[str, Any] | None]]
    missing: list[MissingInput] = field(default_factory=list)
    missing_plots: list[MissingInput] = field(default_factory=list)
    errors: pd.DataFrame | None = None
    roc: pd.DataFrame | None = None
    ssim: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    gradcam: dict[str, Path] = field(default_factory=dict)
    model_configs: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def area(self, area: str) -> dict[str, dict[str, Any] | None]:
        return self.metrics.get(area, {m: None for m in self.methods})

    def has_any_metrics(self) -> bool:
        return any(v is not None for per_method in self.metrics.values() for v in per_method.values())

    def missing_for(self, area: str) -> dict[str, MissingInput]:
        """method -> its missing metrics file in `area` (for the footnotes of that area's tables)."""
        return {m.path.stem: m for m in self.missing if m.path.parent.name == area}

    def merged(self) -> dict[str, dict[str, Any]]:
        """method -> all its metrics from every area (keys kept as written; first area wins on a clash)."""
        out: dict[str, dict[str, Any]] = {}
        for method in self.methods:
            merged: dict[str, Any] = {}
            for area in AREAS:
                for key, value in (self.area(area).get(method) or {}).items():
                    merged.setdefault(key, value)
            out[method] = merged
        return out


# the DVC stage that writes each area's metrics (probe, robustness and ood run in one `evaluate` stage per method)
STAGE_OF_AREA = {"probe": "evaluate", "robustness": "evaluate", "ood": "evaluate"}


def rebuild_command(area: str, method: str) -> str:
    return f"dvc repro {STAGE_OF_AREA.get(area, area)}@{method}"


def _read_metrics(path: Path, rebuild: str) -> tuple[dict[str, Any] | None, MissingInput | None]:
    if not path.is_file():
        return None, MissingInput(path, rebuild)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return None, MissingInput(path, rebuild, f"unreadable ({type(err).__name__})")
    if not isinstance(data, dict):
        return None, MissingInput(path, rebuild, "not a flat JSON object")
    return data, None


def _read_csv(path: Path, required: Iterable[str], rebuild: str) -> tuple[pd.DataFrame | None, MissingInput | None]:
    import pandas as pd

    if not path.is_file():
        return None, MissingInput(path, rebuild)
    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    except (OSError, ValueError) as err:
        return None, MissingInput(path, rebuild, f"unreadable ({type(err).__name__})")
    lacking = [c for c in required if c not in frame.columns]
    if lacking:
        return None, MissingInput(path, rebuild, f"lacking the column(s) {', '.join(lacking)}")
    return frame, None


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame | None:
    import pandas as pd

    return pd.concat(frames, ignore_index=True) if frames else None


def load_study(reports: Path, models: Path, methods: Sequence[str]) -> StudyResults:
    """Read `reports/{pretrain,probe,robustness,ood}/<method>.json`, the plot tables and the model configs."""
    import yaml

    results = StudyResults(methods=list(methods), metrics={a: {} for a in AREAS})
    for area in AREAS:
        for method in methods:
            data, missing = _read_metrics(reports / area / f"{method}.json", rebuild_command(area, method))
            results.metrics[area][method] = data
            if missing:
                results.missing.append(missing)

    errors, rocs, curves = [], [], []
    for method in methods:
        if results.metrics["robustness"][method] is not None:
            rebuild = rebuild_command("robustness", method)
            frame, missing = _read_csv(
                reports / "robustness" / "plots" / method / "errors.csv", ("corruption", "severity", "error"), rebuild
            )
            if frame is not None:
                frame = frame[["corruption", "severity", "error"]].assign(method=method)
                frame["group"] = frame["corruption"].map(corruption_group)
                errors.append(frame)
            elif missing:
                results.missing_plots.append(missing)
            png = reports / "robustness" / "gradcam" / f"{method}.png"
            if png.is_file():
                if not_applicable(png) is None:  # a placeholder (Grad-CAM switched off) is skipped
                    results.gradcam[method] = png
            else:
                results.missing_plots.append(MissingInput(png, rebuild))
        if results.metrics["ood"][method] is not None:
            rebuild = rebuild_command("ood", method)
            files = sorted((reports / "ood" / "plots" / method).glob("roc_*.csv"))
            if not files:
                results.missing_plots.append(MissingInput(reports / "ood" / "plots" / method / "roc_<group>.csv",
                                                          rebuild))
            for path in files:
                if not_applicable(path) is not None:  # an empty OOD group (a header, no rows): nothing to draw
                    continue
                frame, missing = _read_csv(path, ("fpr",), rebuild)
                if frame is not None:
                    rocs += _roc_long(frame, method, path.stem[len("roc_") :])
                elif missing:
                    results.missing_plots.append(missing)
        curves += _read_training_curves(reports.joinpath(*LIVE_CURVES, method), method)
        config_path = models / method / "config.yaml"
        try:
            loaded = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
        except (OSError, yaml.YAMLError):
            loaded = None
        results.model_configs[method] = loaded if isinstance(loaded, dict) else None

    results.errors, results.roc, results.curves = _concat(errors), _concat(rocs), _concat(curves)
    results.ssim = _read_ssim(reports / "corrupt" / "ssim.csv", results.missing_plots)
    return results


def _roc_long(frame: pd.DataFrame, method: str, group: str) -> list[pd.DataFrame]:
    """ROC table -> long rows (method, group, score, fpr, tpr).

    Accepts the wide layout the ood stage writes (`fpr,<score>,<score>...`: TPR per score on one FPR grid) and
    the plain `fpr,tpr` one (score "").
    """
    import pandas as pd

    columns = ["tpr"] if "tpr" in frame.columns else [c for c in frame.columns if c != "fpr"]
    return [
        pd.DataFrame({"method": method, "group": group, "score": "" if c == "tpr" else str(c),
                      "fpr": frame["fpr"], "tpr": frame[c]}).dropna()
        for c in columns
        if pd.api.types.is_numeric_dtype(frame[c])
    ]


def _read_ssim(path: Path, missing_plots: list[MissingInput]) -> pd.DataFrame | None:
    frame, missing = _read_csv(path, ("corruption", "severity"), "dvc repro corrupt")
    if frame is None:
        if missing:
            missing_plots.append(missing)
        return None
    columns = [c for c in frame.columns if "ssim" in str(c).lower()]
    if not columns:
        missing_plots.append(MissingInput(path, "dvc repro corrupt", "lacking an SSIM column"))
        return None
    out = frame[["corruption", "severity", columns[0]]].rename(columns={columns[0]: "ssim"})
    out["group"] = out["corruption"].map(corruption_group)
    return out


# the pretrain stage's training log (DVCLive, sslbench.training.live): reports/pretrain/live/<method>/plots/metrics/
LIVE_CURVES = ("pretrain", "live")
# curves in the order the figures show them; others follow in file order
CURVE_ORDER = ("ssl_loss", "online_top1", "lr", "feature_std", "effective_rank", "images_per_s")


def _read_training_curves(folder: Path, method: str) -> list[pd.DataFrame]:
    """Training curves the pretrain stage logged under `folder`: DVCLive's `plots/metrics/<name>.tsv` (columns
    `step`, `<name>`, maybe `timestamp`), or any CSV/TSV with a `step` (else `epoch`) column and several curves.

    Long rows (method, metric, step, epoch, value), curves in `CURVE_ORDER`: the files are joined on x, so a
    curve's `epoch` is that of its step when an `epoch` curve or column exists (NaN otherwise, e.g. the collapse
    indicators before the first step); `timestamp` is ignored.
    """
    import pandas as pd

    if not folder.is_dir():
        return []
    tables: list[pd.DataFrame] = []
    for path in sorted([*folder.rglob("*.tsv"), *folder.rglob("*.csv")]):
        try:
            frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        except (OSError, ValueError):
            continue
        x = next((c for c in ("step", "epoch") if c in frame.columns), None)
        if x is not None:
            tables.append(frame.drop(columns=[c for c in ("timestamp",) if c in frame.columns]).set_index(x))
    if not tables:
        return []
    x = str(tables[0].index.name)
    names = [c for c in dict.fromkeys(c for t in tables for c in t.columns) if c not in ("step", "epoch")]
    joined = pd.concat([t[~t.index.duplicated(keep="last")] for t in tables], axis=1, join="outer")
    joined = joined.loc[:, ~joined.columns.duplicated()].sort_index()
    epoch = joined["epoch"] if "epoch" in joined.columns and x != "epoch" else float("nan")
    order = sorted(names, key=lambda n: CURVE_ORDER.index(n) if n in CURVE_ORDER else len(CURVE_ORDER))
    frames: list[pd.DataFrame] = []
    for name in order:
        if not pd.api.types.is_numeric_dtype(joined[name]):
            continue
        frame = pd.DataFrame({"method": method, "metric": name, "step": joined.index, "epoch": epoch,
                              "value": joined[name]}).dropna(subset=["value"])
        frames.append(frame.reset_index(drop=True))
    return frames


def metric_values(per_method: Mapping[str, Mapping[str, Any] | None], key: str) -> dict[str, Any]:
    """method -> value of `key` for every method whose file has it."""
    return {m: d[key] for m, d in per_method.items() if d is not None and key in d}
