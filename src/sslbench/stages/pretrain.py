"""`pretrain@<method>`: one self-supervised run with Lightning (DESIGN.md §2-3).

    python -m sslbench.stages.pretrain method=simclr dataset=shapes pretrain.epochs=10

Reads `data/datasets/<dataset>/<train split>/`; writes `models/<method>/encoder.pt` + `config.yaml` (resolved config,
via `save_encoder`), `reports/pretrain/<method>.json` (same keys for every method) and the per-step history
`reports/pretrain/plots/<method>/train.csv`. Nothing else lands in the repository (no Lightning or Hydra logs).

What the run uses is merged explicitly here, later wins:
- encoder spec = `backbone` group (name, stem, out_dim) + dataset (image_size, mean, std) + `method.encoder`;
- optimizer    = `optim` group + `method.optim`, then `lr *= pretrain.lr_scale`;
- views        = `method.views` + the non-null knobs of `pretrain.views` (study-level `min_scale`, `blur_prob`...).

Checkpoints and resumption: `models/<method>/last.ckpt` is written (atomically) at the end of every epoch, every
`pretrain.ckpt_every_n_steps` steps and when `pretrain.max_steps` stops the run early. On start, an existing
`last.ckpt` written under the same config is resumed; one written under another config is refused, naming the
differing keys (delete it to start over). Resumption is exact on CPU: the data order of an epoch is a function of
(seed, epoch), the augmentation randomness of a step of (seed, step, rank) (see `SSLMethod.view_seed`), and the
optimizer, schedule, EMA targets and history are in the checkpoint. On success `last.ckpt` is deleted unless
`pretrain.keep_last_ckpt` (it is not a DVC output: DVC must not cache or restore it).

Devices and scale-out (`pretrain.accelerator/devices/num_nodes/strategy/precision/sync_batchnorm/channels_last/
compile/num_workers`): checked against the machine before any work by `sslbench.accel.resolve_settings` (a bad value
stops with the key and the fix), then handed to the Lightning Trainer. Several processes run Lightning's DDP (one
per device; on CPU over gloo); each reads its share of every global batch, the losses gather across ranks
(`sslbench.methods.dist`) and BatchNorm is synchronised (torch's SyncBatchNorm on GPUs, `CPUSyncBatchNorm` on CPU),
so two CPU processes reproduce one process up to float summation order (tests/stages/test_pretrain_ddp.py). Batches
are read by `num_workers` DataLoader processes (pinned memory on GPU); the views are drawn batched on the device.

Metrics (`pretrain/...`): `ssl_loss` and `online_top1` (means over the last epoch; the online probe trains on
detached features, apart from the SSL loss), `images_per_s` (training throughput, all processes), collapse
indicators on a fixed held batch (first `held_batch` train images, no augmentation, encoder in eval mode):
`feature_std` (mean per-dimension std of L2-normalised features; 0 = collapsed, ~1/sqrt(D) for spread features) and
`effective_rank` (exp of the entropy of the normalised singular values, Roy & Vetterli 2007), `steps`, `wall_s`.
`random_init` is not optimised: its seeded initial encoder is saved and its training metrics are null.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins import LayerSync
from omegaconf import DictConfig, OmegaConf

from sslbench.accel import (
    Hardware,
    RunSettings,
    convert_cpu_sync_batchnorm,
    prepare_module,
    release_module,
    resolve_settings,
    revert_cpu_sync_batchnorm,
)
from sslbench.data.splits import SplitSource, open_split
from sslbench.errors import UserError
from sslbench.io import write_metrics, write_text
from sslbench.methods.base import NonFiniteLossError, OptimConfig, SSLMethod
from sslbench.models.encoder import EncoderSpec, save_encoder
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.pretrain")
# Lightning's start-up lines (GPU/TPU availability, tips, "Loading train_dataloader ...") would repeat in every
# stage of `dvc repro`; its warnings and errors still show, and our own log gives the device and a summary line
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)

CKPT = "last.ckpt"
# keys that do not change the trained weights: a checkpoint written under other values of these is resumed
NOT_RESULT_KEYS = ("paths", "pretrain.max_steps", "pretrain.ckpt_every_n_steps", "pretrain.keep_last_ckpt",
                   "pretrain.progress_bar", "pretrain.num_workers", "pretrain.launcher")


# ----------------------------------------------------------------------------------------------- config


def encoder_spec(cfg: DictConfig) -> EncoderSpec:
    """backbone group + dataset (image_size, mean, std) + method.encoder overrides."""
    base = {"backbone": cfg.backbone.name, "stem": cfg.backbone.stem, "out_dim": cfg.backbone.out_dim,
            "width": int(cfg.backbone.width),
            "image_size": int(cfg.dataset.image_size), "mean": list(cfg.dataset.mean), "std": list(cfg.dataset.std)}
    overrides = OmegaConf.to_container(cfg.method.encoder, resolve=True) or {}
    assert isinstance(overrides, dict)
    return EncoderSpec.from_dict({**base, **{str(k): v for k, v in overrides.items()}})


def optim_config(cfg: DictConfig) -> OptimConfig:
    """optim group + method.optim overrides; lr scaled by pretrain.lr_scale."""
    merged = OmegaConf.to_container(OmegaConf.merge(cfg.optim, cfg.method.optim), resolve=True)
    assert isinstance(merged, dict)
    unknown = set(merged) - set(OptimConfig.__dataclass_fields__)
    if unknown:
        raise UserError(f"unknown optim keys {sorted(unknown)} (optim group or method.optim); "
                        f"valid: {sorted(OptimConfig.__dataclass_fields__)}")
    merged["lr"] = float(merged["lr"]) * float(cfg.pretrain.lr_scale)
    return OptimConfig(**merged)  # type: ignore[arg-type]


def views_config(cfg: DictConfig) -> DictConfig:
    """method.views + the non-null study-level knobs of pretrain.views."""
    knobs = OmegaConf.to_container(cfg.pretrain.views, resolve=True)
    views = OmegaConf.to_container(cfg.method.views, resolve=True)
    assert isinstance(knobs, dict) and isinstance(views, dict)
    # a new config (not the composed one, which stays in struct mode): the knobs may be new keys for this builder
    return OmegaConf.create({**views, **{k: v for k, v in knobs.items() if v is not None}})


def build_method(cfg: DictConfig) -> SSLMethod:
    """The method's LightningModule as this stage builds it (the benchmarks build it here too). Draws the initial
    weights from torch's generator: seed it first."""
    views = instantiate(views_config(cfg), _convert_="all")
    # objects are passed to the partial, not to instantiate (which would turn the dataclasses into dicts)
    build = instantiate(cfg.method.module, _partial_=True, _convert_="all")
    module: SSLMethod = build(encoder=encoder_spec(cfg), views=views, num_classes=int(cfg.dataset.num_classes),
                              optim=optim_config(cfg), batch_size=int(cfg.pretrain.batch_size))
    return module


