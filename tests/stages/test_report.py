import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from sslbench.errors import UserError
from sslbench.stages import report
from tests.report.fakes import METHODS, write_fake_study

FIGURES = {"accuracy.png", "mce_heatmap.png", "error_vs_severity.png", "ood_auroc.png", "roc_curves.png",
           "gradcam_grid.png", "ssim_vs_severity.png", "training_curves.png"}


def _cfg(root: Path, *extra: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfg = hydra_compose("report", overrides=[
            f"paths.reports={root / 'reports'}", f"paths.models={root / 'models'}",
            f"report.params_file={root / 'params.yaml'}", "report.dpi=40", *extra,
        ])
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One report run over a fake 5-method study whose byol probe and robustness results are missing."""
    root = write_fake_study(tmp_path_factory.mktemp("report"))
    return root, report.run(_cfg(root))  # study.methods comes from the params file


def test_report_writes_summary_figures_and_metrics(study: tuple[Path, dict]) -> None:
    root, result = study
    reports = root / "reports"
    assert result["methods"] == list(METHODS) and result["complete"] == 4
    assert set(result["figures"]) == FIGURES and result["ssl_above_random_init"] == ["simclr"]
    for name in FIGURES:
        image = mpimg.imread(reports / "figures" / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 50 and image.std() > 0.01, name
    assert sorted(p.name for p in (reports / "figures" / "data").iterdir()) == [
        "accuracy.csv", "error_vs_severity.csv", "pretrain_online_top1.csv", "pretrain_ssl_loss.csv", "roc_far.csv",
        "roc_near.csv", "ssim_vs_severity.csv"]
    # long tables for dvc.yaml's `plots:` (x, method, y): one line per method with data, in study order
    errors = (reports / "figures" / "data" / "error_vs_severity.csv").read_text().splitlines()
    assert errors[0] == "severity,method,error"
    assert list(dict.fromkeys(row.split(",")[1] for row in errors[1:])) == [m for m in METHODS if m != "byol"]
    loss = (reports / "figures" / "data" / "pretrain_ssl_loss.csv").read_text().splitlines()
    assert loss[0] == "step,method,ssl_loss" and len(loss) == 1 + 30 * len(METHODS)
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_headline_has_a_handful_of_numbers_per_method(study: tuple[Path, dict]) -> None:
    root, _ = study
    head = json.loads((root / "reports" / "headline.json").read_text())
    assert list(head) == list(METHODS)
    assert all(list(numbers) == ["linear_top1", "knn_top1", "mce", "far_auroc", "far_score", "pretrain_s"]
               for numbers in head.values())
    merged = json.loads((root / "reports" / "metrics.json").read_text())["simclr"]
    simclr = head["simclr"]
    assert simclr["linear_top1"] == 46.4 and simclr["knn_top1"] == round(100 * merged["knn/top1"], 1)
    assert simclr["mce"] == round(100 * merged["robustness/mce"], 1)
    far = {k.split("/")[2]: v for k, v in merged.items() if k.startswith("ood/far/") and k.endswith("/auroc") and v}
    assert simclr["far_score"] == max(far, key=far.__getitem__)
    assert simclr["far_auroc"] == round(100 * max(far.values()), 1)
    assert simclr["pretrain_s"] == round(merged["pretrain/wall_s"], 1)
    assert head["byol"]["linear_top1"] is None and head["byol"]["mce"] is None  # its files are missing
    assert head["byol"]["far_auroc"] is not None


def test_summary_reads_like_a_results_section(study: tuple[Path, dict]) -> None:
    root, _ = study
    text = (root / "reports" / "summary.md").read_text()
    for heading in ("## Setup and protocol", "## Pretraining", "## Accuracy", "## Corruption robustness",
                    "## Out-of-distribution detection", "## Figures", "## Missing results"):
        assert heading in text
    # the first lines: the scale, and which methods beat random_init beyond noise (the rest pointed to parity)
    lines = text.splitlines()
    assert lines[2].startswith("**Scale.** `shapes` (embedded data that `prepare` generates; 10 classes")
    assert lines[4].startswith("**Above `random_init` beyond noise** (linear-probe test top-1): simclr. "
                               "**Not beyond noise:** barlow_twins_bayes_h.") and "docs/parity.md" in lines[4]
    # missing inputs: dashes and a footnote naming the file and the command
    assert "| byol[^probe-byol] | — |" in text
    assert f"[^probe-byol]: `{root}/reports/probe/byol.json` is missing: run `dvc repro evaluate@byol`" in text
    assert "[^robustness-byol]:" in text and "dvc repro evaluate@byol" in text
    # byol's OOD results exist, so its OOD rows are real numbers
    assert "| byol | —" not in text.split("## Out-of-distribution detection")[1]
    assert "mCE (normalised by supervised)" in text and "OOD = positive class" in text
    assert text.count("paper-scale anchor, not comparable:") >= 3
    assert "**Quality bar**" in text and "simclr (+13.5)" in text and "barlow_twins_bayes_h (-1.9" in text
    assert "100 epochs, lr 0.3" in text and "| simclr | convnet | 6 | 256 | 32 | 0 | no |" in text
    assert "| barlow_twins_bayes_h | convnet | 6 | 256 | 32 | 0 | h: β 0.001, M 12, prior standard |" in text
    assert "ROC curves of the `knn` score" in text and "subsets of 1% (40 labels) and 10% (400 labels)" in text
    assert "46.4" in text and "0.464" not in text  # percent with one decimal
    for link in [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]:
        assert (root / "reports" / link).is_file()


def test_metrics_json_is_nested_by_method(study: tuple[Path, dict]) -> None:
    root, _ = study
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert list(metrics) == [*METHODS, "study"]
    assert metrics["simclr"]["linear/top1"] == 0.464 and metrics["simclr"]["ood/convention"] == "ood_positive"
    assert "linear/top1" not in metrics["byol"] and "ood/near/knn/auroc" in metrics["byol"]
    assert metrics["study"] == {"methods": 5, "methods_with_results": 5, "missing_files": 2,
                                "ssl_above_random_init": 1}


def test_nothing_at_all_is_a_user_error_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no metrics at all .* run `dvc repro`"):
        report.run(_cfg(tmp_path, "study.methods=[simclr,byol]", "report.params_file="))
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("study.methods=[simclr,simclr]", "more than once"),
        ("study.methods=[SimCLR]", "invalid method names"),
        ("study.methods=[]", "non-empty list"),
        ("report.dpi=5", "out of range"),
    ],
)
def test_bad_config_fails_before_work(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        report.run(_cfg(tmp_path, override))
    assert not (tmp_path / "reports").exists()


def test_method_list_needs_config_or_params_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no method list"):
        report.run(_cfg(tmp_path, "report.params_file="))


def test_stage_import_is_light() -> None:
    code = ("import sys, sslbench.stages.report; "
            "print(sorted(m for m in ('torch', 'lightning', 'torchmetrics', 'seaborn', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_imported_encoders_are_marked_with_their_source_and_the_published_anchor(tmp_path: Path) -> None:
    import yaml

    root = write_fake_study(tmp_path, missing=())
    config_path = root / "models" / "supervised" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["method"] = {"name": "supervised", "weights": {"path": "weights/r50.pth", "format": "torchvision"},
                        "reported": {"linear_top1": 76.1, "source": "torchvision model zoo"}}
    config["imported"] = {"path": "weights/r50.pth", "format": "torchvision", "branch": None, "sha256": "ab" * 32,
                          "source": "state_dict", "dropped": {"fc": 2}}
    config_path.write_text(yaml.safe_dump(config))
    report.run(_cfg(root))
    text = (root / "reports" / "summary.md").read_text()
    assert ("| supervised | `weights/r50.pth` | torchvision | — | `abababababab…` | fc (2 tensors) | 76.1 "
            "| torchvision model zoo |") in text
    accuracy = text.split("## Accuracy")[1].split("## Corruption robustness")[0]
    header = next(line for line in accuracy.splitlines() if line.startswith("| method |"))
    assert "published linear top-1 (paper-scale anchor, not comparable: the publisher's own linear protocol)" in header
    row = next(line for line in accuracy.splitlines() if line.startswith("| supervised[^imported] |"))
    assert row.rstrip(" |").endswith("76.1") and "| simclr |" in accuracy  # trained rows stay unmarked
    assert "## Notes" in text and "[^imported]: Imported from a published weights file" in text
    assert "## Missing results" not in text
