"""Wide CSV tables for `dvc plots show` (pure: long frames in, wide frames out).

DVC's templates draw one line per y column, so each table has the x column and one column per method (or per
corruption group), every column always present (empty where a method has no data) so that the `plots:` entries
of dvc.yaml, which list `${study.methods}` as y columns, always resolve. Values are percent (SSIM: raw).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from sslbench.report.load import CORRUPTION_GROUPS, STANDARD_CORRUPTIONS

if TYPE_CHECKING:
    import pandas as pd

ROC_GRID = np.linspace(0.0, 1.0, 101)


def severity_wide(errors: pd.DataFrame | None, methods: Sequence[str]) -> pd.DataFrame:
    """severity, <method>...: top-1 error (%) averaged over the 15 standard corruptions."""
    import pandas as pd

    if errors is None or errors.empty:
        return pd.DataFrame(columns=["severity", *methods])
    standard = errors[errors["corruption"].isin(STANDARD_CORRUPTIONS)]
    table = standard.pivot_table(index="severity", columns="method", values="error", aggfunc="mean")
    return table.reindex(columns=list(methods)).reset_index().rename_axis(columns=None)


def roc_on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray = ROC_GRID) -> np.ndarray:
    """TPR on a common FPR grid: the upper envelope of the ROC step curve (max TPR at each FPR), interpolated."""
    order = np.argsort(fpr, kind="stable")
    fpr, tpr = np.asarray(fpr, float)[order], np.asarray(tpr, float)[order]
    unique, start = np.unique(fpr, return_index=True)
    best = np.maximum.reduceat(tpr, start)
    return np.interp(grid, unique, np.maximum.accumulate(best))


def roc_wide(roc: pd.DataFrame | None, group: str, methods: Sequence[str], score: str) -> pd.DataFrame:
    """fpr, <method>...: each method's ROC (one score) for one OOD group, resampled on a 0.01 FPR grid."""
    import pandas as pd

    table = pd.DataFrame({"fpr": ROC_GRID})
    for method in methods:
        part = None if roc is None else roc[(roc["group"] == group) & (roc["method"] == method)
                                            & (roc["score"] == score)]
        table[method] = np.nan if part is None or part.empty else roc_on_grid(part["fpr"].to_numpy(),
                                                                              part["tpr"].to_numpy())
    return table


def ssim_wide(ssim: pd.DataFrame | None) -> pd.DataFrame:
    """severity, <group>...: SSIM to the clean image averaged over each group's corruptions."""
    import pandas as pd

    groups = list(CORRUPTION_GROUPS)
    if ssim is None or ssim.empty:
        return pd.DataFrame(columns=["severity", *groups])
    table = ssim.pivot_table(index="severity", columns="group", values="ssim", aggfunc="mean")
    return table.reindex(columns=groups).reset_index().rename_axis(columns=None)


TRAINING_CURVES = ("ssl_loss", "online_top1")


def curves_wide(curves: pd.DataFrame | None, metric: str, methods: Sequence[str]) -> pd.DataFrame:
    """step, <method>...: one pretraining curve per method (empty columns where a method did not log it)."""
    import pandas as pd

    if curves is None or curves.empty or metric not in set(curves["metric"]):
        return pd.DataFrame(columns=["step", *methods])
    part = curves[curves["metric"] == metric]
    table = part.pivot_table(index="step", columns="method", values="value", aggfunc="mean")
    return table.reindex(columns=list(methods)).reset_index().rename_axis(columns=None)
