"""The probe area of `evaluate@<method>`: the accuracy half of the study, on cached embeddings (REFERENCE.md
§2.1-2.3).

python -m sslbench.stages.probe method_name=simclr dataset=shapes probe.linear.epochs=100

Reads `data/embeddings/<method>/` (never re-runs the encoder on images, except for semi-supervised fine-tuning,
which by definition trains the backbone: it reads `models/<method>/` and the images of `data/datasets/`), and
writes `reports/probe/<method>.json`, accuracies as fractions in [0, 1], the same keys for every method:
- `linear/top1` (micro top-1 on test of the probe whose weight decay won on *validation*), `linear/macro_acc`
  (mean per-class accuracy), `linear/weight_decay` (selected), `linear/val_top1`, and `linear/top1_wd<wd>`, the
  test top-1 of every candidate (for comparison with the DISSL paper, which reports the max over test);
- `knn/top1`, `knn/macro_acc`: DINO's weighted kNN on L2-normalised features;
- per label fraction f (tag `1pct`, `10pct`): `semisup/linear_top1_<f>` (linear probe trained on the subset),
  `semisup/finetune_top1_<f>` (full fine-tuning, early-stopped on validation), `semisup/finetune_epochs_<f>`,
  `semisup/n_labels_<f>`;
- per transfer set t: `transfer/<t>/top1` (micro) and `transfer/<t>/macro_acc`: the linear probe trained on t's own
  train split (L2-normalised features, as the reference does for transfer), weight decay chosen on t's val split.
  Deviation from REFERENCE.md §2.3: the optimiser is the §2.1 SGD protocol rather than AdamW + multistep, so that
  the study has one linear protocol.

Bayes-H encoders (`stochastic_space == 'h'` in the embedding metadata): every head is applied to each of
`probe.n_samples` draws of q(h) = N(mu, diag(exp(logvar))) (fixed seed) and the logits are averaged; probes are
trained on mu (the representation) and their weight decay is selected on mu.

Every table is read and checked (method, dataset, split, dimension, encoder checksum) before any training, so a
bad input fails with a `UserError` naming the file and the fix, and no metrics file is written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sslbench.errors import UserError
from sslbench.eval.linear import LinearProbe, accuracy, macro_accuracy, sampled_logits, train_linear_probe
from sslbench.io import (
    EMBED_REBUILD,
    Embeddings,
    embeddings_path,
    ensure_writable,
    read_embeddings,
    sha256_file,
    write_metrics,
)
from sslbench.stages._entry import stage_main
from sslbench.stages.embed import require_method, resolve_device

log = logging.getLogger("sslbench.probe")

ROLES = ("train", "val", "test")


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
        (float(ft.backbone_lr) <= 0 or float(ft.head_lr) <= 0 or float(ft.weight_decay) < 0,
         "probe.semisup.finetune: learning rates must be > 0 and weight_decay >= 0"),
    ]
    for bad, message in problems:
        if bad:
            raise UserError(f"{message} (got probe={OmegaConf.to_container(p)})")


def load_table(data_root: Path, method: str, dataset: str, split: str, *, dim: int, sha: str) -> Embeddings:
    """Read one embedding table, checking its metadata and that it was computed by the current encoder."""
    path = embeddings_path(data_root, method, dataset, split)
    table = read_embeddings(path, method=method, dataset=dataset, split=split, dim=dim)
    if table.meta.get("encoder_sha256") != sha:
        raise UserError(
            f"embeddings {path} were computed by another encoder than models/{method}/encoder.pt "
            f"(sha256 {table.meta.get('encoder_sha256', '?')[:12]} != {sha[:12]}); run "
            f"`{EMBED_REBUILD.format(method=method)}`"
        )
    return table


def load_set(data_root: Path, method: str, dataset: str, splits: dict[str, str], *, dim: int, sha: str
             ) -> dict[str, Embeddings]:
    tables = {role: load_table(data_root, method, dataset, split, dim=dim, sha=sha) for role, split in splits.items()}
    spaces = {t.meta["stochastic_space"] for t in tables.values()}
    if len(spaces) != 1:
        raise UserError(f"embeddings of {dataset} mix stochastic spaces {sorted(spaces)}; run "
                        f"`{EMBED_REBUILD.format(method=method)}`")
    return tables


def logits_of(probe: LinearProbe, table: Embeddings, n_samples: int, seed: int, normalize: bool = False
              ) -> np.ndarray:
    """The probe's logits on a table; Bayes-H: averaged over `n_samples` draws of q(h) (see module doc)."""
    if table.meta["stochastic_space"] != "h":
        return probe.logits(l2_normalize(table.embedding) if normalize else table.embedding)
    assert table.mu is not None and table.logvar is not None
    return sampled_logits(probe, table.mu, table.logvar, n_samples=n_samples, seed=seed, normalize=normalize)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def linear_eval(
    train: Embeddings, val: Embeddings, test: Embeddings, *, num_classes: int, linear: dict[str, Any], seed: int,
    device: str, n_samples: int, normalize: bool = False,
) -> tuple[LinearProbe, dict[str, float]]:
    """Train the §2.1 probe (wd selected on `val`) and return it with its test metrics (fractions)."""
    def feats(t: Embeddings) -> np.ndarray:
        return l2_normalize(t.embedding) if normalize else t.embedding

    probe = train_linear_probe(feats(train), train.label, feats(val), val.label, num_classes=num_classes,
                               seed=seed, device=device, **linear)
    out: dict[str, float] = {}
    for wd, candidate in probe.candidates.items():
        pred = logits_of(candidate, test, n_samples, seed, normalize).argmax(1)
        out[f"top1_wd{wd:.0e}"] = accuracy(pred, test.label)
        if candidate is probe:
            out["top1"] = out[f"top1_wd{wd:.0e}"]
            out["macro_acc"] = macro_accuracy(pred, test.label)
    out["weight_decay"] = probe.weight_decay
    out["val_top1"] = probe.val_top1[probe.weight_decay]
    return probe, out