def check_config(cfg: DictConfig) -> None:
    p = cfg.pretrain
    for key, ok in (("epochs", p.epochs >= 1), ("batch_size", p.batch_size >= 2), ("lr_scale", p.lr_scale > 0),
                    ("held_batch", p.held_batch >= 2), ("ckpt_every_n_steps", p.ckpt_every_n_steps >= 0),
                    ("max_steps", p.max_steps == -1 or p.max_steps >= 1), ("num_workers", p.num_workers >= 0)):
        if not ok:
            raise UserError(f"pretrain.{key}={p[key]} is invalid (epochs >= 1, batch_size >= 2, lr_scale > 0, "
                            "held_batch >= 2, ckpt_every_n_steps >= 0, max_steps = -1 or >= 1, num_workers >= 0)")
    for key in ("name", "module", "views", "encoder", "optim"):
        if key not in cfg.method:
            name = cfg.method.get("name", "?")
            raise UserError(f"method config {name!r} lacks `{key}:` (see conf/method/simclr.yaml for the schema)")


def run_settings(cfg: DictConfig, hardware: Hardware | None = None) -> RunSettings:
    """`pretrain.*` device, process and precision settings checked against this machine (`sslbench.accel`)."""
    p = cfg.pretrain
    return resolve_settings(accelerator=p.accelerator, devices=p.devices, num_nodes=p.num_nodes,
                            strategy=p.strategy, precision=p.precision, sync_batchnorm=bool(p.sync_batchnorm),
                            channels_last=bool(p.channels_last), compile=bool(p.compile),
                            batch_size=int(p.batch_size), hardware=hardware or Hardware.detect())


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus the keys that do not change the weights (compared on resume)."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_RESULT_KEYS)}


