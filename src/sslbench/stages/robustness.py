"""The robustness area of `evaluate@<method>`: corruption robustness of one method from its embeddings (REFERENCE.md
§2.4).

python -m sslbench.stages.robustness method_name=simclr dataset=shapes study.seed=0

The linear probe of the probe stage (`sslbench.eval.linear.train_linear_probe`, `probe.linear` params) is trained
on the method's clean train embeddings (weight decay chosen on val), then applied to the clean test images of the
corrupted subset and to every corrupted set (paired by source `index`). The reference that normalises CE is
AlexNet on ImageNet and the study's `supervised` model elsewhere; the latter is evaluated here, with the same
probe protocol, from its own embeddings (never from another stage's output, so `evaluate@supervised` does not
depend on itself). Writes `reports/robustness/<method>.json` (metrics), `reports/robustness/plots/<method>/
errors.csv` (per corruption and severity, for `dvc plots`) and `reports/robustness/gradcam/<method>.png`.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import MissingMandatoryValue

from sslbench.data import corruptions as C
from sslbench.errors import UserError, unknown_choice
from sslbench.eval.corruption import Reference, alexnet_reference, robustness_metrics, top1_error
from sslbench.eval.linear import LinearProbe, train_linear_probe
from sslbench.io import Embeddings, embeddings_path, ensure_writable, read_embeddings, write_metrics, write_text
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.robustness")

SUPERVISED = "supervised"
REFERENCES = ("auto", "alexnet", "supervised")


@dataclass
class Tables:
    """One model's embeddings for the evaluation: train/val, the clean test rows of the corrupted subset (in
    subset order) and every corrupted set."""

    train: Embeddings
    val: Embeddings
    clean: np.ndarray
    clean_labels: np.ndarray
    sets: list[tuple[str, int, Embeddings]]


@dataclass
class Evaluation:
    """One model under the probe protocol: its probe, E_clean on the corrupted subset, E_{c,s}, and n."""

    probe: LinearProbe
    clean_error: float
    errors: dict[str, dict[int, float]]
    n_images: int


def _method_name(cfg: DictConfig) -> str:
    try:
        name = str(cfg.method_name)
    except MissingMandatoryValue as err:
        raise UserError("robustness needs the method to evaluate: method_name=<method> (e.g. method_name=simclr)") \
            from err
    if not name or "/" in name:
        raise UserError(f"method_name must be a method name, got {name!r}")
    return name


def _reference_kind(cfg: DictConfig) -> str:
    kind = str(cfg.robustness.reference)
    if kind not in REFERENCES:
        raise unknown_choice("robustness.reference", kind, REFERENCES)
    if kind == "auto":
        return "alexnet" if cfg.dataset.name == "imagenet" else "supervised"
    if kind == "alexnet" and cfg.dataset.name != "imagenet":
        raise UserError(
            f"robustness.reference=alexnet uses AlexNet's ImageNet-C errors, but the study's dataset is "
            f"{cfg.dataset.name!r}; use robustness.reference=supervised (or auto)"
        )
    return kind


def _embeddings(data_root: Path, method: str, dataset: str, split: str, dim: int | None = None) -> Embeddings:
    return read_embeddings(
        embeddings_path(data_root, method, dataset, split), method=method, dataset=dataset, split=split, dim=dim
    )


def load_tables(cfg: DictConfig, method: str, family: dict[str, Any]) -> Tables:
    """Read and check every embedding table of `method` that the evaluation needs (before any training)."""
    data_root = Path(cfg.paths.data)
    dataset = str(cfg.dataset.name)
    rebuild = f"dvc repro embed@{method}"
    train = _embeddings(data_root, method, dataset, str(cfg.dataset.train))
    val = _embeddings(data_root, method, dataset, str(cfg.dataset.val), train.dim)
    test = _embeddings(data_root, method, dataset, str(cfg.dataset.test), train.dim)
    subset = np.asarray(family["index"], np.int64)
    order = np.argsort(test.index)
    pos = np.clip(np.searchsorted(test.index[order], subset), 0, max(len(order) - 1, 0))
    if len(order) == 0 or not np.array_equal(test.index[order][pos], subset):
        raise UserError(
            f"the clean test embeddings of {method} lack some of the corrupted sets' source indices; run `{rebuild}`"
        )
    rows = order[pos]
    sets: list[tuple[str, int, Embeddings]] = []
    for corruption in family["corruptions"]:
        for severity in family["severities"]:
            split = f"{corruption}_{severity}"
            emb = _embeddings(data_root, method, f"{dataset}_c", split, train.dim)
            if not np.array_equal(np.sort(emb.index), subset):
                raise UserError(
                    f"embeddings of {dataset}_c/{split} for {method} do not cover the corrupted set's images (stale "
                    f"after `dvc repro corrupt`?); run `{rebuild}`"
                )
            at = np.searchsorted(subset, emb.index)
            if not np.array_equal(emb.label, test.label[rows][at]):
                raise UserError(f"labels of {dataset}_c/{split} for {method} differ from the clean test labels at the "
                                f"same index; run `{rebuild}`")
            sets.append((corruption, int(severity), emb))
    return Tables(train, val, test.embedding[rows], test.label[rows], sets)


def evaluate(cfg: DictConfig, tables: Tables) -> Evaluation:
    """Train the probe on the clean train embeddings (wd chosen on val) and measure E_clean and every E_{c,s}."""
    p = cfg.probe.linear
    probe = train_linear_probe(
        tables.train.embedding, tables.train.label, tables.val.embedding, tables.val.label,
        num_classes=int(cfg.dataset.num_classes), weight_decays=[float(w) for w in p.weight_decays],
        epochs=int(p.epochs), lr=float(p.lr), batch_size=int(p.batch_size), seed=int(cfg.study.seed),
    )
    clean_error = top1_error(probe.predict(tables.clean), tables.clean_labels)
    # one probe pass over every corrupted set at once (a call per set costs more than the arithmetic)
    stacked = [e.embedding for *_, e in tables.sets]
    predictions = probe.predict(np.concatenate(stacked)) if stacked else np.zeros(0, np.int64)
    errors: dict[str, dict[int, float]] = {}
    start = 0
    for corruption, severity, emb in tables.sets:
        stop = start + len(emb.label)
        errors.setdefault(corruption, {})[severity] = top1_error(predictions[start:stop], emb.label)
        start = stop
    return Evaluation(probe, clean_error, errors, len(tables.clean_labels))


def check_settings(cfg: DictConfig) -> tuple[str, str, list[str], int]:
    """The method, the reference kind, the Grad-CAM corruptions and severity; `UserError` for a bad value."""
    method = _method_name(cfg)
    kind = _reference_kind(cfg)
    g = cfg.robustness.gradcam
    gradcam_corruptions = C.resolve_corruptions(list(g.corruptions) if isinstance(g.corruptions, ListConfig)
                                                else str(g.corruptions))
    gradcam_severity = C.resolve_severities(int(g.severity))[0]
    if int(g.n_images) < 0:
        raise UserError(f"robustness.gradcam.n_images must be >= 0, got {g.n_images}")
    return method, kind, list(gradcam_corruptions), int(gradcam_severity)


def run(cfg: DictConfig) -> dict[str, Any]:
    method, kind, gradcam_corruptions, gradcam_severity = check_settings(cfg)
    g = cfg.robustness.gradcam
    data_root = Path(cfg.paths.data)
    dataset = str(cfg.dataset.name)
    reports = Path(cfg.paths.reports) / "robustness"
    ensure_writable(reports / f"{method}.json", reports / "plots" / method / "errors.csv",
                    reports / "gradcam" / f"{method}.png")
    family = C.read_corrupted_meta(data_root, dataset)
    alexnet = alexnet_reference(family["severities"]) if kind == "alexnet" else None  # checked before any work

    tables = load_tables(cfg, method, family)
    ref_tables = None
    if alexnet is None and method != SUPERVISED:
        try:
            ref_tables = load_tables(cfg, SUPERVISED, family)
        except UserError as err:
            raise UserError(
                f"the mCE reference on {dataset!r} is the study's `supervised` model, whose embeddings are needed: "
                f"{err} (add `supervised` to the study's methods if it is absent)"
            ) from err

    result = evaluate(cfg, tables)
    if alexnet is not None:
        reference = alexnet
    else:
        ref = result if ref_tables is None else evaluate(cfg, ref_tables)
        reference = Reference(SUPERVISED, ref.errors, ref.clean_error)

    metrics: dict[str, Any] = robustness_metrics(result.errors, result.clean_error, reference)
    metrics["robustness/n_images"] = result.n_images
    write_metrics(reports / f"{method}.json", metrics)
    _write_errors(reports / "plots" / method / "errors.csv", result, reference)
    if g.enabled and int(g.n_images) > 0:
        _gradcam(cfg, method, family, result.probe, gradcam_corruptions, gradcam_severity, int(g.n_images),
                 reports / "gradcam" / f"{method}.png")
    log.info(
        "robustness@%s: clean error %.3f, mCE %.3f and relative mCE %.3f (reference %s), mean error 15 %.3f / "
        "19 %.3f, n=%d -> %s",
        method, result.clean_error, metrics["robustness/mce"], metrics["robustness/relative_mce"], reference.name,
        metrics["robustness/mean_error_15"], metrics["robustness/mean_error_19"], result.n_images,
        reports / f"{method}.json",
    )
    return metrics


def _write_errors(path: Path, result: Evaluation, reference: Reference) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["set", "corruption", "group", "severity", "error", "reference_error", "clean_error", "n"])
    for corruption, by_severity in result.errors.items():
        for severity, error in sorted(by_severity.items()):
            ref = reference.errors.get(corruption, {}).get(severity)
            writer.writerow([
                f"{corruption}_{severity}", corruption, C.GROUP_OF[corruption], severity, repr(error),
                "" if ref is None else repr(ref), repr(result.clean_error), result.n_images,
            ])
    write_text(path, buffer.getvalue())


def _gradcam(
    cfg: DictConfig, method: str, family: dict[str, Any], probe: LinearProbe, corruptions: list[str],
    severity: int, n_images: int, path: Path,
) -> None:
    from sslbench.data.splits import open_split
    from sslbench.eval.gradcam import CamRow, gradcam, gradcam_panel
    from sslbench.models.encoder import load_encoder

    data_root = Path(cfg.paths.data)
    dataset = str(cfg.dataset.name)
    encoder, _ = load_encoder(Path(cfg.paths.models) / method, method)
    layer = probe.as_module()
    subset = np.asarray(family["index"], np.int64)[:n_images]
    test = open_split(data_root, dataset, str(cfg.dataset.test))
    labels = test.labels[subset]
    conditions: list[tuple[str, np.ndarray]] = [("clean", test.images(subset))]
    for corruption in corruptions:
        if corruption not in family["corruptions"] or severity not in family["severities"]:
            log.info("robustness@%s: Grad-CAM skips %s (%d): not among the corrupted sets", method, corruption,
                     severity)
            continue
        source = C.open_corrupted(data_root, dataset, corruption, severity)
        where = {int(v): i for i, v in enumerate(source.meta["index"])}
        at = np.asarray([where[int(i)] for i in subset], np.int64)
        conditions.append((f"{corruption} ({severity})", source.images(at)))
    rows = []
    for title, images in conditions:
        cams, predictions = gradcam(encoder, layer, images, labels)
        rows.append(CamRow(title, images, cams, labels, predictions))
    gradcam_panel(rows, test.classes, path, f"Grad-CAM of {method} + linear probe, target = true label")


main = stage_main(run, "robustness")

if __name__ == "__main__":
    main()
