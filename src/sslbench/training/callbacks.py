"""The Lightning callbacks of a run: the per-step history (logged through DVCLive), the atomic `last.ckpt`
checkpointer, and the progress lines written when no progress bar is drawn."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from sslbench.methods.base import SSLMethod
from sslbench.progress import LineProgress
from sslbench.training.live import StepLogger
from sslbench.training.metrics import encoder_indicators

# the columns of a history row; `images_per_s` is the throughput of the process so far (absent from the rows of
# checkpoints written before it was logged, which resume all the same)
COLUMNS = ("step", "epoch", "ssl_loss", "online_top1", "lr", "images_per_s")
INDICATORS = ("feature_std", "effective_rank")


class Checkpointer(L.Callback):
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


class History(L.Callback):
    """The run's history, kept in `last.ckpt` and logged through the trainer's `StepLogger` (DVCLive):

    - a row per step (`COLUMNS`): loss and online top-1 (with several processes, the mean over them: every rank
      calls the hook, a collective), the learning rate, and the throughput of this process so far;
    - the collapse indicators (`INDICATORS`, `sslbench.training.metrics.encoder_indicators`) of the held batch
      `held` (uint8 images) before the first step and at every epoch end, computed by rank 0 alone.

    A resumed run gets the checkpoint's rows back (`load_state_dict`) and logs them again first
    (`on_train_start`): the log is then the same as an uninterrupted run's (sslbench.training.live).
    """

    def __init__(self, held: np.ndarray | None = None) -> None:
        self.rows: list[list[float]] = []
        self.indicators: list[list[float]] = []  # [step, feature_std, effective_rank]
        self.held = held
        self.images = 0
        self.seconds = 0.0
        self._t0 = 0.0

    @property
    def state_key(self) -> str:
        # the key of this callback's state in `last.ckpt` (Lightning's default: the class name), fixed so that
        # checkpoints keep resuming whatever the class is called
        return "_History"

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "indicators": self.indicators}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [list(r) for r in state_dict["rows"]]
        self.indicators = [list(r) for r in state_dict.get("indicators", [])]

    # ---------------------------------------------------------------- logging

    @staticmethod
    def _logger(trainer: L.Trainer) -> StepLogger | None:
        return trainer.logger if isinstance(trainer.logger, StepLogger) else None

    @staticmethod
    def row_values(row: list[float]) -> dict[str, float]:
        values = dict(zip(COLUMNS[1:], row[1:], strict=False))
        values["epoch"] = int(values["epoch"])
        return values

    def _indicate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0: the held batch's indicators at this step, recorded and logged."""
        if self.held is None or not trainer.is_global_zero:
            return
        assert isinstance(pl_module, SSLMethod)
        values = encoder_indicators(pl_module.encoder, self.held)
        self.indicators.append([trainer.global_step, *(values[k] for k in INDICATORS)])
        logger = self._logger(trainer)
        if logger is not None:
            logger.log_step(values, trainer.global_step, sync=True)

    @staticmethod
    def _epoch_end(trainer: L.Trainer) -> bool:
        """Whether the run stands at the start of an epoch: before the first step or after a whole epoch."""
        return trainer.global_step % max(1, int(trainer.num_training_batches)) == 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is not None:  # a resumed run: the checkpoint's log first
            for row in self.rows:
                logger.log_step(self.row_values(row), int(row[0]))
            for step, *values in self.indicators:
                logger.log_step(dict(zip(INDICATORS, values, strict=True)), int(step))
        # step 0; or a run resumed at an epoch end whose checkpoint was saved before that epoch's indicators (a stop
        # by `max_steps` there, a step checkpoint): the restored weights are those of that epoch end
        if self._epoch_end(trainer) and not any(int(r[0]) == trainer.global_step for r in self.indicators):
            self._indicate(trainer, pl_module)

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
        rate = self.images / self.seconds if self.seconds else float("nan")
        row = [trainer.global_step, trainer.current_epoch, loss, top1, float(lr), rate]
        self.rows.append(row)
        logger = self._logger(trainer)
        if logger is not None:
            logger.log_step(self.row_values(row), trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a whole epoch done; not when `max_steps` stops the run (its checkpoint is saved already: the resumed run
        # logs these indicators at its start)
        if not trainer.should_stop and self._epoch_end(trainer):
            self._indicate(trainer, pl_module)

    def last_epoch_mean(self, column: int) -> float:
        if not self.rows:
            return float("nan")
        last = self.rows[-1][1]
        return float(np.mean([r[column] for r in self.rows if r[1] == last]))


class ProgressLines(L.Callback):
    """The progress of a run as a few log lines (`sslbench.progress.LineProgress`), for when Lightning's progress
    bar is off because the output is not a terminal: rank 0 logs a line per tenth of the run's steps (and at most a
    minute apart) with the epoch, the last step's loss and online top-1, and the throughput."""

    def __init__(self, name: str, history: History) -> None:
        self.name, self.history = name, history
        self.bar: LineProgress | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.bar = LineProgress(total=int(trainer.estimated_stepping_batches), desc=f"pretrain@{self.name}",
                                    unit="step", initial=trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.bar is None or not self.history.rows:
            return
        _, epoch, loss, top1, _, rate, *_ = [*self.history.rows[-1], float("nan")]
        self.bar.set_postfix_str(f"epoch {int(epoch) + 1}/{trainer.max_epochs}, ssl_loss {loss:.4g}, "
                                 f"online_top1 {top1:.3f}, {rate:.0f} img/s")
        self.bar.update(1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
