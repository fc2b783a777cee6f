"""The ood area: OOD detection from cached embeddings.

In-distribution = the main dataset (`dataset.name`); the ID side of every test metric is its test split. The OOD
sets are `dataset.ood.<group>` = {dataset: split} for each group (`near`, `far`); `dataset.ood.validation` sets are
used only to choose the sign of the disputed stochastic scores (against the main *val* split), never for test
numbers. Every detector is fitted on the main *train* split; the linear probe behind MSP/max-logit/energy is the
probe area's (same `probe.linear` settings and seed, weight decay selected on val; Bayes-H: logits averaged over
`probe.n_samples` draws of q(h), as in the probe area). Every table must come from the current
`models/<method>/encoder.pt` (sha256 in its metadata), else the error names `dvc repro embed@<method>`. The kNN
and KL-kNN scores run on the GPU where there is one (`sslbench.eval.ood.auto_device`), over blocks of the train
table; the kNN score is the same float64 value on either device, KL-kNN equal to float64 rounding.

Outputs
- `reports/ood/<method>.json` (flat; identical key set for every method):
  - `ood/convention` = `"ood_positive"` (OOD is the positive class; see `sslbench.eval.ood_metrics`);
  - `ood/<group>/<score>/<metric>`: mean over the group's sets (as OpenOOD reports near/far);
  - `ood/<set>/<score>/<metric>` per OOD set (`<set>` = its dataset name);
    metrics `auroc`, `aupr_in`, `aupr_out`, `fpr95`; scores in `sslbench.eval.ood.SCORES`;
  - `ood/sign/<score>` (+1 reference orientation, −1 flipped) and `ood/validation/<score>/auroc` (validation AUROC
    under the chosen sign) for the stochastic scores;
  - `ood/skipped`: why scores are null ("" when none is). The stochastic scores (`mean_sigma`, `prior_log_density`,
    `kl_knn`) of a deterministic model are **skipped, not an error**: their keys are null and `ood/skipped` names
    them and the reason, so that one `dvc repro` covers every method and `dvc metrics diff` lines up.
- `reports/ood/plots/<method>/roc_<group>.csv`: the group's ROC curve (a header and no rows for a group the
  dataset leaves empty, such as `near` on TinyImageNet and ImageNet: `sslbench.paths.not_applicable`; OOD positive,
  TPR vertically averaged
  over its sets) on a 200-point FPR grid, one column per score the model has (`fpr,msp,max_logit,...`; the
  stochastic scores only for Bayes models), values = TPR. Wide rather than long (`fpr,tpr,score`) because DVC's
  templates draw one line per *column* (`y: {file: [cols]}`) but cannot split one column by the value of another.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslbench.areas.common import LinearSettings, Study, encoder_sha, train_probe
from sslbench.errors import UserError
from sslbench.eval.linear import LinearProbe
from sslbench.eval.ood import (
    DISPUTED_SCORES,
    SCORES,
    STOCHASTIC_SCORES,
    Detectors,
    Stochastic,
    apply_signs,
    auto_device,
    fit_detectors,
    select_sign,
    shared_classes,
)
from sslbench.eval.ood_metrics import CONVENTION, METRICS, mean_roc, ood_metrics, roc_curve_ood
from sslbench.io import (
    EMBED_REBUILD,
    Embeddings,
    embeddings_path,
    ensure_writable,
    read_embeddings,
    read_json,
    split_dir,
    write_metrics,
)
from sslbench.models.encoder import ENCODER_FILE

log = logging.getLogger("sslbench.ood")

VALIDATION = "validation"
RESERVED_KEYS = {"convention", "sign", "skipped", VALIDATION}
ROC_POINTS = 200


class OODClassOverlapWarning(UserWarning):
    """An OOD set shares class names with the in-distribution set."""


@dataclass(frozen=True)
class OODSettings:
    """The `ood:` section, checked, with the probe protocol behind the logit scores and the OOD sets: test groups
    {group: {dataset: split}} and the validation sets {dataset: split}."""

    study: Study
    linear: LinearSettings
    n_samples: int
    knn_k: int
    kmeans_clusters: int
    groups: dict[str, dict[str, str]]
    validation: dict[str, str]


def settings(cfg: DictConfig) -> OODSettings:
    """The ood area's settings from a stage config (`method`, `ood:`, `probe.linear`, `probe.n_samples`,
    `dataset.ood`, paths, seed); `UserError` for a bad value."""
    study = Study.from_config(cfg)
    for key in ("knn_k", "kmeans_clusters"):
        if int(cfg.ood[key]) < 1:
            raise UserError(f"ood.{key} must be >= 1, got {cfg.ood[key]}")
    lin = cfg.probe.linear
    if not list(lin.weight_decays) or int(lin.epochs) < 1 or int(lin.batch_size) < 1 or float(lin.lr) <= 0:
        raise UserError(f"probe.linear needs weight_decays, epochs >= 1, batch_size >= 1, lr > 0 (got {lin})")
    if int(cfg.probe.n_samples) < 1:
        raise UserError(f"probe.n_samples must be >= 1, got {cfg.probe.n_samples}")
    groups_cfg = OmegaConf.to_container(cfg.dataset.ood, resolve=True)
    if not isinstance(groups_cfg, dict):
        raise UserError(f"dataset.ood must map groups to {{dataset: split}}, got {groups_cfg!r}")
    groups: dict[str, dict[str, str]] = {}
    owner: dict[str, str] = {}
    for raw, sets in groups_cfg.items():
        group = str(raw)
        if not isinstance(sets, dict):
            raise UserError(f"dataset.ood.{group} must be a {{dataset: split}} mapping, got {sets!r}")
        if group == VALIDATION:
            continue
        if group in RESERVED_KEYS or group in SCORES:
            raise UserError(f"dataset.ood group name {group!r} is reserved; rename it")
        for name in sets:
            if name in owner or name in groups_cfg or name in RESERVED_KEYS:
                raise UserError(
                    f"OOD set {name!r} appears in groups {owner.get(name, name)!r} and {group!r} (or clashes with a "
                    "group name): metric keys ood/<set>/... must be unique; list each dataset in one group only"
                )
            owner[name] = group
        groups[group] = {str(k): str(v) for k, v in sets.items()}
    if not any(groups.values()):
        raise UserError("dataset.ood lists no OOD test sets (groups near/far are empty)")
    validation = {str(k): str(v) for k, v in (groups_cfg.get(VALIDATION) or {}).items()}
    return OODSettings(study=study, linear=LinearSettings.from_config(lin), n_samples=int(cfg.probe.n_samples),
                       knn_k=int(cfg.ood.knn_k), kmeans_clusters=int(cfg.ood.kmeans_clusters), groups=groups,
                       validation=validation)


def _read(data: Path, method: str, dataset: str, split: str, sha: str, like: Embeddings | None = None) -> Embeddings:
    path = embeddings_path(data, method, dataset, split)
    emb = read_embeddings(path, method=method, dataset=dataset, split=split)
    rebuild = EMBED_REBUILD.format(method=method)
    if emb.meta.get("encoder_sha256") != sha:
        raise UserError(
            f"embeddings {path} were computed by another encoder than models/{method}/{ENCODER_FILE} (sha256 "
            f"{emb.meta.get('encoder_sha256', '?')[:12]} != {sha[:12]}); run `{rebuild}`"
        )
    if len(emb.embedding) < 2:
        raise UserError(
            f"{dataset}/{split} has {len(emb.embedding)} example(s) in {path}; OOD metrics need at least 2 per set: "
            f"use a larger split or remove it from dataset.ood, then run `{rebuild}`"
        )
    if like is not None:
        if emb.dim != like.dim:
            raise UserError(
                f"embeddings {path} have dim {emb.dim} but the training embeddings have dim {like.dim}: they come "
                f"from different encoders; run `{rebuild}`"
            )
        if emb.meta["stochastic_space"] != like.meta["stochastic_space"] or (
            emb.mu is not None and like.mu is not None and emb.mu.shape[1] != like.mu.shape[1]
        ):
            raise UserError(
                f"embeddings {path} have stochastic space {emb.meta['stochastic_space']!r} (dim "
                f"{emb.meta['stochastic_dim']}) but the training embeddings have {like.meta['stochastic_space']!r} "
                f"(dim {like.meta['stochastic_dim']}); run `{rebuild}`"
            )
    return emb


def warn_shared_classes(data: Path, main: str, train_split: str, sets: dict[str, str]) -> None:
    """`OODClassOverlapWarning` for every OOD set that shares class names with the in-distribution set."""
    def classes(dataset: str, split: str) -> list[str] | None:
        meta_path = split_dir(data, dataset, split) / "meta.json"
        if not meta_path.is_file():
            log.warning("cannot check OOD class overlap: %s is missing (run `dvc repro prepare`)", meta_path)
            return None
        return list(read_json(meta_path, "dvc repro prepare").get("classes", []))

    id_classes = classes(main, train_split)
    if id_classes is None:
        return
    for dataset, split in sets.items():
        ood_classes = classes(dataset, split)
        common = shared_classes(id_classes, ood_classes or [])
        if common:
            warnings.warn(
                f"OOD set {dataset}/{split} shares classes with the in-distribution set {main}: {', '.join(common)}; "
                "its metrics count those in-distribution images as OOD",
                OODClassOverlapWarning,
                stacklevel=2,
            )


def _one_mu(emb: Embeddings) -> Embeddings:
    """A Bayes-H table stores μ twice (its embedding is μ of q(h)): keep one array of it (9.8 GiB for ImageNet's
    train split). Compared block by block, so the check holds no temporary of the table's size."""
    if emb.mu is None or emb.mu.shape != emb.embedding.shape:
        return emb
    step = max(1, (1 << 22) // max(1, emb.dim))
    if all(np.array_equal(emb.mu[i : i + step], emb.embedding[i : i + step]) for i in range(0, len(emb.mu), step)):
        return dataclasses.replace(emb, mu=emb.embedding)
    return emb


def _stochastic(emb: Embeddings) -> Stochastic | None:
    return None if emb.mu is None or emb.logvar is None else Stochastic(emb.mu, emb.logvar)


def _fit(s: OODSettings, train: Embeddings, val: Embeddings, probe: LinearProbe | None) -> Detectors:
    st, method = s.study, s.study.method
    n_train = len(train.embedding)
    for key, value in (("knn_k", s.knn_k), ("kmeans_clusters", s.kmeans_clusters)):
        if value > n_train:
            raise UserError(f"ood.{key}={value} exceeds the {n_train} training embeddings; lower it")
    if probe is None:
        probe = train_probe(train, val, st, s.linear)
    stochastic = _stochastic(train)
    prior = None
    if stochastic is not None:
        from sslbench.models.encoder import load_encoder

        encoder, _ = load_encoder(st.models / method, method)
        space, width = train.meta["stochastic_space"], stochastic.mu.shape[1]
        if encoder.prior is None or encoder.spec.stochastic_space != space or encoder.prior.dim != width:
            raise UserError(
                f"the embeddings of {method} have stochastic space {space!r} (dim {width}) but "
                f"models/{method} has {encoder.spec.stochastic_space!r}: the embeddings are stale; run "
                f"`dvc repro embed@{method}`"
            )
        prior = encoder.prior.log_prob
    return fit_detectors(
        probe, train.embedding, train.label,
        knn_k=s.knn_k, kmeans_clusters=s.kmeans_clusters, seed=st.seed,
        stochastic_train=stochastic, prior_log_prob=prior,
        logit_samples=s.n_samples if train.meta["stochastic_space"] == "h" else 0, device=auto_device(),
    )  # fmt: skip


def _score(det: Detectors, emb: Embeddings, name: str) -> dict[str, np.ndarray]:
    scores = det.score(emb.embedding, _stochastic(emb))
    for score, values in scores.items():
        if not np.isfinite(values).all():
            raise UserError(
                f"score {score} is not finite on {name} ({int((~np.isfinite(values)).sum())} values): the embeddings "
                f"contain NaN/inf or collapse; check `dvc repro embed@{emb.meta['method']}`"
            )
    return scores


def _write_roc(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    names = list(curves)
    fpr = next(iter(curves.values()))[0]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["fpr", *names])
        for i, x in enumerate(fpr):
            writer.writerow([f"{x:.6g}", *(f"{curves[n][1][i]:.6g}" for n in names)])


def run(s: OODSettings, probe: LinearProbe | None = None) -> dict[str, Any]:
    """The OOD metrics of the method; writes its metrics and ROC tables. `probe`: the linear probe of the main
    split (`common.train_probe` on the CPU), when the caller has trained it already; None: trained here."""
    start = time.perf_counter()
    st = s.study
    method, groups, validation = st.method, s.groups, s.validation
    data, reports = st.data, st.reports
    main = st.dataset
    ensure_writable(reports / "ood" / f"{method}.json", reports / "ood" / "plots" / method)

    sha = encoder_sha(st)
    train = _one_mu(_read(data, method, main, st.train, sha))
    val = _read(data, method, main, st.val, sha, like=train)
    test = _read(data, method, main, st.test, sha, like=train)
    test_sets = {name: split for sets in groups.values() for name, split in sets.items()}
    ood = {name: _read(data, method, name, split, sha, like=train) for name, split in test_sets.items()}
    stochastic = train.mu is not None
    if stochastic and not validation:
        raise UserError(
            f"{method} is stochastic: the signs of {', '.join(DISPUTED_SCORES)} are chosen on validation OOD sets, "
            "but dataset.ood.validation is empty; list at least one {dataset: split} there"
        )
    val_ood = {n: _read(data, method, n, sp, sha, like=train) for n, sp in validation.items()} if stochastic else {}
    warn_shared_classes(data, main, st.train, {**test_sets, **validation})

    det = _fit(s, train, val, probe)

    # signs of the disputed scores: validation OOD sets vs the main val split only
    signs: dict[str, int] = {}
    val_auroc: dict[str, float] = {}
    if stochastic:
        id_val = _score(det, val, f"{main}/{st.val}")
        ood_val = [_score(det, emb, f"{n}/{validation[n]}") for n, emb in val_ood.items()]
        for score in DISPUTED_SCORES:
            signs[score], val_auroc[score] = select_sign(id_val[score], [sc[score] for sc in ood_val])

    id_test = apply_signs(_score(det, test, f"{main}/{st.test}"), signs)
    per_set: dict[str, dict[str, dict[str, float]]] = {}
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    from sslbench.progress import progress

    for name in progress(ood, desc=f"ood@{method}", unit="set"):
        scores = apply_signs(_score(det, ood[name], f"{name}/{test_sets[name]}"), signs)
        per_set[name] = {sc: ood_metrics(id_test[sc], scores[sc]) for sc in det.names}
        curves[name] = {sc: roc_curve_ood(id_test[sc], scores[sc]) for sc in det.names}

    metrics: dict[str, Any] = {"ood/convention": CONVENTION}
    for group, sets in groups.items():
        for score in SCORES:
            for m in METRICS:
                values = [per_set[n][score][m] for n in sets if score in per_set[n]]
                metrics[f"ood/{group}/{score}/{m}"] = float(np.mean(values)) if values else None
    for name in ood:
        for score in SCORES:
            for m in METRICS:
                metrics[f"ood/{name}/{score}/{m}"] = per_set[name][score][m] if score in per_set[name] else None
    for score in DISPUTED_SCORES:
        metrics[f"ood/sign/{score}"] = signs.get(score)
        metrics[f"ood/validation/{score}/auroc"] = val_auroc.get(score)
    metrics["ood/skipped"] = "" if stochastic else (
        f"{', '.join(STOCHASTIC_SCORES)}: {method} has a deterministic embedding (stochastic_space=none); these "
        "scores need a stochastic model (Bayes-H/Bayes-Z, whose embeddings carry mu and logvar)"
    )

    from sslbench.io import atomic_path

    with atomic_path(reports / "ood" / "plots" / method) as tmp:
        tmp.mkdir(parents=True)
        for group, sets in groups.items():
            if sets:
                _write_roc(tmp / f"roc_{group}.csv",
                           {sc: mean_roc([curves[n][sc] for n in sets], ROC_POINTS) for sc in det.names})
            else:  # dvc.yaml declares roc_near/roc_far for every dataset: an empty group is a header, no rows
                _write_roc(tmp / f"roc_{group}.csv", {sc: (np.zeros(0), np.zeros(0)) for sc in det.names})
    write_metrics(reports / "ood" / f"{method}.json", metrics)

    summary = " | ".join(
        f"{g}: " + " ".join(f"{sc} {metrics[f'ood/{g}/{sc}/auroc']:.3f}" for sc in det.names)
        for g in groups if groups[g]
    )
    log.info("ood@%s AUROC (OOD positive) %s%s in %.1fs", method, summary,
             f"; signs {signs}" if signs else "", time.perf_counter() - start)
    return metrics
