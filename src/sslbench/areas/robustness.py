"""The robustness area: corruption robustness of one method from its embeddings.

The linear probe of the probe area (`common.train_probe`, `probe.linear` settings) is trained on the method's clean
train embeddings (weight decay chosen on val), then applied to the clean test images of the corrupted subset and to
every corrupted set (paired by source `index`). The reference that normalises CE (Hendrycks & Dietterich, ICLR 2019)
is AlexNet on ImageNet and the study's `supervised` model elsewhere; the latter is evaluated here, with the same
probe protocol, from its own embeddings (never from another stage's output, so `evaluate@supervised` does not
depend on itself). Writes `reports/robustness/<method>.json` (metrics, `sslbench.eval.corruption`),
`reports/robustness/plots/<method>/errors.csv` (per corruption and severity, for `dvc plots`) and
`reports/robustness/gradcam/<method>.png` (`sslbench.eval.gradcam`, drawn by `sslbench.report.panels`; a placeholder
saying so when Grad-CAM is off: `sslbench.paths.write_not_applicable_png`).

Memory: the corrupted sets are never all held or concatenated at once (ImageNet-C's 95 tables of 50,000 x 2048
float32 are 36 GiB, and their concatenation as much again). `load_tables` checks every table before any work and keeps
the embeddings of the first ones up to `HOLD_BYTES`; `evaluate` reads the others again one at a time and predicts the
sets in groups of at most `GROUP_BYTES` (the small study's 95 sets are one group: one probe call, as before).
"""

from __future__ import annotations

import csv
import functools
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from sslbench.areas.common import LinearSettings, Study, train_probe
from sslbench.data import corruptions as C
from sslbench.data.corruption_names import GROUP_OF
from sslbench.errors import UserError, unknown_choice
from sslbench.eval.corruption import Reference, alexnet_reference, robustness_metrics, top1_error
from sslbench.eval.linear import LinearProbe
from sslbench.io import Embeddings, embeddings_path, ensure_writable, read_embeddings, write_metrics, write_text
from sslbench.paths import write_not_applicable_png

log = logging.getLogger("sslbench.robustness")

SUPERVISED = "supervised"
REFERENCES = ("auto", "alexnet", "supervised")
HOLD_BYTES = 2 << 30  # corrupted-set embeddings kept in memory after their check; the others are read again
GROUP_BYTES = 1 << 30  # corrupted-set embeddings predicted by one probe call


@dataclass(frozen=True)
class RobustnessSettings:
    """The `robustness:` section, checked: the CE reference (`alexnet` or `supervised`, `auto` resolved) and the
    Grad-CAM panel (corruptions at one severity, `gradcam_images` test images; 0: no panel)."""

    study: Study
    linear: LinearSettings
    reference: str
    gradcam_images: int
    gradcam_corruptions: tuple[str, ...]
    gradcam_severity: int


@dataclass
class CorruptedSet:
    """One corrupted set's table, checked by `load_tables`: its labels, and its embeddings while they fit in
    `HOLD_BYTES` (None: `embeddings()` reads the table again)."""

    corruption: str
    severity: int
    index: np.ndarray
    label: np.ndarray
    embedding: np.ndarray | None
    read: Callable[[], Embeddings]

    def embeddings(self) -> np.ndarray:
        """The (N, D) embeddings, read again (and checked to be the same rows) when they were not kept."""
        if self.embedding is not None:
            return self.embedding
        emb = self.read()
        if not (np.array_equal(emb.index, self.index) and np.array_equal(emb.label, self.label)):
            raise UserError(f"embeddings of {emb.meta['dataset']}/{emb.meta['split']} changed during the evaluation; "
                            f"run `dvc repro embed@{emb.meta['method']}`")
        return emb.embedding


@dataclass
class Tables:
    """One model's embeddings for the evaluation: train/val, the clean test rows of the corrupted subset (in
    subset order) and every corrupted set."""

    train: Embeddings
    val: Embeddings
    clean: np.ndarray
    clean_labels: np.ndarray
    sets: list[CorruptedSet]


@dataclass
class Evaluation:
    """One model under the probe protocol: its probe, E_clean on the corrupted subset, E_{c,s}, and n."""

    probe: LinearProbe
    clean_error: float
    errors: dict[str, dict[int, float]]
    n_images: int


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


