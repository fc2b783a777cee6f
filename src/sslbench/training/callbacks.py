"""The Lightning callbacks of a run: the per-step history and the atomic `last.ckpt` checkpointer."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from sslbench.methods.base import SSLMethod


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
    """Per-step history (step, epoch, ssl_loss, online_top1, lr) kept in the checkpoint, and throughput. With
    several processes the loss and top-1 are averaged over them (every rank calls the hook: a collective)."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []
        self.images = 0
        self.seconds = 0.0
        self._t0 = 0.0

    @property
    def state_key(self) -> str:
        # the key of this callback's state in `last.ckpt` (Lightning's default: the class name), fixed so that
        # checkpoints keep resuming whatever the class is called
        return "_History"

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
