"""Tier 3: the real pipeline (docs/pipeline.md). `dvc repro` of a tiny study in a temporary copy of the repository,
then `dvc exp run -S ...`, `dvc metrics diff`, selective reruns, and bad params."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tier3 import commit, copy_repo, edit_params, run, tiny_params, would_run

pytestmark = pytest.mark.slow

TINY_METHODS = {"supervised": {}, "simclr": {}, "barlow_twins_bayes_h": {"module": {"mc_samples": 2}}}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git+DVC copy of the repository with tiny params, after one full `dvc repro`."""
    root = copy_repo(tmp_path_factory.mktemp("repo"), tiny_params(TINY_METHODS))
    run(["dvc", "repro"], root)
    commit(root, "repro")
    return root


def test_repro_writes_every_declared_output(study: Path) -> None:
    for method in TINY_METHODS:
        assert (study / "models" / method / "encoder.pt").is_file()
        probe = json.loads((study / "reports" / "probe" / f"{method}.json").read_text())
        assert 0.0 <= probe["linear/top1"] <= 1.0
        assert "robustness/mce" in json.loads((study / "reports" / "robustness" / f"{method}.json").read_text())
        ood = json.loads((study / "reports" / "ood" / f"{method}.json").read_text())
        assert ood["ood/convention"] == "ood_positive"
    assert "simclr" in (study / "reports" / "summary.md").read_text()
    merged = json.loads((study / "reports" / "metrics.json").read_text())
    assert set(TINY_METHODS) <= set(merged)
    headline = json.loads((study / "reports" / "headline.json").read_text())
    assert list(headline) == list(TINY_METHODS) and headline["simclr"]["linear_top1"] == round(
        100 * merged["simclr"]["linear/top1"], 1)
    for method in TINY_METHODS:  # the training log, DVCLive's files only
        live = study / "reports" / "pretrain" / "live" / method
        assert sorted(p.relative_to(live).as_posix() for p in live.rglob("*") if p.is_file()) == [
            "metrics.json", *(f"plots/metrics/{n}.tsv" for n in (
                "effective_rank", "epoch", "feature_std", "images_per_s", "lr", "online_top1", "ssl_loss"))]
    # nothing left to do, and no Hydra or Lightning litter in the repository
    assert would_run(study) == set()
    assert not (study / "outputs").exists() and not (study / "lightning_logs").exists()


def test_plots_render_from_the_declared_data(study: Path) -> None:
    shown = json.loads(run(["dvc", "plots", "show", "--json"], study).stdout)
    assert not [name for name, plots in shown["data"].items() for plot in plots if plot.get("errors")], shown.get(
        "errors")
    ids = set(shown["data"])
    assert {"reports/figures/data/pretrain_ssl_loss.csv", "reports/figures/data/roc_far.csv",
            "reports/figures/gradcam_grid.png", "reports/pretrain/live/simclr/plots/metrics/ssl_loss.tsv"} <= ids
    loss = shown["data"]["reports/figures/data/pretrain_ssl_loss.csv"][0]["content"]
    assert loss["encoding"]["color"]["field"] == "method"  # one line per method (.dvc/plots/lines_by_method.json)
    assert {row["method"] for row in loss["data"]["values"]} == set(TINY_METHODS)


def test_probe_param_reruns_only_probe_stages(study: Path) -> None:
    original = edit_params(study, lambda p: p["probe"]["knn"].update(k=5))
    try:
        assert would_run(study) == {f"evaluate@{m}" for m in TINY_METHODS} | {"report"}
    finally:
        (study / "params.yaml").write_text(original)


def test_bytecode_caches_and_a_new_corrupted_set_file(study: Path) -> None:
    """`__pycache__` beside the stages' source deps changes nothing (.dvcignore); a file added to a corrupted set
    reruns `corrupt` (its out changed) though its readers declare only the family manifest."""
    cache = study / "src" / "sslbench" / "methods" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "simclr.cpython-311.pyc").write_bytes(b"\x00")
    assert would_run(study) == set()
    stray = next((study / "data" / "corrupted" / "shapes").glob("*/*")) / "stray.npy"
    stray.write_bytes(b"\x00")
    try:
        assert would_run(study) == {"corrupt"}
    finally:
        stray.unlink()


def test_method_param_reruns_only_that_chain(study: Path) -> None:
    original = edit_params(study, lambda p: p["methods"]["simclr"].update(module={"temperature": 0.2}))
    try:
        # a dry run lists the stages whose own inputs changed; the rest of simclr's chain follows from its new
        # encoder (checked for real by test_exp_run_and_metrics_diff). `codedeps` reads `methods:` to check the
        # names; its fingerprints come out byte-identical, so it reruns nothing else
        assert would_run(study) == {"codedeps", "pretrain@simclr", "report"}
    finally:
        (study / "params.yaml").write_text(original)


def test_exp_run_and_metrics_diff(study: Path) -> None:
    run(["dvc", "exp", "run", "-S", "+methods.simclr.module.temperature=0.2"], study)
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], study).stdout)
    changed_files = {path for path, keys in diff.items() if keys}
    assert "reports/pretrain/simclr.json" in changed_files
    # other methods' chains did not rerun, so their metrics files do not appear in the diff
    assert not any("supervised" in path for path in changed_files)
    # README's readable table: the headline numbers come first, and dropping every name with a `/` (file-qualified
    # and per-area metrics, deps) leaves them with the params that changed
    table = run(["dvc", "exp", "show", "--csv", "--only-changed", "--drop", ".*/"], study).stdout.splitlines()
    columns = table[0].split(",")
    # the headline numbers first (those that changed: on this tiny study simclr's linear top-1 may come out equal)
    first = columns[columns.index("Created") + 1]
    assert first.startswith("simclr.") and first.split(".", 1)[1] in {"linear_top1", "knn_top1", "mce"}, columns
    # the changed param is a column; a wall time is not asserted (two tiny runs can round to the same 0.1 s)
    assert "methods.simclr.module.temperature" in columns
    headline_keys = {"linear_top1", "knn_top1", "mce", "far_auroc", "far_score", "pretrain_s"}
    assert {c.split(".", 1)[1] for c in columns if c.startswith("simclr.")} <= headline_keys, columns
    assert not [c for c in columns if "/" in c]


def test_a_source_edit_reruns_only_the_stages_that_run_it(study: Path) -> None:
    """dvc.yaml's stages depend on their code fingerprints (sslbench.codedeps): after `codedeps` has rerun for an
    edit of one method's file, only that method's pretraining is out of date (its chain follows from its encoder)."""
    source = study / "src" / "sslbench" / "methods" / "simclr.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# an edit\n")
        assert would_run(study) == {"codedeps"}
        run(["dvc", "repro", "codedeps"], study)
        assert would_run(study) == {"pretrain@simclr"}
    finally:
        source.write_text(original)
        run(["dvc", "repro", "codedeps"], study)
    assert would_run(study) == set()


def test_unknown_method_fails_with_valid_names(study: Path) -> None:
    original = edit_params(study, lambda p: p["methods"].update(simclrr={}))
    try:
        proc = run(["dvc", "repro", "pretrain@simclrr"], study, check=False)
        assert proc.returncode != 0
        # it fails at the first stage (`codedeps`), which lists the valid names
        assert "unknown method 'simclrr'; valid methods: barlow_twins," in proc.stdout + proc.stderr
        assert not (study / "models" / "simclrr").exists()
    finally:
        (study / "params.yaml").write_text(original)