def run(cfg: DictConfig) -> dict[str, Any]:
    method = require_method(cfg)
    p = cfg.probe
    check_settings(p)
    device = resolve_device(str(p.device))
    seed, n_samples = int(cfg.study.seed), int(p.n_samples)
    linear = {
        "epochs": int(p.linear.epochs),
        "lr": float(p.linear.lr),
        "batch_size": int(p.linear.batch_size),
        "weight_decays": [float(w) for w in p.linear.weight_decays],
    }
    data_root, dataset = Path(cfg.paths.data), str(cfg.dataset.name)
    num_classes = int(cfg.dataset.num_classes)
    fractions = [float(f) for f in p.semisup.fractions]
    ft_epochs = int(p.semisup.finetune.epochs)
    start = time.perf_counter()

    # ---- load and check every input before any work
    from sslbench.models.encoder import ENCODER_FILE, load_encoder

    model_dir = Path(cfg.paths.models) / method
    ensure_writable(Path(cfg.paths.reports) / "probe" / f"{method}.json")
    encoder, _ = load_encoder(model_dir, method)
    sha = sha256_file(model_dir / ENCODER_FILE)
    dim = encoder.embedding_dim
    splits = {"train": str(cfg.dataset.train), "val": str(cfg.dataset.val), "test": str(cfg.dataset.test)}
    split_tables = load_set(data_root, method, dataset, splits, dim=dim, sha=sha)
    transfer = {str(name): load_set(data_root, method, str(name), {r: r for r in ROLES}, dim=dim, sha=sha)
                for name in cfg.dataset.transfer}
    for role, table in split_tables.items():
        if len(table.label) and (table.label.min() < 0 or table.label.max() >= num_classes):
            path = embeddings_path(data_root, method, dataset, splits[role])
            raise UserError(f"embeddings {path} have labels outside [0, {num_classes}) of dataset {dataset}; "
                            f"run `{EMBED_REBUILD.format(method=method)}`")
    sources = _open_images(data_root, dataset, splits, split_tables, method) if ft_epochs > 0 and fractions else {}
    from sslbench.eval.subsets import class_balanced_subset, fraction_tag

    class_names = list(sources["train"].classes) if sources else None
    subsets = {
        f: class_balanced_subset(split_tables["train"].label, f, seed=seed, num_classes=num_classes,
                                 class_names=class_names, min_per_class=int(p.semisup.min_per_class))
        for f in fractions
    }
    space = split_tables["train"].meta["stochastic_space"]

    # ---- probes
    from tqdm import tqdm

    from sslbench.eval.knn import knn_predict

    tasks = 2 + len(fractions) * (1 + (ft_epochs > 0)) + len(transfer)
    metrics: dict[str, Any] = {}
    with tqdm(total=tasks, desc=f"probe {method}", unit="task") as bar:
        bar.set_postfix_str("linear")
        train, val, test = split_tables["train"], split_tables["val"], split_tables["test"]
        _, lin = linear_eval(train, val, test, num_classes=num_classes, linear=linear, seed=seed, device=device,
                             n_samples=n_samples)
        metrics.update({f"linear/{k}": v for k, v in lin.items()})
        bar.update()

        bar.set_postfix_str("knn")
        pred = knn_predict(train.embedding, train.label, test.embedding, num_classes=num_classes, k=int(p.knn.k),
                           temperature=float(p.knn.temperature))
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
                metrics.update(_finetune(encoder, sources, split_tables, rows, tag, p, num_classes, seed, device, bar))
                bar.update()

        for name, tables in transfer.items():
            bar.set_postfix_str(f"transfer {name}")
            labels = np.concatenate([t.label for t in tables.values()])
            _, tr = linear_eval(tables["train"], tables["val"], tables["test"], num_classes=int(labels.max()) + 1,
                                linear=linear, seed=seed, device=device, n_samples=n_samples, normalize=True)
            metrics[f"transfer/{name}/top1"] = tr["top1"]
            metrics[f"transfer/{name}/macro_acc"] = tr["macro_acc"]
            bar.update()

    target = Path(cfg.paths.reports) / "probe" / f"{method}.json"
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
              p: DictConfig, num_classes: int, seed: int, device: str, bar: Any) -> dict[str, float]:
    from sslbench.eval.semisup import FinetuneConfig, finetune, predict

    ft = p.semisup.finetune
    cfg = FinetuneConfig(epochs=int(ft.epochs), patience=int(ft.patience), batch_size=int(ft.batch_size),
                         backbone_lr=float(ft.backbone_lr), head_lr=float(ft.head_lr),
                         weight_decay=float(ft.weight_decay), n_samples=int(p.n_samples), seed=seed, device=device)
    train, val, test = split_tables["train"], split_tables["val"], split_tables["test"]

    def on_epoch(epoch: int, top1: float) -> None:
        bar.set_postfix_str(f"finetune {tag} epoch {epoch} val {top1:.3f}")

    result = finetune(encoder, sources["train"], train.index[rows], train.label[rows], sources["val"], val.index,
                      val.label, num_classes=num_classes, cfg=cfg, on_epoch=on_epoch)
    pred = predict(result.encoder, result.head, sources["test"], test.index, batch_size=max(cfg.batch_size, 256),
                   n_samples=cfg.n_samples, seed=seed, device=device)
    return {f"semisup/finetune_top1_{tag}": accuracy(pred, test.label),
            f"semisup/finetune_epochs_{tag}": result.epochs_run}


main = stage_main(run, "probe")

if __name__ == "__main__":
    main()
