"""The ood area of `evaluate@<method>` on fake embeddings (written with `io.EmbeddingWriter`) and a fake Bayes-H
encoder."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException

from sslbench.errors import UserError
from sslbench.eval.ood import DETERMINISTIC_SCORES, SCORES, STOCHASTIC_SCORES
from sslbench.io import EmbeddingWriter, embeddings_path
from sslbench.stages import ood


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread() -> Iterator[None]:
    """Run BLAS/LAPACK and torch single-threaded in this module: on the shared 2-core test machine, oversubscribed
    OpenBLAS threads made a 256x256 `eigh` 100x slower (measured: 2.8 s vs 0.03 s). Restored afterwards."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)

D = 256  # the convnet's feature width = the Bayes-H stochastic dim of the fake encoder
ID_CLASSES = [f"shape{i}" for i in range(10)]
# the embedded default's sets (conf/dataset/shapes.yaml): validation {shapes_heldout: val, noise_textures: val},
# near {shapes_heldout: test}, far {digits: test, noise_textures: test}
SPLITS = {
    ("shapes", "train"): 300,
    ("shapes", "val"): 80,
    ("shapes", "test"): 80,
    ("shapes_heldout", "val"): 30,
    ("shapes_heldout", "test"): 40,
    ("noise_textures", "val"): 30,
    ("noise_textures", "test"): 40,
    ("digits", "test"): 40,
}


def write_study(root: Path, method: str, *, stochastic: bool, sizes: dict[tuple[str, str], int] | None = None,
                dims: dict[tuple[str, str], int] | None = None, digits_classes: list[str] | None = None) -> None:
    """ID = 10 Gaussian classes; near-OOD = 4 other means; far-OOD = a broad blob. For the stochastic model the OOD
    sets of the *validation* groups have larger sigma than ID, those of the *test* groups smaller sigma."""
    from sslbench.io import sha256_file
    from sslbench.models.encoder import Encoder, EncoderSpec, save_encoder

    spec = EncoderSpec(stochastic_space="h", prior="mog") if stochastic else EncoderSpec()
    save_encoder(Encoder(spec), root / "models" / method, {})
    sha = sha256_file(root / "models" / method / "encoder.pt")
    rng = np.random.default_rng(0)
    id_means, near_means = rng.normal(0, 1, (10, D)), rng.normal(0, 1, (4, D))
    data = root / "data"
    for (dataset, split), n in {**SPLITS, **(sizes or {})}.items():
        dim = (dims or {}).get((dataset, split), D)
        if dataset == "shapes":
            label = rng.integers(0, 10, n)
            x = id_means[label][:, :dim] + rng.normal(0, 0.5, (n, dim))
            logvar = np.full((n, dim), -1.0)
        else:
            label = rng.integers(0, 4, n)
            x = near_means[label][:, :dim] if dataset == "shapes_heldout" else rng.normal(0, 1.5, (n, dim))
            x = x + rng.normal(0, 0.5, (n, dim))
            logvar = np.full((n, dim), 0.5 if split == "val" else -2.0)
        logvar += rng.normal(0, 0.1, (n, dim))
        extra: dict[str, Any] = {"stochastic_space": "h", "stochastic_dim": dim} if stochastic else {}
        with EmbeddingWriter(embeddings_path(data, method, dataset, split), method=method, dataset=dataset,
                             split=split, dim=dim, encoder_sha256=sha, **extra) as writer:
            writer.write(np.arange(n), label, x, *((x, logvar) if stochastic else ()))
        classes = {"shapes": ID_CLASSES, "shapes_heldout": ["star", "heart", "moon", "arrow"],
                   "noise_textures": ["texture"], "digits": digits_classes or [str(i) for i in range(10)]}[dataset]
        meta = data / "datasets" / dataset / split / "meta.json"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"classes": classes}))


def replace(key: str, value: str) -> list[str]:
    """Hydra merges a dict override into the existing dict; delete the key first to replace it."""
    return [f"~{key}", f"+{key}={value}"]


def run_stage(compose: Callable[..., Any], root: Path, method: str, *extra: str) -> dict[str, Any]:
    cfg = compose("ood", [f"method={method}", f"paths.data={root / 'data'}", f"paths.models={root / 'models'}",
                          f"paths.reports={root / 'reports'}", "probe.linear.epochs=5", "ood.knn_k=10", *extra])
    return ood.run(cfg)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ood")
    write_study(root, "vicreg", stochastic=False)
    write_study(root, "vicreg_bayes_h", stochastic=True)
    return root


@pytest.fixture(scope="module")
def results(study: Path) -> dict[str, dict[str, Any]]:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        out = {m: run_stage(compose, study, m) for m in ("vicreg", "vicreg_bayes_h")}
    GlobalHydra.instance().clear()
    return out


def test_metrics_file_keys_and_convention(study: Path, results: dict[str, dict[str, Any]]) -> None:
    det = json.loads((study / "reports" / "ood" / "vicreg.json").read_text())
    sto = json.loads((study / "reports" / "ood" / "vicreg_bayes_h.json").read_text())
    assert det == pytest.approx(results["vicreg"])
    assert list(det) == list(sto)  # identical key set (and order) across methods
    assert det["ood/convention"] == sto["ood/convention"] == "ood_positive"
    for key in ("ood/near/knn/auroc", "ood/far/msp/fpr95", "ood/digits/energy/aupr_out",
                "ood/shapes_heldout/mahalanobis/aupr_in", "ood/noise_textures/kmeans_mahalanobis/auroc",
                "ood/far/kl_knn/auroc", "ood/sign/mean_sigma", "ood/validation/kl_knn/auroc", "ood/skipped"):
        assert key in det
    for group in ("near", "far", "digits", "noise_textures", "shapes_heldout"):
        for score in SCORES:
            for m in ("auroc", "aupr_in", "aupr_out", "fpr95"):
                value = sto[f"ood/{group}/{score}/{m}"]
                assert 0.0 <= value <= 1.0
                assert (det[f"ood/{group}/{score}/{m}"] is None) == (score in STOCHASTIC_SCORES)
    # a group's metric is the mean over its sets
    assert sto["ood/far/knn/auroc"] == pytest.approx(
        (sto["ood/digits/knn/auroc"] + sto["ood/noise_textures/knn/auroc"]) / 2)


