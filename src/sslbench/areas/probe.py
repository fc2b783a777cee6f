"""The probe area: the accuracy half of the study, on cached embeddings.

Reads `data/embeddings/<method>/` (never re-runs the encoder on images, except for semi-supervised fine-tuning,
which by definition trains the backbone: it reads `models/<method>/` and the images of `data/datasets/`), and
writes `reports/probe/<method>.json`, accuracies as fractions in [0, 1], the same keys for every method:
- `linear/top1` (micro top-1 on test of the probe whose weight decay won on *validation*), `linear/macro_acc`
  (mean per-class accuracy), `linear/weight_decay` (selected), `linear/val_top1`, and `linear/top1_wd<wd>`, the
  test top-1 of every candidate (for comparison with the DISSL paper, which reports the max over test);
- `knn/top1`, `knn/macro_acc`: DINO's weighted kNN on L2-normalised features;
- per label fraction f (tag `1pct`, `10pct`): `semisup/linear_top1_<f>` (linear probe trained on the subset),
  `semisup/finetune_top1_<f>` (full fine-tuning, early-stopped on validation), `semisup/finetune_epochs_<f>` and
  `semisup/finetune_steps_<f>` (passes over the subset and optimizer steps run),
  `semisup/n_labels_<f>`;
- per transfer set t: `transfer/<t>/top1` (micro) and `transfer/<t>/macro_acc`: the linear probe trained on t's own
  train split (L2-normalised features, as the linear transfer evaluations of SimCLR and DISSL do), weight decay
  chosen on t's val split. The optimiser is the linear protocol's SGD rather than the AdamW + multistep schedule of
  the DISSL transfer evaluation, so that the study has one linear protocol.

Bayes-H encoders (`stochastic_space == 'h'` in the embedding metadata): every head is applied to each of
`probe.n_samples` draws of q(h) = N(mu, diag(exp(logvar))) (fixed seed) and the logits are averaged; probes are
trained on mu (the representation) and their weight decay is selected on mu.

Every table is read and checked (method, dataset, split, dimension, encoder checksum) before any training, so a
bad input fails with a `UserError` naming the file and the fix, and no metrics file is written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslbench.accel import resolve_device
from sslbench.areas.common import LinearSettings, Study, check_labels, load_table, train_probe
from sslbench.errors import UserError
from sslbench.eval.linear import LinearProbe, accuracy, linear_eval, linear_test_metrics, macro_accuracy
from sslbench.io import EMBED_REBUILD, Embeddings, embeddings_path, ensure_writable, sha256_file, write_metrics

log = logging.getLogger("sslbench.probe")

ROLES = ("train", "val", "test")


@dataclass(frozen=True)
class Finetune:
    """`probe.semisup.finetune`: full fine-tuning on the label subsets (0 epochs: none)."""

    epochs: int
    patience: int
    min_steps: int
    batch_size: int
    backbone_lr: float
    head_lr: float
    weight_decay: float


@dataclass(frozen=True)
class ProbeSettings:
    """The `probe:` section, checked, and the study it evaluates (`device` resolved: `cpu` or `cuda`)."""

    study: Study
    device: str
    n_samples: int
    linear: LinearSettings
    knn_k: int
    knn_temperature: float
    fractions: tuple[float, ...]
    min_per_class: int
    finetune: Finetune
    transfer: tuple[str, ...]


def check_settings(p: DictConfig) -> None:
    """Validate the `probe:` section before any work (`UserError` naming the key)."""
    lin, knn, semi, ft = p.linear, p.knn, p.semisup, p.semisup.finetune
    wds = [float(w) for w in lin.weight_decays]
    problems = [
        (int(lin.epochs) < 1, "probe.linear.epochs must be >= 1"),
        (float(lin.lr) <= 0, "probe.linear.lr must be > 0"),
        (int(lin.batch_size) < 1, "probe.linear.batch_size must be >= 1"),
        (not wds or min(wds) < 0 or len(set(wds)) != len(wds),
         "probe.linear.weight_decays must be a non-empty list of distinct values >= 0"),
        (int(knn.k) < 1, "probe.knn.k must be >= 1"),
        (float(knn.temperature) <= 0, "probe.knn.temperature must be > 0"),
        (int(p.n_samples) < 1, "probe.n_samples must be >= 1"),
        (any(not 0 < float(f) <= 1 for f in semi.fractions) or len(set(semi.fractions)) != len(semi.fractions),
         "probe.semisup.fractions must be distinct values in (0, 1]"),
        (int(semi.min_per_class) < 0, "probe.semisup.min_per_class must be >= 0"),
        (int(ft.epochs) < 0, "probe.semisup.finetune.epochs must be >= 0 (0 skips fine-tuning)"),
        (int(ft.patience) < 1 or int(ft.batch_size) < 1, "probe.semisup.finetune.patience/batch_size must be >= 1"),
        (int(ft.min_steps) < 0, "probe.semisup.finetune.min_steps must be >= 0"),
        (float(ft.backbone_lr) <= 0 or float(ft.head_lr) <= 0 or float(ft.weight_decay) < 0,
         "probe.semisup.finetune: learning rates must be > 0 and weight_decay >= 0"),
    ]
    for bad, message in problems:
        if bad:
            raise UserError(f"{message} (got probe={OmegaConf.to_container(p)})")


def settings(cfg: DictConfig) -> ProbeSettings:
    """The probe area's settings from a stage config (`method`, `probe:`, dataset, paths, seed), checked."""
    study = Study.from_config(cfg)
    p = cfg.probe
    check_settings(p)
    ft = p.semisup.finetune
    return ProbeSettings(
        study=study, device=resolve_device(str(p.device)), n_samples=int(p.n_samples),
        linear=LinearSettings.from_config(p.linear), knn_k=int(p.knn.k), knn_temperature=float(p.knn.temperature),
        fractions=tuple(float(f) for f in p.semisup.fractions), min_per_class=int(p.semisup.min_per_class),
        finetune=Finetune(epochs=int(ft.epochs), patience=int(ft.patience), min_steps=int(ft.min_steps),
                          batch_size=int(ft.batch_size),
                          backbone_lr=float(ft.backbone_lr), head_lr=float(ft.head_lr),
                          weight_decay=float(ft.weight_decay)),
        transfer=tuple(str(name) for name in cfg.dataset.transfer),
    )


