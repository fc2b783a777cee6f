"""The `robustness` stage on fake embeddings whose errors are known by construction.

Clean embeddings put class y at 10·e_y (+ noise), so the linear probe is exact on them. In corrupted set
(c, s) the first k(c, s) images of the subset are moved onto the next class: E_{c,s} = k(c, s) / n exactly, for the
method (k_m) and for the `supervised` reference (k_r). The expected metrics are then computed by hand here.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from sslbench.data import corruptions as C
from sslbench.errors import UserError
from sslbench.eval.corruption import ALEXNET_ERRORS
from sslbench.io import EmbeddingWriter, embeddings_path, read_split, split_dir, write_split
from sslbench.models.encoder import Encoder, EncoderSpec, save_encoder
from sslbench.stages import robustness

DIM, N_CLASSES, N = 256, 10, 6


def k_method(ci: int, s: int) -> int:
    return (ci + s) % 5


def k_reference(ci: int, s: int) -> int:
    return (ci + 2 * s) % 5 + 1


def _embed(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # noise only on the class dims: the probe standardises each dim, which would blow up noise-only dims
    x = np.zeros((len(labels), DIM), np.float32)
    x[:, :N_CLASSES] = rng.normal(0, 0.1, (len(labels), N_CLASSES))
    x[np.arange(len(labels)), labels] += 10
    return x


def _write(path: Path, method: str, dataset: str, split: str, index: np.ndarray, labels: np.ndarray,
           emb: np.ndarray) -> None:
    with EmbeddingWriter(path, method=method, dataset=dataset, split=split, dim=DIM) as writer:
        writer.write(index, labels, emb)


def _fake_method(data: Path, dataset: str, method: str, k: object, subset: np.ndarray, clean_wrong: int) -> None:
    rng = np.random.default_rng(hash(method) % 2**32)
    for split in ("train", "val", "test"):
        labels = read_split(split_dir(data, "shapes", split)).labels
        emb = _embed(labels, rng)
        if split == "test":  # the first `clean_wrong` subset images are wrong even when clean
            wrong = subset[:clean_wrong]
            emb[wrong] = _embed((labels[wrong] + 1) % N_CLASSES, rng)
        _write(embeddings_path(data, method, dataset, split), method, dataset, split, np.arange(len(labels)), labels,
               emb)
    test_labels = read_split(split_dir(data, "shapes", "test")).labels
    for ci, c in enumerate(C.CORRUPTIONS):
        for s in range(1, 6):
            labels = test_labels[subset]
            shown = labels.copy()
            shown[: k(ci, s)] = (shown[: k(ci, s)] + 1) % N_CLASSES  # type: ignore[operator]
            order = np.random.default_rng(ci * 10 + s).permutation(N)  # rows out of order: pairing is by index
            _write(embeddings_path(data, method, f"{dataset}_c", f"{c}_{s}"), method, f"{dataset}_c", f"{c}_{s}",
                   subset[order], labels[order], _embed(shown, rng)[order])


@pytest.fixture(scope="module")
def study(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("robust")
    data = root / "data"
    shutil.copytree(tiny_data / "datasets" / "shapes", data / "datasets" / "shapes")
    test = read_split(split_dir(data, "shapes", "test"))
    subset = C.select_indices(len(test.labels), N, "random", 0)
    family = {"dataset": "shapes", "corruptions": list(C.CORRUPTIONS), "severities": [1, 2, 3, 4, 5],
              "index": subset.tolist(), "seed": 0, "classes": test.classes, "name": "fake", "source": "generate"}
    for corruption in ("fog", "pixelate"):  # images for the Grad-CAM panel
        images = C.corrupt_batch(test.images[subset], subset, corruption, 3, seed=0)
        write_split(C.corrupted_dir(data, "shapes", corruption, 3), images, test.labels[subset],
                    {"index": subset.tolist(), "corruption": corruption, "severity": 3, "classes": test.classes})
    C.write_summary(data / "corrupted" / "shapes", family)  # after the sets: it lists their files' sha256
    _fake_method(data, "shapes", "simclr", k_method, subset, clean_wrong=1)
    _fake_method(data, "shapes", "supervised", k_reference, subset, clean_wrong=0)
    save_encoder(Encoder(EncoderSpec()), root / "models" / "simclr", {"method": "simclr"})
    return root


def _cfg(compose, root: Path, *extra: str):  # type: ignore[no-untyped-def]
    return compose("robustness", [f"paths.data={root / 'data'}", f"paths.models={root / 'models'}",
                                  f"paths.reports={root / 'reports'}", "probe.linear.epochs=30",
                                  "robustness.gradcam.enabled=false", *extra])


def test_metrics_match_the_hand_computed_errors(compose, study: Path) -> None:  # type: ignore[no-untyped-def]
    out = robustness.run(_cfg(compose, study, "method=simclr", "robustness.gradcam.enabled=true",
                              "robustness.gradcam.n_images=2",
                              "robustness.gradcam.corruptions=[fog,pixelate]"))
    metrics = json.loads((study / "reports" / "robustness" / "simclr.json").read_text())
    assert metrics == pytest.approx(out)
    ce = {c: sum(k_method(ci, s) for s in range(1, 6)) / sum(k_reference(ci, s) for s in range(1, 6))
          for ci, c in enumerate(C.CORRUPTIONS)}
    rel = {c: sum(k_method(ci, s) - 1 for s in range(1, 6)) / sum(k_reference(ci, s) for s in range(1, 6))
           for ci, c in enumerate(C.CORRUPTIONS)}
    assert metrics["robustness/reference"] == "supervised"
    assert metrics["robustness/clean_error"] == pytest.approx(1 / N)
    assert metrics["robustness/reference_clean_error"] == 0
    assert metrics["robustness/ce/fog"] == pytest.approx(ce["fog"])
    assert metrics["robustness/mce"] == pytest.approx(np.mean([ce[c] for c in C.COMMON]))
    assert metrics["robustness/relative_mce"] == pytest.approx(np.mean([rel[c] for c in C.COMMON]))
    errors = {c: [k_method(ci, s) / N for s in range(1, 6)] for ci, c in enumerate(C.CORRUPTIONS)}
    assert metrics["robustness/mean_error_15"] == pytest.approx(np.mean([errors[c] for c in C.COMMON]))
    assert metrics["robustness/mean_error_19"] == pytest.approx(np.mean(list(errors.values())))
    assert metrics["robustness/group/digital/ce"] == pytest.approx(np.mean([ce[c] for c in C.CORRUPTION_GROUPS[
        "digital"]]))
    assert metrics["robustness/n_images"] == N
    with open(study / "reports" / "robustness" / "plots" / "simclr" / "errors.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 95 and rows[0]["set"] == "gaussian_noise_1"
    assert float(rows[0]["error"]) == pytest.approx(k_method(0, 1) / N)
    assert float(rows[0]["reference_error"]) == pytest.approx(k_reference(0, 1) / N)
    png = study / "reports" / "robustness" / "gradcam" / "simclr.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_reference_itself_has_mce_one(compose, study: Path) -> None:  # type: ignore[no-untyped-def]
    out = robustness.run(_cfg(compose, study, "method=supervised"))
    # Grad-CAM off: the declared panel is a placeholder that says so (dvc.yaml declares it for every method)
    from sslbench.paths import not_applicable

    png = study / "reports" / "robustness" / "gradcam" / "supervised.png"
    assert "robustness.gradcam.enabled=false" in (not_applicable(png) or "")
    assert out["robustness/mce"] == pytest.approx(1.0) and out["robustness/relative_mce"] == pytest.approx(1.0)


def test_alexnet_reference_on_imagenet(compose, study: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "inet"
    shutil.copytree(study / "data" / "datasets" / "shapes", root / "data" / "datasets" / "shapes")
    shutil.copytree(study / "data" / "corrupted" / "shapes", root / "data" / "corrupted" / "imagenet")
    subset = np.asarray(json.loads((root / "data" / "corrupted" / "imagenet" / "meta.json").read_text())["index"])
    _fake_method(root / "data", "imagenet", "simclr", k_method, subset, clean_wrong=0)
    out = robustness.run(_cfg(compose, root, "method=simclr", "dataset=imagenet", "dataset.num_classes=10"))
    assert out["robustness/reference"] == "alexnet"
    ce = [np.mean([k_method(ci, s) / N for s in range(1, 6)]) / ALEXNET_ERRORS[c] for ci, c in enumerate(C.COMMON)]
    assert out["robustness/mce"] == pytest.approx(np.mean(ce))
    assert "robustness/ce/saturate" not in out


def test_missing_reference_names_the_stage_that_builds_it(compose, study: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    shutil.copytree(study / "data", data, ignore=shutil.ignore_patterns("supervised"))
    message = r"reference on 'shapes' is the study's `supervised`.*dvc repro embed@supervised"
    with pytest.raises(UserError, match=message):
        robustness.run(_cfg(compose, study, "method=simclr", f"paths.data={data}"))


def test_bad_inputs(compose, study: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigCompositionException, match="You must specify 'method'"):  # Hydra lists them
        _cfg(compose, study)
    with pytest.raises(UserError, match="reference=alexnet uses AlexNet's ImageNet-C errors"):
        robustness.run(_cfg(compose, study, "method=simclr", "robustness.reference=alexnet"))
    with pytest.raises(UserError, match="unknown robustness.reference 'vgg'"):
        robustness.run(_cfg(compose, study, "method=simclr", "robustness.reference=vgg"))
    with pytest.raises(UserError, match="unknown corruption 'fogg'"):
        robustness.run(_cfg(compose, study, "method=simclr", "robustness.gradcam.corruptions=[fogg]"))
    with pytest.raises(UserError, match="corrupted/shapes/meta.json is missing; run `dvc repro corrupt`"):
        robustness.run(_cfg(compose, study, "method=simclr", f"paths.data={tmp_path}"))
    # stale corrupted embeddings (another subset): named, with the command that rebuilds them
    data = tmp_path / "stale"
    shutil.copytree(study / "data", data)
    meta = json.loads((data / "corrupted" / "shapes" / "meta.json").read_text())
    meta["index"] = sorted({*meta["index"][1:], 79 if 79 not in meta["index"] else 78})
    (data / "corrupted" / "shapes" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="dvc repro embed@simclr"):
        robustness.run(_cfg(compose, study, "method=simclr", f"paths.data={data}"))
    assert not (study / "reports" / "robustness" / "nothing.json").exists()
