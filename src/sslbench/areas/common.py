"""What the evaluation areas share: the method and study they evaluate, the linear-probe protocol, the checked
reading of embedding tables, and the linear probe of the main train split."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslbench.errors import UserError
from sslbench.eval.linear import LinearProbe, train_linear_probe
from sslbench.io import EMBED_REBUILD, Embeddings, embeddings_path, read_embeddings, sha256_file
from sslbench.models.encoder import ENCODER_FILE
from sslbench.paths import require_method


@dataclass(frozen=True)
class Study:
    """The method evaluated, where its inputs and outputs live, and the main dataset with its splits."""

    method: str
    data: Path
    models: Path
    reports: Path
    dataset: str
    train: str
    val: str
    test: str
    num_classes: int
    seed: int

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Study:
        """`method`, `paths`, `dataset` and `study.seed` of a stage config; `UserError` for a bad method name."""
        return cls(
            method=require_method(cfg), data=Path(cfg.paths.data), models=Path(cfg.paths.models),
            reports=Path(cfg.paths.reports), dataset=str(cfg.dataset.name), train=str(cfg.dataset.train),
            val=str(cfg.dataset.val), test=str(cfg.dataset.test), num_classes=int(cfg.dataset.num_classes),
            seed=int(cfg.study.seed),
        )

    @property
    def splits(self) -> dict[str, str]:
        """The main dataset's split names by role (train, val, test)."""
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class LinearSettings:
    """`probe.linear`: the keyword arguments of `sslbench.eval.linear.train_linear_probe` (SGD, momentum 0.9,
    cosine schedule, one probe per weight decay, the one with the best validation top-1 kept)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decays: tuple[float, ...]

    @classmethod
    def from_config(cls, lin: DictConfig) -> LinearSettings:
        return cls(int(lin.epochs), float(lin.lr), int(lin.batch_size), tuple(float(w) for w in lin.weight_decays))

    def kwargs(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "weight_decays": list(self.weight_decays)}


def encoder_sha(study: Study, method: str | None = None) -> str:
    """The sha256 of `models/<method>/encoder.pt` (the study's method by default), which every embedding table of
    the method must carry; `UserError` naming the pretrain stage when it is missing."""
    method = method or study.method
    path = study.models / method / ENCODER_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; run `dvc repro pretrain@{method}` to train the model")
    return sha256_file(path)


def load_table(data_root: Path, method: str, dataset: str, split: str, *, dim: int | None, sha: str) -> Embeddings:
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


def check_labels(study: Study, split: str, table: Embeddings) -> None:
    """`UserError` when a table of the main dataset has labels outside [0, num_classes)."""
    if len(table.label) and (table.label.min() < 0 or table.label.max() >= study.num_classes):
        path = embeddings_path(study.data, study.method, study.dataset, split)
        raise UserError(f"embeddings {path} have labels outside [0, {study.num_classes}) of dataset {study.dataset}; "
                        f"run `{EMBED_REBUILD.format(method=study.method)}`")


def train_probe(train: Embeddings, val: Embeddings, study: Study, linear: LinearSettings, device: str = "cpu"
                ) -> LinearProbe:
    """The linear probe of the main split: trained on the train embeddings (Bayes-H: on mu), weight decay chosen on
    the val embeddings, seeded with the study seed."""
    return train_linear_probe(train.embedding, train.label, val.embedding, val.label, num_classes=study.num_classes,
                              seed=study.seed, device=device, **linear.kwargs())


def main_probes(study: Study, linear: LinearSettings, devices: Iterable[str]) -> dict[str, LinearProbe]:
    """`train_probe` of the study's method, once per device of `devices` (the probe area trains on `probe.device`,
    the robustness and ood areas on the CPU), from its checked train and val embeddings."""
    sha = encoder_sha(study)
    train = load_table(study.data, study.method, study.dataset, study.train, dim=None, sha=sha)
    val = load_table(study.data, study.method, study.dataset, study.val, dim=train.dim, sha=sha)
    check_labels(study, study.train, train)
    check_labels(study, study.val, val)
    return {device: train_probe(train, val, study, linear, device) for device in dict.fromkeys(devices)}
