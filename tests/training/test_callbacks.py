"""The history callback: its CSV, its last-epoch means and the key of its state in `last.ckpt`."""

from __future__ import annotations

import math

from sslbench.training.callbacks import History
from sslbench.training.metrics import pretrain_metrics


def test_history_csv_means_and_checkpoint_key() -> None:
    history = History()
    assert math.isnan(history.last_epoch_mean(2))
    history.load_state_dict({"rows": [(1, 0, 2.0, 0.1, 0.5), (2, 1, 1.0, 0.2, 0.25), (3, 1, 0.5, 0.4, 0.125)]})
    assert history.state_dict() == {"rows": [[1, 0, 2.0, 0.1, 0.5], [2, 1, 1.0, 0.2, 0.25], [3, 1, 0.5, 0.4, 0.125]]}
    assert history.last_epoch_mean(2) == 0.75 and abs(history.last_epoch_mean(3) - 0.3) < 1e-12
    assert history.csv().splitlines() == ["step,epoch,ssl_loss,online_top1,lr", "1,0,2,0.1,0.5", "2,1,1,0.2,0.25",
                                          "3,1,0.5,0.4,0.125"]
    # Lightning stores the history in last.ckpt under this key: a checkpoint resumes only while it stays the same
    assert history.state_key == "_History"


def test_metrics_of_an_untrained_run_are_null_but_the_indicators() -> None:
    metrics = pretrain_metrics(History(), {"feature_std": 0.123456, "effective_rank": 7.891})
    assert metrics == {"pretrain/ssl_loss": None, "pretrain/online_top1": None, "pretrain/images_per_s": None,
                       "pretrain/feature_std": 0.12346, "pretrain/effective_rank": 7.89, "pretrain/steps": 0}