def test_deterministic_model_skips_stochastic_scores_with_reason(results: dict[str, dict[str, Any]]) -> None:
    det, sto = results["vicreg"], results["vicreg_bayes_h"]
    assert all(name in det["ood/skipped"] for name in STOCHASTIC_SCORES) and "deterministic" in det["ood/skipped"]
    assert sto["ood/skipped"] == ""
    assert det["ood/sign/kl_knn"] is None and det["ood/validation/mean_sigma/auroc"] is None


def test_scores_detect_the_fake_ood_sets(results: dict[str, dict[str, Any]]) -> None:
    det = results["vicreg"]
    for score in ("knn", "mahalanobis", "msp"):
        assert det[f"ood/near/{score}/auroc"] > 0.8, score
        assert det[f"ood/far/{score}/auroc"] > 0.8, score


def test_disputed_sign_is_chosen_on_validation_not_test(results: dict[str, dict[str, Any]]) -> None:
    sto = results["vicreg_bayes_h"]
    # validation OOD sets have *larger* sigma than ID -> the reference orientation (larger sigma = ID) is flipped
    assert sto["ood/sign/mean_sigma"] == -1
    assert sto["ood/validation/mean_sigma/auroc"] > 0.9
    # the test OOD sets have *smaller* sigma: a choice made on test would have kept +1; ours pays for not peeking
    assert sto["ood/near/mean_sigma/auroc"] < 0.1 and sto["ood/far/mean_sigma/auroc"] < 0.1
    assert sto["ood/sign/kl_knn"] in (1, -1) and sto["ood/sign/prior_log_density"] in (1, -1)


def test_roc_csv(study: Path) -> None:
    for method, names in (("vicreg", DETERMINISTIC_SCORES), ("vicreg_bayes_h", SCORES)):
        for group in ("near", "far"):
            with (study / "reports" / "ood" / "plots" / method / f"roc_{group}.csv").open() as fh:
                rows = list(csv.reader(fh))
            assert rows[0] == ["fpr", *names]
            values = np.array(rows[1:], dtype=float)
            assert 2 <= len(values) <= 200
            assert values[0, 0] == 0.0 and values[-1, 0] == 1.0 and np.all(values[-1, 1:] == 1.0)
            assert np.all(np.diff(values, axis=0) >= -1e-9)


def test_bad_inputs(tmp_path: Path, compose: Callable[..., Any]) -> None:
    write_study(tmp_path / "a", "simclr", stochastic=False, sizes={("digits", "test"): 1})
    with pytest.raises(UserError, match=r"digits/test has 1 example.*at least 2"):
        run_stage(compose, tmp_path / "a", "simclr")
    write_study(tmp_path / "b", "simclr", stochastic=False, dims={("noise_textures", "test"): 32})
    with pytest.raises(UserError, match="dim 32 but the training embeddings have dim 256"):
        run_stage(compose, tmp_path / "b", "simclr")
    with pytest.raises(ConfigCompositionException, match="You must specify 'method'"):  # Hydra lists them
        compose("ood", [])
    with pytest.raises(UserError, match="ood.knn_k=1000 exceeds"):
        run_stage(compose, tmp_path / "b", "simclr", "ood.knn_k=1000", *replace("dataset.ood.far", "{digits: test}"))
    with pytest.raises(UserError, match="ood.kmeans_clusters must be >= 1"):
        run_stage(compose, tmp_path / "b", "simclr", "ood.kmeans_clusters=0")
    with pytest.raises(UserError, match="encoder.pt is missing; run `dvc repro pretrain@byol`"):
        run_stage(compose, tmp_path / "b", "byol")
    from sslbench.models.encoder import Encoder, EncoderSpec, save_encoder

    save_encoder(Encoder(EncoderSpec()), tmp_path / "b" / "models" / "simclr", {})  # retrained after embedding
    with pytest.raises(UserError, match="another encoder .*run `dvc repro embed@simclr`"):
        run_stage(compose, tmp_path / "b", "simclr")
    assert not any((tmp_path / x / "reports").exists() for x in "ab")


def test_stochastic_without_validation_sets_fails(study: Path, compose: Callable[..., Any]) -> None:
    with pytest.raises(UserError, match="dataset.ood.validation is empty"):
        run_stage(compose, study, "vicreg_bayes_h", *replace("dataset.ood.validation", "{}"))


def test_empty_group_gives_null_metrics(study: Path, compose: Callable[..., Any]) -> None:
    metrics = run_stage(compose, study, "vicreg", *replace("dataset.ood.near", "{}"), f"paths.reports={study / 'r2'}")
    assert metrics["ood/near/knn/auroc"] is None and metrics["ood/far/knn/auroc"] is not None
    # dvc.yaml declares roc_near.csv for every dataset: an empty group's table is its header, no rows
    from sslbench.paths import not_applicable

    roc = study / "r2" / "ood" / "plots" / "vicreg"
    assert (roc / "roc_near.csv").read_text().splitlines()[0].startswith("fpr,")
    assert not_applicable(roc / "roc_near.csv") == "no rows" and not_applicable(roc / "roc_far.csv") is None
