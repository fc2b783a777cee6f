from pathlib import Path

import pytest

from sslbench.report.load import MissingInput
from sslbench.report.tables import (
    Column,
    accuracy_table,
    finetune_note,
    format_value,
    metric_table,
    ood_tables,
    percent_scale,
    quality_bar,
    random_init_margins,
    relative_mce_note,
    robustness_group_tables,
    robustness_table,
    semisup_columns,
    ssl_above_random_init,
    transfer_table,
    weight_decay_table,
)

METHODS = ["random_init", "supervised", "simclr", "byol"]
MISSING = {"byol": MissingInput(Path("reports/probe/byol.json"), "dvc repro probe@byol")}


def probe() -> dict:
    return {
        "random_init": {"linear/top1": 0.329, "linear/top1_wd1e-04": 0.33, "linear/top1_wd1e-06": 0.31,
                        "knn/top1": 0.3, "transfer/digits/top1": 0.5, "transfer/digits/macro_acc": 0.49},
        "supervised": {"linear/top1": 0.8, "linear/top1_wd1e-04": 0.8, "linear/top1_wd1e-06": 0.79,
                       "knn/top1": 0.78, "semisup/new_top1": 0.5, "semisup/n_labels_1pct": 40},
        "simclr": {"linear/top1": 0.464, "linear/top1_wd1e-04": 0.46, "linear/top1_wd1e-06": 0.45,
                   "knn/top1": None, "linear/weight_decay": 1e-4},
        "byol": None,
    }


def test_format_value_and_percent_scale() -> None:
    assert format_value(0.4644, "pct") == "46.4"
    assert format_value(None, "pct") == format_value(float("nan"), "pct") == "n/a"
    assert format_value(1e-4, "sci") == "1e-04"
    assert format_value(95.0, "seconds") == "95 s" and format_value(600.0, "seconds") == "10.0 min"
    assert percent_scale([0.3, 0.9], "pct") == 100 and percent_scale([30.0, 90.0], "pct") == 1
    # CE ratios may exceed 1 as fractions; only values above 10 mean "already percent"
    assert percent_scale([0.8, 2.1], "ratio") == 100 and percent_scale([80.0, 210.0], "ratio") == 1


def test_missing_file_row_is_dashes_with_footnote_and_missing_key_is_na() -> None:
    table = accuracy_table(METHODS, probe(), MISSING)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.markdown.splitlines()[2:]}
    assert "byol[^probe-byol]" in rows and rows["byol[^probe-byol]"].count("—") == 4  # 4 kept metric columns
    assert table.footnotes == {"probe-byol": "`reports/probe/byol.json` is missing: run `dvc repro probe@byol` "
                                             "to build it."}
    assert "| n/a |" in rows["simclr"]  # knn/top1 is null in simclr's file
    assert "**80.0**" in rows["supervised"] and "46.4" in rows["simclr"]
    # columns that no file reports are dropped with a note; unknown keys under the prefixes still show up
    assert any("linear macro acc" in n and "omitted" in n for n in table.notes)
    header = table.markdown.splitlines()[0]
    assert "`semisup/new_top1`" in header and "n_labels" not in header  # counts stay out of the table


def test_accuracy_anchors_are_separate_labelled_columns() -> None:
    table = accuracy_table(METHODS, probe(), MISSING)
    header = table.markdown.splitlines()[0]
    assert header.count("paper-scale anchor, not comparable:") == 2
    assert "TinyImageNet" in header and "solo-learn" not in header and "CIFAR-10, ResNet-18, 1000 epochs" in header
    simclr = next(line for line in table.markdown.splitlines() if line.startswith("| simclr "))
    assert simclr.rstrip(" |").endswith("45.2 | 90.7")  # DISSL-repo and solo-learn SimCLR anchors
    random_init = next(line for line in table.markdown.splitlines() if line.startswith("| random_init "))
    assert random_init.endswith("|  |  |")  # no anchor for the baselines
    assert any("solo-learn" in n for n in table.notes)  # sources named under the table


def test_weight_decay_and_transfer_tables_parse_keys_by_prefix() -> None:
    wd = weight_decay_table(METHODS, probe(), MISSING)
    assert wd.markdown.splitlines()[0] == "| method | wd 1e-04 | wd 1e-06 |"
    tr = transfer_table(METHODS, probe(), MISSING)
    assert "digits top-1 (micro)" in tr.markdown and "digits macro acc" in tr.markdown
    assert "| supervised | n/a | n/a |" in tr.markdown


def test_robustness_tables_name_the_reference_and_groups() -> None:
    robust = {
        "supervised": {"robustness/mce": 1.0, "robustness/clean_error": 0.2, "robustness/reference": "supervised",
                       "robustness/group/noise": 1.0, "robustness/group/blur": 1.0},
        "simclr": {"robustness/mce": 1.31, "robustness/clean_error": 0.5, "robustness/reference": "supervised",
                   "robustness/group/noise": 1.5, "robustness/group/blur": 1.2, "robustness/ce/snow": 1.1},
    }
    table = robustness_table(["supervised", "simclr"], robust, {})
    assert "mCE (normalised by supervised)" in table.markdown
    assert "| simclr | 50.0 | 131.0 |" in table.markdown and "ImageNet-C mean error (19)" in table.markdown
    groups = robustness_group_tables(["supervised", "simclr"], robust, {})
    assert list(groups) == [""] and "| method | noise | blur |" in groups[""].markdown