def settings(cfg: DictConfig) -> RobustnessSettings:
    """The robustness area's settings from a stage config (`method`, `robustness:`, `probe.linear`, dataset,
    paths, seed); `UserError` for a bad value."""
    study = Study.from_config(cfg)
    kind = _reference_kind(cfg)
    g = cfg.robustness.gradcam
    gradcam_corruptions = C.resolve_corruptions(list(g.corruptions) if isinstance(g.corruptions, ListConfig)
                                                else str(g.corruptions))
    gradcam_severity = C.resolve_severities(int(g.severity))[0]
    if int(g.n_images) < 0:
        raise UserError(f"robustness.gradcam.n_images must be >= 0, got {g.n_images}")
    return RobustnessSettings(
        study=study, linear=LinearSettings.from_config(cfg.probe.linear), reference=kind,
        gradcam_images=int(g.n_images) if g.enabled else 0, gradcam_corruptions=tuple(gradcam_corruptions),
        gradcam_severity=int(gradcam_severity),
    )


def _embeddings(study: Study, method: str, dataset: str, split: str, dim: int | None = None) -> Embeddings:
    return read_embeddings(
        embeddings_path(study.data, method, dataset, split), method=method, dataset=dataset, split=split, dim=dim
    )


def load_tables(study: Study, method: str, family: dict[str, Any], hold_bytes: int = HOLD_BYTES) -> Tables:
    """Read and check every embedding table of `method` that the evaluation needs (before any training); the
    corrupted sets' embeddings are kept up to `hold_bytes` in all (`CorruptedSet`)."""
    dataset = study.dataset
    rebuild = f"dvc repro embed@{method}"
    train = _embeddings(study, method, dataset, study.train)
    val = _embeddings(study, method, dataset, study.val, train.dim)
    test = _embeddings(study, method, dataset, study.test, train.dim)
    subset = np.asarray(family["index"], np.int64)
    order = np.argsort(test.index)
    pos = np.clip(np.searchsorted(test.index[order], subset), 0, max(len(order) - 1, 0))
    if len(order) == 0 or not np.array_equal(test.index[order][pos], subset):
        raise UserError(
            f"the clean test embeddings of {method} lack some of the corrupted sets' source indices; run `{rebuild}`"
        )
    rows = order[pos]
    sets: list[CorruptedSet] = []
    held = 0
    for corruption in family["corruptions"]:
        for severity in family["severities"]:
            split = f"{corruption}_{severity}"
            read = functools.partial(_embeddings, study, method, f"{dataset}_c", split, train.dim)
            emb = read()
            if not np.array_equal(np.sort(emb.index), subset):
                raise UserError(
                    f"embeddings of {dataset}_c/{split} for {method} do not cover the corrupted set's images (stale "
                    f"after `dvc repro corrupt`?); run `{rebuild}`"
                )
            at = np.searchsorted(subset, emb.index)
            if not np.array_equal(emb.label, test.label[rows][at]):
                raise UserError(f"labels of {dataset}_c/{split} for {method} differ from the clean test labels at the "
                                f"same index; run `{rebuild}`")
            keep = held + emb.embedding.nbytes <= hold_bytes
            held += emb.embedding.nbytes if keep else 0
            sets.append(CorruptedSet(corruption, int(severity), emb.index, emb.label,
                                     emb.embedding if keep else None, read))
            del emb
    return Tables(train, val, test.embedding[rows], test.label[rows], sets)


def evaluate(s: RobustnessSettings, tables: Tables, probe: LinearProbe | None = None,
             group_bytes: int = GROUP_BYTES) -> Evaluation:
    """Measure E_clean and every E_{c,s} with `probe`, or with the probe trained here on the clean train
    embeddings (weight decay chosen on val) when it is None. The sets are predicted in groups of at most
    `group_bytes` of embeddings (a call per set costs more than the arithmetic on small sets)."""
    fitted = train_probe(tables.train, tables.val, s.study, s.linear) if probe is None else probe
    clean_error = top1_error(fitted.predict(tables.clean), tables.clean_labels)
    errors: dict[str, dict[int, float]] = {}
    group: list[tuple[CorruptedSet, np.ndarray]] = []

    def flush() -> None:
        predictions = fitted.predict(np.concatenate([e for _, e in group]))
        start = 0
        for cs, _ in group:
            stop = start + len(cs.label)
            errors.setdefault(cs.corruption, {})[cs.severity] = top1_error(predictions[start:stop], cs.label)
            start = stop
        group.clear()

    for cs in tables.sets:
        embedding = cs.embeddings()
        if group and sum(e.nbytes for _, e in group) + embedding.nbytes > group_bytes:
            flush()
        group.append((cs, embedding))
    if group:
        flush()
    return Evaluation(fitted, clean_error, errors, len(tables.clean_labels))


