import numpy as np
import pandas as pd

from sslbench.report.plotdata import ROC_GRID, curves_long, roc_long, roc_on_grid, severity_long, ssim_wide


def test_roc_on_grid_is_the_upper_step_envelope() -> None:
    # a vertical step at fpr 0.5 (tpr 0.2 -> 0.9) must read 0.9 at 0.5, and the curve is monotone
    tpr = roc_on_grid(np.array([0.0, 0.5, 0.5, 1.0]), np.array([0.0, 0.2, 0.9, 1.0]))
    assert tpr[50] == 0.9 and tpr[0] == 0 and tpr[-1] == 1 and np.all(np.diff(tpr) >= 0)


def test_long_tables_have_a_row_per_point_of_each_method_with_data() -> None:
    # long tables (x, method, y) for the lines_by_method template: methods in study order, none without data
    errors = pd.DataFrame({"method": ["a", "a", "a", "c"], "corruption": ["snow", "snow", "spatter", "fog"],
                           "severity": [1, 2, 1, 1], "error": [10.0, 20.0, 99.0, 5.0]})
    long = severity_long(errors, ["c", "b", "a"])
    assert list(long.columns) == ["severity", "method", "error"]
    assert long.values.tolist() == [[1, "c", 5.0], [1, "a", 10.0], [2, "a", 20.0]]  # spatter is extra
    assert list(severity_long(None, ["a"]).columns) == ["severity", "method", "error"]
    roc = pd.DataFrame({"method": "a", "group": "near", "score": "knn", "fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})
    table = roc_long(roc, "near", ["a", "b"], "knn")
    assert list(table.columns) == ["fpr", "method", "tpr"] and len(table) == len(ROC_GRID)
    assert set(table["method"]) == {"a"} and np.allclose(table["tpr"], ROC_GRID)
    assert roc_long(roc, "near", ["a"], "msp").empty
    assert list(ssim_wide(None).columns) == ["severity", "noise", "blur", "weather", "digital", "extra"]
    curves = pd.DataFrame({"method": "b", "metric": "ssl_loss", "step": [0, 1], "epoch": 0, "value": [2.0, 1.0]})
    long = curves_long(curves, "ssl_loss", ["a", "b"])
    assert long.values.tolist() == [[0, "b", 2.0], [1, "b", 1.0]]
    assert list(curves_long(curves, "online_top1", ["a", "b"]).columns) == ["step", "method", "online_top1"]