def test_ood_tables_per_group_with_na_for_stochastic_scores() -> None:
    ood = {
        "simclr": {"ood/near/knn/auroc": 0.7, "ood/near/knn/fpr95": 0.6, "ood/far/knn/auroc": 0.9,
                   "ood/far/knn/fpr@95tpr": 0.3},
        "vicreg_bayes_h": {"ood/near/knn/auroc": 0.65, "ood/near/knn/fpr95": 0.7, "ood/near/mean_sigma/auroc": 0.6,
                           "ood/near/mean_sigma/fpr95": 0.8, "ood/far/knn/auroc": 0.8, "ood/far/knn/fpr95": 0.5},
        "byol": None,
    }
    tables = ood_tables(["simclr", "vicreg_bayes_h", "byol"], ood, {})
    assert list(tables) == ["near", "far"]
    near = tables["near"].markdown
    assert "| simclr | **70.0 / 60.0** | n/a |" in near
    assert "| vicreg_bayes_h | 65.0 / 70.0 | 60.0 / 80.0 |" in near  # a single value is not bolded
    assert "| byol | — | — |" in near
    assert "| simclr | **90.0 / 30.0** |" in tables["far"].markdown  # fpr key matched by prefix


@pytest.mark.parametrize("n_test", [None, 1000])
def test_quality_bar_is_computed_from_the_data(n_test: int | None) -> None:
    p = probe() | {"barlow_twins": {"linear/top1": 0.32}}
    methods = [*METHODS, "barlow_twins"]
    text = quality_bar(methods, p, n_test=n_test)
    assert "1 of 2 SSL methods with results beat it: simclr (+13.5)" in text
    assert "Not above it: barlow_twins (-0.9" in text and "No linear-probe result: byol" in text
    assert ("within noise" in text) == (n_test is not None)
    assert ssl_above_random_init(methods, p) == ["simclr"]
    assert "not evaluated" in quality_bar(methods, {"simclr": {"linear/top1": 0.5}})


def test_metric_table_with_no_present_method_is_empty() -> None:
    assert metric_table(["a"], {"a": None}, [Column("x/y", "x")], {}).empty


def test_semisup_columns_follow_the_fractions_in_the_files() -> None:
    p = {"a": {"semisup/linear_top1_50pct": 0.4, "semisup/finetune_top1_10pct": 0.3, "semisup/n_labels_10pct": 30,
               "semisup/finetune_top1_50pct": 0.5}}
    assert [(c.key, c.header) for c in semisup_columns(p)] == [
        ("semisup/finetune_top1_10pct", "fine-tune 10%"), ("semisup/finetune_top1_50pct", "fine-tune 50%"),
        ("semisup/linear_top1_50pct", "linear 50%")]
    header = accuracy_table(["a"], p, {}).markdown.splitlines()[0]
    assert "fine-tune 50%" in header and "`semisup" not in header
    assert [c.header for c in semisup_columns({"a": {}})] == ["fine-tune 1%", "fine-tune 10%", "linear 1%",
                                                              "linear 10%"]


def test_random_init_margins_count_only_what_is_beyond_noise() -> None:
    probe = {"random_init": {"linear/top1": 0.30}, "supervised": {"linear/top1": 0.9}, "a": {"linear/top1": 0.36},
             "b": {"linear/top1": 0.31}, "c": {"linear/top1": 0.25}, "d": None}
    methods = ["random_init", "supervised", "a", "b", "c", "d"]
    # n = 1000: half-width 1.96 * sqrt(.3 * .7 / 1000) = 2.8 points; a is 6 above, b 1 above, c below
    assert random_init_margins(methods, probe, 1000) == (["a"], ["b", "c"])
    assert random_init_margins(methods, probe, None) == (["a", "b"], ["c"])  # no n: every positive margin
    assert random_init_margins(["a"], {"a": {"linear/top1": 0.5}}, 1000) is None


def test_finetune_note_compares_with_the_linear_probe_on_the_same_labels() -> None:
    probe = {
        "supervised": {"semisup/finetune_top1_1pct": 0.15, "semisup/linear_top1_1pct": 0.19,
                       "semisup/finetune_steps_1pct": 100, "semisup/finetune_top1_10pct": 0.40,
                       "semisup/linear_top1_10pct": 0.31, "semisup/finetune_steps_10pct": 130},
        "simclr": {"semisup/finetune_top1_1pct": 0.21, "semisup/linear_top1_1pct": 0.20,
                   "semisup/finetune_steps_1pct": 100},
        "byol": None,
    }
    text = finetune_note(["supervised", "simclr", "byol"], probe)
    assert "1pct: fine-tuning (100 optimizer steps) beats the linear probe on the same labels for 1 of 2 methods; " \
           "not for supervised." in text
    assert "10pct: fine-tuning (130 optimizer steps) beats the linear probe on the same labels for 1 of 1 methods." \
           in text and text.index("1pct:") < text.index("10pct:")
    assert "it is the budget, not the method" in text
    probe["supervised"]["semisup/finetune_top1_1pct"] = 0.25
    assert "budget" not in finetune_note(["supervised", "simclr"], probe)
    assert finetune_note(["simclr"], {"simclr": {"linear/top1": 0.5}}) == ""


def test_relative_mce_note_names_the_corruptions_where_it_is_undefined() -> None:
    robust = {"a": {"robustness/relative_mce": 0.9}, "b": {"robustness/relative_mce": None,
                                                            "robustness/relative_ce/fog": None,
                                                            "robustness/relative_ce/snow": 1.1}, "c": None}
    text = relative_mce_note(["a", "b", "c"], robust)
    assert text.startswith("**Relative mCE undefined**") and text.endswith("b: fog.")
    assert relative_mce_note(["a"], robust) == ""