def run(s: RobustnessSettings, probe: LinearProbe | None = None) -> dict[str, Any]:
    """The robustness metrics of the method; writes its metrics, error table and Grad-CAM panel. `probe`: the
    linear probe of the main split (`common.train_probe` on the CPU), when the caller has trained it already;
    None: trained here."""
    st = s.study
    method, dataset = st.method, st.dataset
    reports = st.reports / "robustness"
    ensure_writable(reports / f"{method}.json", reports / "plots" / method / "errors.csv",
                    reports / "gradcam" / f"{method}.png")
    family = C.read_corrupted_meta(st.data, dataset)
    alexnet = alexnet_reference(family["severities"]) if s.reference == "alexnet" else None  # checked before work

    tables = load_tables(st, method, family)
    ref_tables = None
    if alexnet is None and method != SUPERVISED:
        try:
            ref_tables = load_tables(st, SUPERVISED, family)
        except UserError as err:
            raise UserError(
                f"the mCE reference on {dataset!r} is the study's `supervised` model, whose embeddings are needed: "
                f"{err} (add `supervised` to the study's methods if it is absent)"
            ) from err

    result = evaluate(s, tables, probe)
    if alexnet is not None:
        reference = alexnet
    else:
        ref = result if ref_tables is None else evaluate(s, ref_tables)
        reference = Reference(SUPERVISED, ref.errors, ref.clean_error)

    metrics: dict[str, Any] = robustness_metrics(result.errors, result.clean_error, reference)
    metrics["robustness/n_images"] = result.n_images
    write_metrics(reports / f"{method}.json", metrics)
    write_text(reports / "plots" / method / "errors.csv", errors_csv(result, reference))
    if s.gradcam_images > 0:
        _gradcam(s, family, result.probe, reports / "gradcam" / f"{method}.png")
    else:  # declared for every method in dvc.yaml: a placeholder that says why (sslbench.paths.not_applicable)
        write_not_applicable_png(reports / "gradcam" / f"{method}.png",
                                 "Grad-CAM off (robustness.gradcam.enabled=false or n_images=0)")
    log.info(
        "robustness@%s: clean error %.3f, mCE %.3f and relative mCE %.3f (reference %s), mean error 15 %.3f / "
        "19 %.3f, n=%d -> %s",
        method, result.clean_error, metrics["robustness/mce"], metrics["robustness/relative_mce"], reference.name,
        metrics["robustness/mean_error_15"], metrics["robustness/mean_error_19"], result.n_images,
        reports / f"{method}.json",
    )
    return metrics


def errors_csv(result: Evaluation, reference: Reference) -> str:
    """The error table of `reports/robustness/plots/<method>/errors.csv`: one row per corruption and severity."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["set", "corruption", "group", "severity", "error", "reference_error", "clean_error", "n"])
    for corruption, by_severity in result.errors.items():
        for severity, error in sorted(by_severity.items()):
            ref = reference.errors.get(corruption, {}).get(severity)
            writer.writerow([
                f"{corruption}_{severity}", corruption, GROUP_OF[corruption], severity, repr(error),
                "" if ref is None else repr(ref), repr(result.clean_error), result.n_images,
            ])
    return buffer.getvalue()


def _gradcam(s: RobustnessSettings, family: dict[str, Any], probe: LinearProbe, path: Path) -> None:
    from sslbench.data.splits import open_split
    from sslbench.eval.gradcam import gradcam
    from sslbench.models.encoder import load_encoder
    from sslbench.report.panels import CamRow, gradcam_panel

    st = s.study
    method, severity = st.method, s.gradcam_severity
    encoder, _ = load_encoder(st.models / method, method)
    layer = probe.as_module()
    subset = np.asarray(family["index"], np.int64)[: s.gradcam_images]
    test = open_split(st.data, st.dataset, st.test)
    labels = test.labels[subset]
    conditions: list[tuple[str, np.ndarray]] = [("clean", test.images(subset))]
    for corruption in s.gradcam_corruptions:
        if corruption not in family["corruptions"] or severity not in family["severities"]:
            log.info("robustness@%s: Grad-CAM skips %s (%d): not among the corrupted sets", method, corruption,
                     severity)
            continue
        source = C.open_corrupted(st.data, st.dataset, corruption, severity)
        where = {int(v): i for i, v in enumerate(source.meta["index"])}
        at = np.asarray([where[int(i)] for i in subset], np.int64)
        conditions.append((f"{corruption} ({severity})", source.images(at)))
    if layer.out_features != len(test.classes):  # names of the predicted classes come from the split's classes
        raise UserError(
            f"the linear probe has {layer.out_features} classes but {test.directory} holds {len(test.classes)} "
            "(dataset.num_classes); evaluate through `sslbench.stages.evaluate`, which counts the classes on disk"
        )
    rows = []
    for title, images in conditions:
        cams, predictions = gradcam(encoder, layer, images, labels)
        rows.append(CamRow(title, images, cams, labels, predictions))
    gradcam_panel(rows, test.classes, path, f"Grad-CAM of {method} + linear probe, target = true label")