# ----------------------------------------------------------------------------------------------- data


class EpochBatchSampler:
    """Index arrays of one rank's shuffled, drop-last batches of the current epoch (a DataLoader `sampler`).

    The permutation of an epoch is drawn from numpy's generator seeded with (seed, epoch); global batch k is rows
    [k * B, (k + 1) * B) of it and rank r takes its r-th share of b = B / world rows. Lightning calls `set_epoch` at
    the start of every epoch. `skip` batches are skipped in the first epoch iterated (mid-epoch resumption).
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1, epoch: int = 0,
                 skip: int = 0) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.local = rank, global_batch // world
        self.epoch, self.skip = epoch, skip

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self) -> Iterator[np.ndarray]:
        skip, self.skip = self.skip, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for k in range(skip, len(self)):
            start = k * self.global_batch + self.rank * self.local
            yield order[start : start + self.local]


class BatchReader(torch.utils.data.Dataset):
    """`reader[indices] -> (uint8 images (b, H, W, 3), int64 labels (b,))`: one whole batch per item, so that
    DataLoader workers read (and, for index-based sets, decode) whole batches while the device trains."""

    def __init__(self, source: SplitSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.source.images(indices)), torch.from_numpy(self.source.labels[indices])


def train_loader(source: SplitSource, sampler: EpochBatchSampler, num_workers: int, pin_memory: bool,
                 seed: int) -> torch.utils.data.DataLoader:
    """Batches of `sampler` read by `num_workers` processes (0: the main process), pinned for a GPU. The loader
    draws its workers' seed from its own generator, so torch's global generator is untouched."""
    return torch.utils.data.DataLoader(
        BatchReader(source), sampler=sampler, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed), prefetch_factor=2 if num_workers else None)


class _TrainData(L.LightningDataModule):
    def __init__(self, source: SplitSource, global_batch: int, seed: int, epoch: int, skip: int, num_workers: int,
                 pin_memory: bool) -> None:
        super().__init__()
        self.source, self.global_batch, self.seed, self.epoch, self.skip = source, global_batch, seed, epoch, skip
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        t = self.trainer
        assert t is not None
        sampler = EpochBatchSampler(len(self.source), self.global_batch, self.seed, t.global_rank, t.world_size,
                                    self.epoch, self.skip)
        return train_loader(self.source, sampler, self.num_workers, self.pin_memory, self.seed)


# ----------------------------------------------------------------------------------------------- callbacks


class _Checkpointer(L.Callback):
    """Atomic `last.ckpt` at epoch ends, every N steps and when `max_steps` stops the run; stores the config."""

    def __init__(self, path: Path, every_n_steps: int, max_steps: int, config: dict[str, Any]) -> None:
        self.path, self.every_n_steps, self.max_steps, self.config = path, every_n_steps, max_steps, config

    def _save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state: resumption needs the optimizer
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if self.max_steps > 0 and step >= self.max_steps and step < trainer.estimated_stepping_batches:
            self._save(trainer)
            trainer.should_stop = True
        elif self.every_n_steps and step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.should_stop:
            self._save(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["sslbench_config"] = self.config


class _CPUSyncBatchNorm(LayerSync):
    """BatchNorm over the global batch for CPU processes, where torch's SyncBatchNorm (what
    `Trainer(sync_batchnorm=True)` applies) fails: Lightning applies it before the fit and reverts it after."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return convert_cpu_sync_batchnorm(model)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return revert_cpu_sync_batchnorm(model)


