"""The history callback: its last-epoch means, its state in `last.ckpt` (older checkpoints included), the rows it
hands the logger, and the progress lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sslbench.methods.base import NonFiniteLossError
from sslbench.models.encoder import Encoder, EncoderSpec
from sslbench.training.callbacks import History
from sslbench.training.metrics import collapse_indicators, encoder_indicators, pretrain_metrics


def test_history_means_state_and_checkpoint_key() -> None:
    history = History()
    assert math.isnan(history.last_epoch_mean(2))
    # a checkpoint written before the throughput and the indicators were logged resumes all the same
    history.load_state_dict({"rows": [(1, 0, 2.0, 0.1, 0.5), (2, 1, 1.0, 0.2, 0.25), (3, 1, 0.5, 0.4, 0.125)]})
    assert history.state_dict() == {"rows": [[1, 0, 2.0, 0.1, 0.5], [2, 1, 1.0, 0.2, 0.25], [3, 1, 0.5, 0.4, 0.125]],
                                    "indicators": []}
    assert history.last_epoch_mean(2) == 0.75 and abs(history.last_epoch_mean(3) - 0.3) < 1e-12
    assert History.row_values([3, 1, 0.5, 0.4, 0.125]) == {"epoch": 1, "ssl_loss": 0.5, "online_top1": 0.4,
                                                            "lr": 0.125}
    assert History.row_values([4, 1.0, 0.5, 0.4, 0.125, 300.0])["images_per_s"] == 300.0
    # Lightning stores the history in last.ckpt under this key: a checkpoint resumes only while it stays the same
    assert history.state_key == "_History"


def test_diverged_running_statistics_stop_the_run_with_the_fix() -> None:
    """The loss sees batch statistics and can stay finite while the BatchNorm running ones have blown up; the
    eval-mode indicators then stop the run with a user error instead of a failed SVD."""
    encoder = Encoder(EncoderSpec(backbone="convnet", width=8, image_size=16)).train()
    norm = next(m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.running_mean.fill_(float("nan"))
    images = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(NonFiniteLossError, match=r"non-finite in eval mode \(6 of 6 images\).*Lower optim.lr"):
        encoder_indicators(encoder, images)
    assert encoder.training


def test_indicators_during_training_leave_the_run_as_it_was() -> None:
    torch.manual_seed(0)
    encoder = Encoder(EncoderSpec(backbone="convnet", width=8, image_size=16)).train()
    encoder.backbone.eval()  # a submodule's own mode is kept too
    images = np.random.default_rng(0).integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)
    state = torch.get_rng_state()
    values = encoder_indicators(encoder, images, chunk=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert encoder.training and not encoder.backbone.training
    encoder.eval()
    with torch.no_grad():
        expected = collapse_indicators(encoder(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).embedding)
    assert values == expected


def test_metrics_of_an_untrained_run_are_null_but_the_indicators() -> None:
    metrics = pretrain_metrics(History(), {"feature_std": 0.123456, "effective_rank": 7.891})
    assert metrics == {"pretrain/ssl_loss": None, "pretrain/online_top1": None, "pretrain/images_per_s": None,
                       "pretrain/feature_std": 0.12346, "pretrain/effective_rank": 7.89, "pretrain/steps": 0}
