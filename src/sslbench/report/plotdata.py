"""CSV tables for `dvc plots show/diff` (pure: long frames in, plot tables out), declared under `plots:` in
dvc.yaml.

The curves compared across methods (error vs severity, ROC, training loss and online top-1) are long tables, one
row per point: the x column, `method`, and the y column, drawn by the `lines_by_method` template
(.dvc/plots/lines_by_method.json: one colour per method, one dash per revision, so `dvc plots diff` overlays
experiments). Rows without a value are left out, so a method without data has no line. SSIM vs severity is wide
(severity, one column per corruption group: fixed names dvc.yaml can list). Values are percent (SSIM: raw).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from sslbench.report.load import CORRUPTION_GROUPS, STANDARD_CORRUPTIONS

if TYPE_CHECKING:
    import pandas as pd

ROC_GRID = np.linspace(0.0, 1.0, 101)


def _long(table: pd.DataFrame, x: str, y: str, methods: Sequence[str]) -> pd.DataFrame:
    """A wide table (x, <method>...) as rows (x, method, y) in method order, without missing values."""
    import pandas as pd

    present = [m for m in methods if m in table.columns]
    if table.empty or not present:
        return pd.DataFrame(columns=[x, "method", y])
    long = table.melt(id_vars=[x], value_vars=present, var_name="method", value_name=y).dropna(subset=[y])
    return long.reset_index(drop=True)


def severity_long(errors: pd.DataFrame | None, methods: Sequence[str]) -> pd.DataFrame:
    """severity, method, error: top-1 error (%) averaged over the 15 standard corruptions."""
    import pandas as pd

    if errors is None or errors.empty:
        return pd.DataFrame(columns=["severity", "method", "error"])
    standard = errors[errors["corruption"].isin(STANDARD_CORRUPTIONS)]
    table = standard.pivot_table(index="severity", columns="method", values="error", aggfunc="mean")
    return _long(table.reset_index().rename_axis(columns=None), "severity", "error", methods)


def roc_on_grid(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray = ROC_GRID) -> np.ndarray:
    """TPR on a common FPR grid: the upper envelope of the ROC step curve (max TPR at each FPR), interpolated."""
    order = np.argsort(fpr, kind="stable")
    fpr, tpr = np.asarray(fpr, float)[order], np.asarray(tpr, float)[order]
    unique, start = np.unique(fpr, return_index=True)
    best = np.maximum.reduceat(tpr, start)
    return np.interp(grid, unique, np.maximum.accumulate(best))


def roc_long(roc: pd.DataFrame | None, group: str, methods: Sequence[str], score: str) -> pd.DataFrame:
    """fpr, method, tpr: each method's ROC (one score) for one OOD group, resampled on a 0.01 FPR grid."""
    import pandas as pd

    table = pd.DataFrame({"fpr": ROC_GRID})
    for method in methods:
        part = None if roc is None else roc[(roc["group"] == group) & (roc["method"] == method)
                                            & (roc["score"] == score)]
        if part is not None and not part.empty:
            table[method] = roc_on_grid(part["fpr"].to_numpy(), part["tpr"].to_numpy())
    return _long(table, "fpr", "tpr", methods)


def ssim_wide(ssim: pd.DataFrame | None) -> pd.DataFrame:
    """severity, <group>...: SSIM to the clean image averaged over each group's corruptions."""
    import pandas as pd

    groups = list(CORRUPTION_GROUPS)
    if ssim is None or ssim.empty:
        return pd.DataFrame(columns=["severity", *groups])
    table = ssim.pivot_table(index="severity", columns="group", values="ssim", aggfunc="mean")
    return table.reindex(columns=groups).reset_index().rename_axis(columns=None)


# the training curves of the report's plot tables (deterministic for a seed: not the throughput)
TRAINING_CURVES = ("ssl_loss", "online_top1")


def curves_long(curves: pd.DataFrame | None, metric: str, methods: Sequence[str]) -> pd.DataFrame:
    """step, method, <metric>: one pretraining curve per method that logged it."""
    import pandas as pd

    if curves is None or curves.empty or metric not in set(curves["metric"]):
        return pd.DataFrame(columns=["step", "method", metric])
    part = curves[curves["metric"] == metric]
    table = part.pivot_table(index="step", columns="method", values="value", aggfunc="mean")
    return _long(table.reset_index().rename_axis(columns=None), "step", metric, methods)
