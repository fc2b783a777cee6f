"""One Lightning training run of an `SSLMethod`, resumable from `last.ckpt`.

Devices, processes and precision come checked from `sslbench.accel.resolve_settings`. Several processes run
Lightning's DDP (one per device; on CPU over gloo); each reads its share of every global batch
(`sslbench.training.data`), the losses gather across ranks (`sslbench.methods.dist`) and BatchNorm is synchronised
(torch's SyncBatchNorm on GPUs, `sslbench.accel.CPUSyncBatchNorm` on CPU through `CPUSyncBatchNormPlugin`).

Resumption is exact on CPU: the data order of an epoch is a function of (seed, epoch), the augmentation randomness
of a step of (seed, step, rank) (see `SSLMethod.view_seed`), and the optimizer, schedule, EMA targets and history
are in the checkpoint.

The run's log goes through DVCLive's Lightning logger (`sslbench.training.live.StepLogger`, fed by the `History`
callback) into `live` (`reports/pretrain/live/<method>/`). Progress: Lightning's bar when both standard streams are
terminals, else a line per tenth of the steps (`ProgressLines`); `progress_bar=False`: neither.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins import LayerSync

from sslbench.accel import RunSettings, convert_cpu_sync_batchnorm, prepare_module, revert_cpu_sync_batchnorm
from sslbench.data.splits import SplitSource
from sslbench.errors import UserError
from sslbench.methods.base import NonFiniteLossError, SSLMethod
from sslbench.progress import is_terminal
from sslbench.training.callbacks import Checkpointer, History, ProgressLines
from sslbench.training.data import TrainData
from sslbench.training.live import StepLogger, process_rank

log = logging.getLogger("sslbench.pretrain")
# Lightning's start-up lines (GPU/TPU availability, tips, "Loading train_dataloader ...") would repeat in every
# stage of `dvc repro`; its warnings and errors still show, and our own log gives the device and a summary line
for _name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class CPUSyncBatchNormPlugin(LayerSync):
    """BatchNorm over the global batch for CPU processes, where torch's SyncBatchNorm (what
    `Trainer(sync_batchnorm=True)` applies) fails: Lightning applies it before the fit and reverts it after."""

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        return convert_cpu_sync_batchnorm(model)

    def revert(self, model: torch.nn.Module) -> torch.nn.Module:
        return revert_cpu_sync_batchnorm(model)


@dataclass(frozen=True)
class FitResult:
    """What a run leaves: its history, the seconds spent in `Trainer.fit`, the last step and whether this process
    is the one that writes outputs."""

    history: History
    seconds: float
    global_step: int
    is_global_zero: bool


def fit(
    module: SSLMethod,
    source: SplitSource,
    settings: RunSettings,
    *,
    name: str,
    epochs: int,
    batch_size: int,
    seed: int,
    model_dir: Path,
    ckpt_path: Path,
    ckpt_every_n_steps: int,
    max_steps: int,
    config: dict[str, Any],
    resume_step: int | None,
    num_workers: int,
    progress_bar: bool,
    live: Path | None = None,
    held_batch: int = 0,
) -> FitResult:
    """Train `module` on `source` for `epochs` (global batch `batch_size`), from step `resume_step` of `ckpt_path`
    when given (checked first with `sslbench.training.checkpoint.resume_state`).

    `last.ckpt` (`ckpt_path`, holding `config`) is written at the end of every epoch, every `ckpt_every_n_steps`
    steps and when `max_steps` (-1: none) stops the run early. A non-finite loss is a `UserError` naming the method
    (`name`) and the checkpoint. The module is prepared for the device (`sslbench.accel.prepare_module`) and left so.
    `live`: the folder of the run's DVCLive log (None: no log); `held_batch`: the first images of `source` whose
    collapse indicators are logged before the first step and at epoch ends (0: none).
    """
    held = None
    if held_batch > 0 and process_rank() == 0:  # only rank 0 computes and logs them
        held = np.asarray(source.images(slice(0, min(held_batch, len(source)))))
    history = History(held)
    # Lightning draws its bar on stdout, tqdm-style bars go to stderr: a bar only when both are terminals
    bar = progress_bar and is_terminal(sys.stdout) and is_terminal(sys.stderr)
    # history first: the checkpointer's save in the same hook must include the step's row
    callbacks: list[L.Callback] = [history, Checkpointer(ckpt_path, ckpt_every_n_steps, max_steps, config)]
    if progress_bar and not bar:
        callbacks.append(ProgressLines(name, history))
    prepare_module(module, channels_last=settings.channels_last,
                   compile_backend="inductor" if settings.compile else None)
    trainer = L.Trainer(
        max_epochs=epochs, **settings.trainer_kwargs(),
        plugins=[CPUSyncBatchNormPlugin()] if settings.sync_batchnorm == "cpu" else None,
        logger=StepLogger(live) if live is not None else False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=bar, num_sanity_val_steps=0, use_distributed_sampler=False,
        default_root_dir=str(model_dir), callbacks=callbacks,
    )
    steps_per_epoch = len(source) // batch_size
    done = resume_step if resume_step is not None else 0
    data = TrainData(source, batch_size, seed, done // steps_per_epoch, done % steps_per_epoch,
                     num_workers=num_workers, pin_memory=settings.accelerator == "gpu")
    if resume_step is not None:
        log.info("resuming %s from %s at step %d", name, ckpt_path, done)
    model_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # our loader resumes mid-epoch by itself (EpochBatchSampler.skip), which Lightning cannot see
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")  # intended
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # inside Lightning
        # the logger writes History's rows at every step; Lightning's own interval does not apply to it
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        try:
            # weights_only: the resumed checkpoint holds tensors and plain containers only (no unpickling)
            trainer.fit(module, datamodule=data, ckpt_path=str(ckpt_path) if resume_step is not None else None,
                        weights_only=True)
        except NonFiniteLossError as err:  # user-fixable (learning rate, temperature, precision): no traceback
            raise UserError(f"pretrain@{name}: {err} The last checkpoint, if any, is {ckpt_path}.") from err
    return FitResult(history, time.perf_counter() - t0, trainer.global_step, trainer.is_global_zero)