def load_set(data_root: Path, method: str, dataset: str, splits: dict[str, str], *, dim: int, sha: str
             ) -> dict[str, Embeddings]:
    tables = {role: load_table(data_root, method, dataset, split, dim=dim, sha=sha) for role, split in splits.items()}
    spaces = {t.meta["stochastic_space"] for t in tables.values()}
    if len(spaces) != 1:
        raise UserError(f"embeddings of {dataset} mix stochastic spaces {sorted(spaces)}; run "
                        f"`{EMBED_REBUILD.format(method=method)}`")
    return tables


def run(s: ProbeSettings, probe: LinearProbe | None = None) -> dict[str, Any]:
    """Every probe of the area; writes `reports/probe/<method>.json`. `probe`: the linear probe of the main split
    (`common.train_probe` on `s.device`), when the caller has trained it already; None: trained here."""
    st = s.study
    method, data_root, dataset, seed = st.method, st.data, st.dataset, st.seed
    num_classes, n_samples, linear, device = st.num_classes, s.n_samples, s.linear.kwargs(), s.device
    fractions, ft_epochs = list(s.fractions), s.finetune.epochs
    start = time.perf_counter()

    # ---- load and check every input before any work
    from sslbench.models.encoder import ENCODER_FILE, load_encoder

    model_dir = st.models / method
    ensure_writable(st.reports / "probe" / f"{method}.json")
    encoder, _ = load_encoder(model_dir, method)
    sha = sha256_file(model_dir / ENCODER_FILE)
    dim = encoder.embedding_dim
    splits = st.splits
    split_tables = load_set(data_root, method, dataset, splits, dim=dim, sha=sha)
    transfer = {name: load_set(data_root, method, name, {r: r for r in ROLES}, dim=dim, sha=sha)
                for name in s.transfer}
    for role, table in split_tables.items():
        check_labels(st, splits[role], table)
    sources = _open_images(data_root, dataset, splits, split_tables, method) if ft_epochs > 0 and fractions else {}
    from sslbench.eval.subsets import class_balanced_subset, fraction_tag

    class_names = list(sources["train"].classes) if sources else None
    subsets = {
        f: class_balanced_subset(split_tables["train"].label, f, seed=seed, num_classes=num_classes,
                                 class_names=class_names, min_per_class=s.min_per_class)
        for f in fractions
    }
    space = split_tables["train"].meta["stochastic_space"]

    # ---- probes
    from sslbench.eval.knn import knn_predict
    from sslbench.progress import progress

    tasks = 2 + len(fractions) * (1 + (ft_epochs > 0)) + len(transfer)
    metrics: dict[str, Any] = {}
    with progress(total=tasks, desc=f"probe {method}", unit="task") as bar:
        bar.set_postfix_str("linear")
        train, val, test = split_tables["train"], split_tables["val"], split_tables["test"]
        if probe is None:
            probe = train_probe(train, val, st, s.linear, device)
        lin = linear_test_metrics(probe, test, n_samples=n_samples, seed=seed)
        metrics.update({f"linear/{k}": v for k, v in lin.items()})
        bar.update()

        bar.set_postfix_str("knn")
        pred = knn_predict(train.embedding, train.label, test.embedding, num_classes=num_classes, k=s.knn_k,
                           temperature=s.knn_temperature, device=device)
        metrics["knn/top1"] = accuracy(pred, test.label)
        metrics["knn/macro_acc"] = macro_accuracy(pred, test.label)
        bar.update()

        for f, rows in subsets.items():
            tag = fraction_tag(f)
            bar.set_postfix_str(f"semisup linear {tag}")
            _, semi = linear_eval(_take(train, rows), val, test, num_classes=num_classes, linear=linear, seed=seed,
                                  device=device, n_samples=n_samples)
            metrics[f"semisup/linear_top1_{tag}"] = semi["top1"]
            metrics[f"semisup/n_labels_{tag}"] = len(rows)
            bar.update()
            if ft_epochs > 0:
                metrics.update(_finetune(encoder, sources, split_tables, rows, tag, s, bar))
                bar.update()

        for name, tables in transfer.items():
            bar.set_postfix_str(f"transfer {name}")
            labels = np.concatenate([t.label for t in tables.values()])
            _, tr = linear_eval(tables["train"], tables["val"], tables["test"], num_classes=int(labels.max()) + 1,
                                linear=linear, seed=seed, device=device, n_samples=n_samples, normalize=True)
            metrics[f"transfer/{name}/top1"] = tr["top1"]
            metrics[f"transfer/{name}/macro_acc"] = tr["macro_acc"]
            bar.update()

    target = st.reports / "probe" / f"{method}.json"
    write_metrics(target, metrics)
    semi_txt = " ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in metrics.items() if "top1_" in k and "semisup" in k)
    log.info(
        "probe %s (%s, stochastic %s): linear %.3f (wd %.0e), knn %.3f, %s%s in %.1fs -> %s",
        method, dataset, space, metrics["linear/top1"], metrics["linear/weight_decay"], metrics["knn/top1"],
        semi_txt, "".join(f", transfer {n} {metrics[f'transfer/{n}/top1']:.3f}" for n in transfer),
        time.perf_counter() - start, target,
    )
    return metrics


