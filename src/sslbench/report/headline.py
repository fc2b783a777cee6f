"""`reports/headline.json`: a handful of numbers per method, for a readable `dvc exp show`.

`{method: {linear_top1, knn_top1, mce, far_auroc, far_score, pretrain_s}}`, percent with one decimal (like
summary.md) and seconds: the linear probe's and kNN's test top-1, the mCE, the far-OOD AUROC of the score that is
best for that method (`far_score`, chosen on the test sets: an optimistic summary; every score is in metrics.json)
and the pretraining wall time. A number whose file or key is missing is null. dvc.yaml declares the file first
among the metrics, so that these are the first columns of `dvc exp show`; the metric names hold no `/`, so
`dvc exp show --only-changed --drop '.*/'` leaves them and the changed params (README.md, the ablation commands).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sslbench.report.load import StudyResults

HEADLINE_FILE = "headline.json"
FAR_GROUP = "far"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _percent(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else round(100 * number, 1)


def best_score(ood: Mapping[str, Any], group: str = FAR_GROUP) -> tuple[str | None, float | None]:
    """(score, AUROC) of the score with the highest `ood/<group>/<score>/auroc`; (None, None) when none has one."""
    prefix = f"ood/{group}/"
    best: tuple[str | None, float | None] = (None, None)
    for key, value in ood.items():
        parts = key[len(prefix):].split("/") if key.startswith(prefix) else []
        number = _number(value)
        if len(parts) == 2 and parts[1] == "auroc" and number is not None and (best[1] is None or number > best[1]):
            best = (parts[0], number)
    return best


def headline(study: StudyResults) -> dict[str, dict[str, Any]]:
    """The headline numbers of every method of the study, in study order."""
    out: dict[str, dict[str, Any]] = {}
    for method in study.methods:
        probe = study.area("probe").get(method) or {}
        robust = study.area("robustness").get(method) or {}
        pretrain = study.area("pretrain").get(method) or {}
        score, auroc = best_score(study.area("ood").get(method) or {})
        wall = _number(pretrain.get("pretrain/wall_s"))
        out[method] = {
            "linear_top1": _percent(probe.get("linear/top1")),
            "knn_top1": _percent(probe.get("knn/top1")),
            "mce": _percent(robust.get("robustness/mce")),
            "far_auroc": _percent(auroc),
            "far_score": score,
            "pretrain_s": None if wall is None else round(wall, 1),
        }
    return out
