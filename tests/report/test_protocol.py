from sslbench.report.protocol import (
    find_leaf,
    flatten,
    lookup,
    pretrain_protocol_table,
    protocol_markdown,
    settings_line,
)

PARAMS = {
    "study": {"seed": 3, "methods": ["simclr"]},
    "prepare": {"shapes": {"n_train": 4000, "n_test": 1000}},
    "probe": {"linear": {"epochs": 100, "lr": 0.3, "weight_decays": [1e-4, 1e-5]}, "knn": {"k": 20}},
    "ood": {"scores": {"knn": {"k": 50}}},
}
DATASET = {"name": "shapes", "num_classes": 10, "image_size": 32, "transfer": ["digits"],
           "ood": {"near": {"shapes_heldout": "test"}, "far": {"digits": "test"}, "validation": {"x": "val"}}}


def test_lookup_helpers() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    assert lookup(PARAMS, "probe.nope", "probe.linear.epochs") == 100 and lookup(PARAMS, "x.y") is None
    assert find_leaf(PARAMS, ["k"], under="knn") == 20  # the probe's kNN, found first
    assert find_leaf(PARAMS["ood"], ["k"]) == 50 and find_leaf(PARAMS, ["epochs"], under="semisup") is None
    assert settings_line({"linear": {"epochs": 100, "weight_decays": [1e-4]}}) == (
        "`linear.epochs=100`, `linear.weight_decays=[0.0001]`")


def test_protocol_quotes_the_params_and_dataset() -> None:
    text = protocol_markdown(dataset=DATASET, params=PARAMS, params_file="params.yaml",
                             selected_wd={"simclr": 1e-4}, reference="supervised", conventions=["ood_positive"],
                             ood_scores=["knn", "msp"])
    assert "`shapes`, 10 classes, 32×32 RGB (train 4000, test 1000 images); study seed 3" in text
    assert "100 epochs, lr 0.3" in text and "from [0.0001, 1e-05]" in text and "(selected: 0.0001" in text
    assert "k = 20" in text and "kNN score k = 50" in text
    assert "normalised by supervised" in text and "near-OOD `shapes_heldout`" in text
    assert "OOD is the positive class" in text and "semisup" not in text.split("Settings as run")[1]
    assert "- `probe`: `linear.epochs=100`" in text


def test_protocol_without_params_degrades() -> None:
    text = protocol_markdown(dataset=DATASET, params=None, params_file="params.yaml", selected_wd={},
                             reference="supervised", conventions=[], ood_scores=[])
    assert "no stage sections found in `params.yaml`" in text and "epochs" not in text.split("kNN")[0]


def test_pretrain_table_reads_resolved_configs_and_footnotes_missing_ones() -> None:
    configs = {
        "simclr": {"backbone": {"name": "convnet4"}, "pretrain": {"epochs": 6, "batch_size": 256},
                   "study": {"seed": 0}},
        "byol": None,
    }
    md, notes = pretrain_protocol_table(["simclr", "byol"], configs, "models")
    assert md.splitlines()[0] == "| method | backbone | epochs | batch size | seed |"
    assert "| simclr | convnet4 | 6 | 256 | 0 |" in md and "| byol[^models-byol] | — | — | — | — |" in md
    assert notes["models-byol"] == "`models/byol/config.yaml` is missing: run `dvc repro pretrain@byol` to build it."


def test_semisup_subsets_come_from_the_files_else_the_params() -> None:
    params = {"probe": {"semisup": {"fractions": [0.01, 0.1], "finetune": {"epochs": 3, "patience": 5}}}}
    common = dict(dataset=DATASET, params_file="params.yaml", selected_wd={}, reference="supervised",
                  conventions=[], ood_scores=[])
    text = protocol_markdown(params=params, **common)  # type: ignore[arg-type]
    assert "subsets of 1% and 10% of the training labels" in text and "at most 3 epochs, early stopping with " \
        "patience 5" in text
    text = protocol_markdown(params=params, facts={"semisup/n_labels_10pct": 30}, **common)  # type: ignore[arg-type]
    assert "subsets of 10% (30 labels) of the training labels" in text
