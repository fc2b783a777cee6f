from pathlib import Path

from sslbench.report.load import corruption_group, load_study
from tests.report.fakes import write_fake_study


def test_load_study_tolerates_missing_and_broken_inputs(tmp_path: Path) -> None:
    root = write_fake_study(tmp_path, methods=("simclr", "byol"), missing=(("ood", "byol"),))
    (root / "reports" / "probe" / "simclr.json").write_text("{not json")
    (root / "reports" / "robustness" / "plots" / "byol" / "errors.csv").write_text("a,b\n1,2\n")
    live = root / "reports" / "pretrain" / "live" / "byol" / "plots" / "metrics"  # DVCLive's layout
    (live / "knn_top1.tsv").write_text("timestamp\tstep\tknn_top1\n0\t0\t0.1\n0\t5\t0.3\n")
    study = load_study(root / "reports", root / "models", ["simclr", "byol"])
    assert study.area("probe")["simclr"] is None and study.area("probe")["byol"] is not None
    reasons = {(m.path.parent.name, m.path.stem): (m.reason, m.rebuild) for m in study.missing}
    assert reasons == {("probe", "simclr"): ("unreadable (JSONDecodeError)", "dvc repro evaluate@simclr"),
                       ("ood", "byol"): ("missing", "dvc repro evaluate@byol")}
    assert any("lacking the column(s) corruption, severity, error" in m.sentence() for m in study.missing_plots)
    assert set(study.errors["method"]) == {"simclr"} and set(study.roc["method"]) == {"simclr"}
    assert set(study.roc["group"]) == {"near", "far"} and set(study.gradcam) == {"simclr", "byol"}
    # the ood stage's wide ROC files: one curve per score; deterministic models have no stochastic score
    assert set(study.roc["score"]) == {"msp", "energy", "mahalanobis", "knn"}
    assert study.ssim is not None and set(study.ssim["group"]) == {"noise", "blur", "weather", "digital", "extra"}
    # the pretrain stage's DVCLive TSVs joined on step: `epoch` is a column, not a curve; timestamps are ignored;
    # curves in the figures' order, then the others
    curves = study.curves
    assert list(dict.fromkeys(curves[curves["method"] == "byol"]["metric"])) == [
        "ssl_loss", "online_top1", "lr", "feature_std", "images_per_s", "knn_top1"]
    knn = curves[curves["metric"] == "knn_top1"]
    assert knn["step"].tolist() == [0, 5] and knn["epoch"].isna().tolist() == [True, False]
    std = curves[(curves["metric"] == "feature_std") & (curves["method"] == "simclr")]
    assert std["step"].tolist() == [0, 5, 10, 15, 20, 25, 30] and std["epoch"].tolist()[1:3] == [0, 1]
    assert study.model_configs["byol"]["pretrain"]["epochs"] == 6
    assert study.merged()["simclr"]["pretrain/wall_s"] > 0 and corruption_group("fog") == "weather"
