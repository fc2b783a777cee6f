import numpy as np
import pandas as pd

from sslbench.report.plotdata import ROC_GRID, curves_wide, roc_on_grid, roc_wide, severity_wide, ssim_wide


def test_roc_on_grid_is_the_upper_step_envelope() -> None:
    # a vertical step at fpr 0.5 (tpr 0.2 -> 0.9) must read 0.9 at 0.5, and the curve is monotone
    tpr = roc_on_grid(np.array([0.0, 0.5, 0.5, 1.0]), np.array([0.0, 0.2, 0.9, 1.0]))
    assert tpr[50] == 0.9 and tpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(tpr) >= 0)


def test_wide_tables_keep_every_method_column() -> None:
    errors = pd.DataFrame({"method": ["a", "a", "a"], "corruption": ["snow", "snow", "spatter"],
                           "severity": [1, 2, 1], "error": [10.0, 20.0, 99.0]})
    wide = severity_wide(errors, ["a", "b"])
    assert list(wide.columns) == ["severity", "a", "b"] and wide["a"].tolist() == [10.0, 20.0]  # spatter is extra
    assert wide["b"].isna().all()
    roc = pd.DataFrame({"method": "a", "group": "near", "score": "knn", "fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})
    table = roc_wide(roc, "near", ["a", "b"], "knn")
    assert len(table) == len(ROC_GRID) and np.allclose(table["a"], ROC_GRID) and table["b"].isna().all()
    assert roc_wide(roc, "near", ["a"], "msp")["a"].isna().all()
    assert list(ssim_wide(None).columns) == ["severity", "noise", "blur", "weather", "digital", "extra"]
    curves = pd.DataFrame({"method": "b", "metric": "ssl_loss", "step": [0, 1], "epoch": 0, "value": [2.0, 1.0]})
    wide = curves_wide(curves, "ssl_loss", ["a", "b"])
    assert list(wide.columns) == ["step", "a", "b"] and wide["b"].tolist() == [2.0, 1.0]
    assert list(curves_wide(curves, "online_top1", ["a", "b"]).columns) == ["step", "a", "b"]
