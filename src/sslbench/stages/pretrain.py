"""`pretrain@<method>`: one self-supervised run with Lightning.

    python -m sslbench.stages.pretrain method=simclr dataset=shapes pretrain.epochs=10

Reads `data/datasets/<dataset>/<train split>/`; writes `models/<method>/encoder.pt` + `config.yaml` (resolved config,
via `save_encoder`), `reports/pretrain/<method>.json` (same keys for every method) and the training log
`reports/pretrain/live/<method>/` through DVCLive's Lightning logger (`sslbench.training.live`): per-step
`plots/metrics/{ssl_loss,online_top1,lr,epoch,images_per_s}.tsv`, the held batch's `feature_std` and
`effective_rank` before the first step and at every epoch end, and `metrics.json` (the latest values, rewritten
while the run goes on: `dvc exp show` shows the progress). `random_init` logs its indicators at step 0. Nothing
else lands in the repository (no Lightning, Hydra or DVCLive extras). Every output location is checked writable
before any work. Progress: Lightning's bar on a terminal, else a log line per tenth of the steps
(`pretrain.progress_bar=false`: neither).

The method's module is built from the config by `sslbench.training.config.build_method` (backbone group + dataset +
`method.encoder`; `optim` group + `method.optim`, lr times `pretrain.lr_scale`; `method.views` + the non-null
`pretrain.views` knobs) and trained by `sslbench.training.fit.fit`.

Checkpoints and resumption: `models/<method>/last.ckpt` is written (atomically) at the end of every epoch, every
`pretrain.ckpt_every_n_steps` steps and when `pretrain.max_steps` stops the run early. On start, an existing
`last.ckpt` written under the same config (`result_config`) is resumed; one written under another config is refused,
naming the differing keys (delete it to start over). Resumption is exact on CPU (see `sslbench.training.fit`). On
success `last.ckpt` is deleted unless `pretrain.keep_last_ckpt` (it is not a DVC output: DVC must not cache or
restore it).

Devices and scale-out (`pretrain.accelerator/devices/num_nodes/strategy/precision/sync_batchnorm/channels_last/
compile/num_workers`): checked against the machine before any work by `sslbench.accel.resolve_settings` (a bad value
stops with the key and the fix), then handed to the Lightning Trainer; two CPU processes reproduce one process up to
float summation order (tests/stages/test_pretrain_ddp.py).

Metrics (`pretrain/...`, `sslbench.training.metrics`): `ssl_loss` and `online_top1` (means over the last epoch; the
online probe trains on detached features, apart from the SSL loss), `images_per_s` (training throughput, all
processes), collapse indicators on a fixed held batch (first `held_batch` train images, no augmentation, encoder in
eval mode): `feature_std` (mean per-dimension std of L2-normalised features; 0 = collapsed, ~1/sqrt(D) for spread
features) and `effective_rank` (exp of the entropy of the normalised singular values, Roy & Vetterli 2007), `steps`,
`wall_s`. `random_init` is not optimised: its seeded initial encoder is saved and its training metrics are null.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from sslbench.accel import Hardware, RunSettings, release_module, resolve_settings
from sslbench.data.splits import open_split
from sslbench.errors import UserError
from sslbench.io import ensure_writable, write_metrics
from sslbench.models.encoder import save_encoder
from sslbench.stages._entry import stage_main
from sslbench.training.callbacks import History
from sslbench.training.checkpoint import CKPT, resume_state
from sslbench.training.config import build_method
from sslbench.training.fit import fit
from sslbench.training.live import StepLogger, live_dir, process_rank
from sslbench.training.metrics import held_batch_indicators, pretrain_metrics

log = logging.getLogger("sslbench.pretrain")

# keys that do not change the trained weights: a checkpoint written under other values of these is resumed
NOT_RESULT_KEYS = ("paths", "pretrain.max_steps", "pretrain.ckpt_every_n_steps", "pretrain.keep_last_ckpt",
                   "pretrain.progress_bar", "pretrain.num_workers", "pretrain.launcher")


def check_config(cfg: DictConfig) -> None:
    p = cfg.pretrain
    for key, ok in (("epochs", p.epochs >= 1), ("batch_size", p.batch_size >= 2), ("lr_scale", p.lr_scale > 0),
                    ("held_batch", p.held_batch >= 2), ("ckpt_every_n_steps", p.ckpt_every_n_steps >= 0),
                    ("max_steps", p.max_steps == -1 or p.max_steps >= 1), ("num_workers", p.num_workers >= 0)):
        if not ok:
            raise UserError(f"pretrain.{key}={p[key]} is invalid (epochs >= 1, batch_size >= 2, lr_scale > 0, "
                            "held_batch >= 2, ckpt_every_n_steps >= 0, max_steps = -1 or >= 1, num_workers >= 0)")
    imported = "weights" in cfg.method  # a published encoder (conf/method/published.yaml)
    for key in ("name", "weights", "encoder") if imported else ("name", "module", "views", "encoder", "optim"):
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


def _imported(cfg: DictConfig, source: Any, model_dir: Path, metrics_path: Path, live: Any,
              start: float) -> dict[str, Any]:
    """`pretrain@<name>` of a published encoder: its weights file checked and mapped onto the backbone
    (`sslbench.checkpoints.published`), then written like a trained encoder, with the provenance in config.yaml."""
    from sslbench.checkpoints.published import import_published

    name = str(cfg.method.name)
    weights, spec = ({str(k): v for k, v in cfg.method[key].items()} for key in ("weights", "encoder"))
    encoder, provenance = import_published(name, weights, spec)
    if process_rank() != 0:
        return {}
    indicators = held_batch_indicators(encoder, source, int(cfg.pretrain.held_batch))
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    save_encoder(encoder, model_dir, {**config, "imported": provenance})
    logger = StepLogger(live)
    logger.log_step(indicators, 0)
    logger.finalize("success")
    metrics = pretrain_metrics(History(), indicators)
    metrics["pretrain/wall_s"] = round(time.perf_counter() - start, 2)
    write_metrics(metrics_path, metrics)
    log.info("pretrain@%s: imported %s (format %s, sha256 %s) -> %s", name, provenance["path"],
             provenance["format"], provenance["sha256"][:12], model_dir)
    return metrics


def run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    check_config(cfg)
    settings = run_settings(cfg)  # device, processes, precision: checked before any work
    name = str(cfg.method.name)
    model_dir = Path(cfg.paths.models) / name
    metrics_path = Path(cfg.paths.reports) / "pretrain" / f"{name}.json"
    live = live_dir(cfg.paths.reports, name)
    if process_rank() == 0:  # the process that writes them (checking from every rank would race on folders)
        ensure_writable(model_dir / "encoder.pt", model_dir / "config.yaml", metrics_path, live)
    source = open_split(cfg.paths.data, cfg.dataset.name, cfg.dataset.train, rebuild="dvc repro prepare")
    if "weights" in cfg.method:  # a published encoder (`method: published`): imported from its file, not trained
        return _imported(cfg, source, model_dir, metrics_path, live, start)
    batch = int(cfg.pretrain.batch_size)
    steps_per_epoch = len(source) // batch
    if steps_per_epoch < 1:
        raise UserError(f"pretrain.batch_size={batch} exceeds the {len(source)} images of {source.name}")
    ckpt_path = model_dir / CKPT
    config = result_config(cfg)
    resume = resume_state(ckpt_path, config, name)

    L.seed_everything(int(cfg.study.seed), workers=True, verbose=False)
    module = build_method(cfg)
    module.view_seed = int(cfg.study.seed)
    history, fit_s = History(), 0.0
    if module.trainable:
        p = cfg.pretrain
        done = fit(module, source, settings, name=name, epochs=int(p.epochs), batch_size=batch,
                   seed=int(cfg.study.seed), model_dir=model_dir, ckpt_path=ckpt_path,
                   ckpt_every_n_steps=int(p.ckpt_every_n_steps), max_steps=int(p.max_steps), config=config,
                   resume_step=resume["global_step"] if resume else None, num_workers=int(p.num_workers),
                   progress_bar=bool(p.progress_bar), live=live, held_batch=int(p.held_batch))
        history, fit_s = done.history, done.seconds
        total = int(p.epochs) * steps_per_epoch
        if done.global_step < total:
            log.info("pretrain@%s stopped at step %d of %d (pretrain.max_steps); %s kept: rerun to resume",
                     name, done.global_step, total, ckpt_path)
            return {"stopped_at": done.global_step}
        if not done.is_global_zero:
            return {}
        release_module(module)  # plain modules again: the held batch runs on CPU, encoder.pt in NCHW
    encoder = module.encoder.cpu().eval()
    indicators = held_batch_indicators(encoder, source, int(cfg.pretrain.held_batch))
    save_encoder(encoder, model_dir, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if not module.trainable:  # no run, no log yet: the untrained encoder's indicators, at step 0
        logger = StepLogger(live)
        logger.log_step(indicators, 0)
        logger.finalize("success")
    metrics = pretrain_metrics(history, indicators)
    metrics["pretrain/wall_s"] = round(time.perf_counter() - start, 2)
    write_metrics(metrics_path, metrics)
    if ckpt_path.exists() and not cfg.pretrain.keep_last_ckpt:
        ckpt_path.unlink()
    log.info("pretrain@%s: %d steps in %.1fs (%s img/s), ssl_loss %s, online_top1 %s, feature_std %.3f, "
             "effective_rank %.1f -> %s", name, metrics["pretrain/steps"], fit_s, metrics["pretrain/images_per_s"],
             metrics["pretrain/ssl_loss"], metrics["pretrain/online_top1"], metrics["pretrain/feature_std"],
             metrics["pretrain/effective_rank"], model_dir)
    return metrics


main = stage_main(run, "pretrain")

if __name__ == "__main__":
    main()