class _History(L.Callback):
    """Per-step history (step, epoch, ssl_loss, online_top1, lr) kept in the checkpoint, and throughput. With
    several processes the loss and top-1 are averaged over them (every rank calls the hook: a collective)."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []
        self.images = 0
        self.seconds = 0.0
        self._t0 = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [list(r) for r in state_dict["rows"]]

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.images += int(batch[1].shape[0]) * trainer.world_size
        assert isinstance(pl_module, SSLMethod)
        m = pl_module.step_metrics
        values = torch.stack([m["ssl_loss"].float(), m["online_top1"].float()])
        if trainer.world_size > 1:  # the mean over ranks: the whole batch's loss and top-1 (equal shares)
            values = trainer.strategy.reduce(values, reduce_op="mean")
        loss, top1 = values.tolist()
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append([trainer.global_step, trainer.current_epoch, loss, top1, float(lr)])

    def last_epoch_mean(self, column: int) -> float:
        if not self.rows:
            return float("nan")
        last = self.rows[-1][1]
        return float(np.mean([r[column] for r in self.rows if r[1] == last]))

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["step", "epoch", "ssl_loss", "online_top1", "lr"])
        writer.writerows([[int(r[0]), int(r[1]), f"{r[2]:.6g}", f"{r[3]:.6g}", f"{r[4]:.6g}"] for r in self.rows])
        return buf.getvalue()


# ----------------------------------------------------------------------------------------------- metrics


@torch.no_grad()
def collapse_indicators(features: torch.Tensor) -> dict[str, float]:
    """`feature_std`: mean over dims of the batch std of L2-normalised features; `effective_rank`: exp of the
    entropy of the normalised singular values of the centred features (Roy & Vetterli 2007)."""
    z = torch.nn.functional.normalize(features.double(), dim=1)
    s = torch.linalg.svdvals(features.double() - features.double().mean(0))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-30).log()).sum()
    return {"feature_std": float(z.std(0).mean()), "effective_rank": float(entropy.exp())}


def _resume_state(path: Path, config: dict[str, Any], method: str) -> dict[str, Any] | None:
    """The step to resume at from `path` (None when absent), after checking it was written under `config`.

    The checkpoint is read with `weights_only=True`: Lightning's checkpoint of this stage holds only tensors and
    plain containers, so nothing is unpickled (a file planted or swapped under models/ cannot run code here).
    """
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say so rather than crash in Lightning
        # torch's message suggests weights_only=False; we never unpickle, so we show only the error type
        raise UserError(f"{path} is unreadable as a plain checkpoint ({type(err).__name__}): it is truncated or "
                        f"not written by this stage; delete it to start pretrain@{method} over") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("global_step"), int):
        raise UserError(f"{path} is not a checkpoint of this stage; delete it to start pretrain@{method} over")
    saved = ckpt.get("sslbench_config", {})
    differ = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
    if differ:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {config.get(k)!r})" for k in differ[:8])
        raise UserError(f"{path} was written under another config; differing keys: {shown}"
                        f"{' ...' if len(differ) > 8 else ''}. Delete it to start `pretrain@{method}` over, "
                        "or restore those values to resume.")
    return {"global_step": int(ckpt["global_step"])}


# ----------------------------------------------------------------------------------------------- run


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    check_config(cfg)
    settings = run_settings(cfg)  # device, processes, precision: checked before any work
    name = str(cfg.method.name)
    source = open_split(cfg.paths.data, cfg.dataset.name, cfg.dataset.train, rebuild="dvc repro prepare")
    batch = int(cfg.pretrain.batch_size)
    steps_per_epoch = len(source) // batch
    if steps_per_epoch < 1:
        raise UserError(f"pretrain.batch_size={batch} exceeds the {len(source)} images of {source.name}")
    model_dir = Path(cfg.paths.models) / name
    ckpt_path = model_dir / CKPT
    config = result_config(cfg)
    resume = _resume_state(ckpt_path, config, name)

    L.seed_everything(int(cfg.study.seed), workers=True, verbose=False)
    module = build_method(cfg)
    module.view_seed = int(cfg.study.seed)
    history = _History()
    fit_s = 0.0
    if module.trainable:
        p = cfg.pretrain
        prepare_module(module, channels_last=settings.channels_last,
                       compile_backend="inductor" if settings.compile else None)
        trainer = L.Trainer(
            max_epochs=int(p.epochs), **settings.trainer_kwargs(),
            plugins=[_CPUSyncBatchNorm()] if settings.sync_batchnorm == "cpu" else None,
            logger=False, enable_checkpointing=False, enable_model_summary=False,
            enable_progress_bar=bool(p.progress_bar), num_sanity_val_steps=0, use_distributed_sampler=False,
            default_root_dir=str(model_dir),
            # history first: the checkpointer's save in the same hook must include the step's row
            callbacks=[history, _Checkpointer(ckpt_path, int(p.ckpt_every_n_steps), int(p.max_steps), config)],
        )
        done = resume["global_step"] if resume else 0
        data = _TrainData(source, batch, int(cfg.study.seed), done // steps_per_epoch, done % steps_per_epoch,
                          num_workers=int(p.num_workers), pin_memory=settings.accelerator == "gpu")
        if resume:
            log.info("resuming %s from %s at step %d", name, ckpt_path, done)
        model_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # our loader resumes mid-epoch by itself (EpochBatchSampler.skip), which Lightning cannot see
            warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")  # intended
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # inside Lightning
            try:
                # weights_only: the resumed checkpoint holds tensors and plain containers only (no unpickling)
                trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_path) if resume else None, weights_only=True)
            except NonFiniteLossError as err:  # user-fixable (learning rate, temperature, precision): no traceback
                raise UserError(f"pretrain@{name}: {err} The last checkpoint, if any, is {ckpt_path}.") from err
        fit_s = time.perf_counter() - t0
        total = int(p.epochs) * steps_per_epoch
        if trainer.global_step < total:
            log.info("pretrain@%s stopped at step %d of %d (pretrain.max_steps); %s kept: rerun to resume",
                     name, trainer.global_step, total, ckpt_path)
            return {"stopped_at": trainer.global_step}
        if not trainer.is_global_zero:
            return {}
        release_module(module)  # plain modules again: the held batch runs on CPU, encoder.pt in NCHW
    metrics = _finish(cfg, module, source, history, model_dir)
    metrics["pretrain/wall_s"] = round(time.perf_counter() - start, 2)
    write_metrics(Path(cfg.paths.reports) / "pretrain" / f"{name}.json", metrics)
    if ckpt_path.exists() and not cfg.pretrain.keep_last_ckpt:
        ckpt_path.unlink()
    log.info("pretrain@%s: %d steps in %.1fs (%s img/s), ssl_loss %s, online_top1 %s, feature_std %.3f, "
             "effective_rank %.1f -> %s", name, metrics["pretrain/steps"], fit_s, metrics["pretrain/images_per_s"],
             metrics["pretrain/ssl_loss"], metrics["pretrain/online_top1"], metrics["pretrain/feature_std"],
             metrics["pretrain/effective_rank"], model_dir)
    return metrics


def _finish(cfg: DictConfig, module: SSLMethod, source: SplitSource, history: _History,
            model_dir: Path) -> dict[str, Any]:
    """Collapse indicators on the held batch, then encoder.pt + config.yaml and the history CSV."""
    encoder = module.encoder.cpu().eval()
    n = min(int(cfg.pretrain.held_batch), len(source))
    images = torch.from_numpy(np.array(source.images(slice(0, n)))).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad():
        feats = torch.cat([encoder(images[i : i + 256]).embedding for i in range(0, n, 256)])
    indicators = collapse_indicators(feats)
    save_encoder(encoder, model_dir, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    write_text(Path(cfg.paths.reports) / "pretrain" / "plots" / str(cfg.method.name) / "train.csv", history.csv())
    trained = bool(history.rows)

    def rounded(x: float, digits: int = 4) -> float | None:
        return round(x, digits) if trained and np.isfinite(x) else None

    return {
        "pretrain/ssl_loss": rounded(history.last_epoch_mean(2)),
        "pretrain/online_top1": rounded(history.last_epoch_mean(3)),
        "pretrain/images_per_s": rounded(history.images / history.seconds, 1) if history.seconds else None,
        "pretrain/feature_std": round(indicators["feature_std"], 5),
        "pretrain/effective_rank": round(indicators["effective_rank"], 2),
        "pretrain/steps": int(history.rows[-1][0]) if trained else 0,
    }


main = stage_main(run, "pretrain", dict_prefix="method")  # params.yaml `methods.<name>` arrive as --key value

if __name__ == "__main__":
    main()
