from pathlib import Path

import pandas as pd

from sslbench.report import figures


def test_figures_draw_nothing_without_data(tmp_path: Path) -> None:
    assert figures.accuracy_bars(pd.DataFrame(columns=["method", "protocol", "top1"]), tmp_path / "a.png",
                                 methods=["a"], baseline=None) is None
    assert figures.corruption_heatmap({}, tmp_path / "b.png", methods=["a"], title="") is None
    assert figures.error_vs_severity(None, tmp_path / "c.png", methods=["a"]) is None
    assert figures.ood_auroc_bars([{"method": "a", "auroc": None}], tmp_path / "d.png", methods=["a"]) is None
    assert figures.roc_curves(None, tmp_path / "e.png", methods=["a"]) is None
    assert figures.gradcam_grid({}, tmp_path / "f.png", methods=["a"]) is None
    assert figures.ssim_vs_severity(None, tmp_path / "g.png") is None
    assert not any(tmp_path.iterdir())
