"""The training log of a run through DVCLive's Lightning logger, restricted to the files `dvc.yaml` declares.

`StepLogger` is `dvclive.lightning.DVCLiveLogger` writing into `reports/pretrain/live/<method>/`:

- `plots/metrics/<name>.tsv`: one file per curve (columns `step`, `<name>`), a row appended at every step
  (`ssl_loss`, `online_top1`, `lr`, `epoch`, `images_per_s`) or at step 0 and every epoch end (`feature_std`,
  `effective_rank`): what `dvc plots show/diff` draws and overlays across experiments;
- `metrics.json`: the latest value of each curve and `step`, rewritten every `sync_every_s` seconds, at epoch ends
  and at the end: what `dvc exp show` shows while a run goes on.

The rows come from `sslbench.training.callbacks.History` alone (`log_step`), which keeps them in `last.ckpt`: a
resumed run starts the log afresh and writes the checkpoint's rows again before its own, so that it neither repeats
nor loses a step whatever the killed run had appended after its last checkpoint (DVC deletes the folder before it
reruns the stage anyway). Lightning's own `log_metrics` calls (the methods' `self.log` values every
`log_every_n_steps`) and `log_hyperparams` (the config is `models/<method>/config.yaml`) write nothing.

DVCLive's other defaults are off, as a pipeline stage must write only its declared outputs: no `dvc.yaml`
(`dvcyaml=None`), no `report.html` (`report=None`), no `dvc exp save` (`save_dvc_exp=False`), no model or
checkpoint artifacts (`log_model=False`), no system monitor. `FilesOnlyLive` also skips what `Live.__init__` does
with the repository, for which DVCLive 3.49 has no switch: it opens the DVC repository, reads git refs for an
experiment name, runs `dvc init` (and `git add`s its files) in a git repository without DVC, `git add`s untracked
files of the log folder at the end of a `dvc exp run`, and posts to DVC Studio when a token is configured.
Under DDP only rank 0 writes (`rank_zero_only`; other ranks get Lightning's dummy experiment).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dvclive import Live
from dvclive.lightning import DVCLiveLogger
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

LIVE_DIR = "live"  # reports/pretrain/live/<method>/


def process_rank() -> int:
    """This process's global rank as its launcher set it (`RANK`, `LOCAL_RANK`, `SLURM_PROCID`...; 0 when alone),
    known before the Trainer starts: Lightning's `rank_zero_only.rank`."""
    return int(getattr(rank_zero_only, "rank", 0))


def live_dir(reports: str | Path, method: str) -> Path:
    """`<reports>/pretrain/live/<method>`: the training log of a method."""
    return Path(reports) / "pretrain" / LIVE_DIR / method


class FilesOnlyLive(Live):
    """`dvclive.Live` that writes its files and touches nothing else: no DVC repository, git or Studio calls."""

    def _init_dvc(self) -> None:  # Live.__init__: open the repo, name an experiment, maybe `dvc init`
        self._dvc_repo = None
        self._dvc_file = "dvc.yaml"  # never written (dvcyaml=None), but read by Live's properties
        self._inside_dvc_exp = self._inside_dvc_pipeline = self._save_dvc_exp = False
        # a fresh log, even with DVCLIVE_RESUME set: a resumed run writes its checkpoint's rows again
        self._resume = False

    def _init_studio(self) -> None:  # Live.__init__: post a `start` event to DVC Studio when configured
        self._studio_events_to_skip = {"start", "data", "done"}


class StepLogger(DVCLiveLogger):
    """DVCLive's Lightning logger writing the rows `log_step` gets into `directory` (module docstring)."""

    def __init__(self, directory: Path, sync_every_s: float = 10.0) -> None:
        super().__init__(run_name=None, log_model=False, dir=str(directory), resume=False, report=None,
                         save_dvc_exp=False, dvcyaml=None, cache_images=False, monitor_system=False)
        self.directory = directory
        self.sync_every_s = sync_every_s
        self._synced = time.monotonic()

    @property
    @rank_zero_experiment
    def experiment(self) -> Live:
        if self._experiment is None:
            self._experiment = FilesOnlyLive(**self._kwargs)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, sync: bool | None = False) -> None:
        """Lightning's own calls (the methods' `self.log` values): not logged, `log_step` writes the rows."""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Not logged: a `params.yaml` in the log folder would be an undeclared output (the config is
        `models/<method>/config.yaml`)."""

    @rank_zero_only
    def log_step(self, values: Mapping[str, float | int], step: int, sync: bool = False) -> None:
        """Append `values` at `step` to their curves; rewrite `metrics.json` when `sync` or every `sync_every_s`."""
        live = self.experiment
        live.step = step
        for name, value in values.items():
            live.log_metric(name, value if isinstance(value, int) else float(value))
        now = time.monotonic()
        if sync or now - self._synced >= self.sync_every_s:
            live.make_summary()
            self._synced = now