def _take(table: Embeddings, rows: np.ndarray) -> Embeddings:
    return Embeddings(
        index=table.index[rows],
        label=table.label[rows],
        embedding=table.embedding[rows],
        mu=None if table.mu is None else table.mu[rows],
        logvar=None if table.logvar is None else table.logvar[rows],
        meta=table.meta,
    )


def _open_images(data_root: Path, dataset: str, splits: dict[str, str], tables: dict[str, Embeddings], method: str
                 ) -> dict[str, Any]:
    """Open the image splits for fine-tuning and check they are the images the embeddings were computed from."""
    from sslbench.data.splits import open_split

    sources = {}
    for role, split in splits.items():
        source = open_split(data_root, dataset, split)
        table = tables[role]
        if len(source) != len(table.label) or not np.array_equal(source.labels[table.index], table.label):
            raise UserError(
                f"{source.directory} no longer matches its embeddings "
                f"{embeddings_path(data_root, method, dataset, split)}; run `{EMBED_REBUILD.format(method=method)}`"
            )
        sources[role] = source
    return sources


def _finetune(encoder: Any, sources: dict[str, Any], split_tables: dict[str, Embeddings], rows: np.ndarray, tag: str,
              s: ProbeSettings, bar: Any) -> dict[str, float]:
    from sslbench.eval.semisup import FinetuneConfig, finetune, predict

    ft, seed, device = s.finetune, s.study.seed, s.device
    cfg = FinetuneConfig(epochs=ft.epochs, patience=ft.patience, min_steps=ft.min_steps, batch_size=ft.batch_size,
                         backbone_lr=ft.backbone_lr, head_lr=ft.head_lr, weight_decay=ft.weight_decay,
                         n_samples=s.n_samples, seed=seed, device=device)
    train, val, test = split_tables["train"], split_tables["val"], split_tables["test"]

    def on_epoch(epoch: int, top1: float) -> None:
        bar.set_postfix_str(f"finetune {tag} epoch {epoch} val {top1:.3f}")

    result = finetune(encoder, sources["train"], train.index[rows], train.label[rows], sources["val"], val.index,
                      val.label, num_classes=s.study.num_classes, cfg=cfg, on_epoch=on_epoch)
    pred = predict(result.encoder, result.head, sources["test"], test.index, batch_size=max(cfg.batch_size, 256),
                   n_samples=cfg.n_samples, seed=seed, device=device)
    return {f"semisup/finetune_top1_{tag}": accuracy(pred, test.label),
            f"semisup/finetune_epochs_{tag}": result.epochs_run, f"semisup/finetune_steps_{tag}": result.steps_run}
