"""The summary metrics of a run (`pretrain/...`): means of the last epoch's history, throughput, and collapse
indicators on a fixed held batch of unaugmented images (also logged during the run: `encoder_indicators`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sslbench.data.splits import SplitSource
from sslbench.methods.base import NonFiniteLossError
from sslbench.models.encoder import Encoder

if TYPE_CHECKING:
    from sslbench.training.callbacks import History


@torch.no_grad()
def collapse_indicators(features: torch.Tensor) -> dict[str, float]:
    """`feature_std`: mean over dims of the batch std of L2-normalised features; `effective_rank`: exp of the
    entropy of the normalised singular values of the centred features (Roy & Vetterli 2007)."""
    z = torch.nn.functional.normalize(features.double(), dim=1)
    s = torch.linalg.svdvals(features.double() - features.double().mean(0))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-30).log()).sum()
    return {"feature_std": float(z.std(0).mean()), "effective_rank": float(entropy.exp())}


def held_batch_indicators(encoder: Encoder, source: SplitSource, held_batch: int) -> dict[str, float]:
    """`collapse_indicators` of the embeddings of the first `held_batch` images of `source` (no augmentation;
    put the encoder in eval mode first)."""
    n = min(held_batch, len(source))
    images = torch.from_numpy(np.array(source.images(slice(0, n)))).permute(0, 3, 1, 2).float().div(255)
    with torch.no_grad():
        feats = torch.cat([encoder(images[i : i + 256]).embedding for i in range(0, n, 256)])
    return collapse_indicators(feats)


@torch.no_grad()
def encoder_indicators(encoder: Encoder, images: np.ndarray, chunk: int = 256) -> dict[str, float]:
    """`collapse_indicators` of the embeddings of `images` (uint8 (N, H, W, 3)) by `encoder` during training: in
    eval mode, on the encoder's device, 256 images at a time. The encoder's mode and torch's random state (CPU and
    the encoder's GPU) are restored, so the run continues exactly as without this call."""
    device = next(encoder.parameters()).device
    modes = [(module, module.training) for module in encoder.modules()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        encoder.eval()
        try:
            feats = [encoder(torch.from_numpy(np.array(images[i : i + chunk])).to(device)
                             .permute(0, 3, 1, 2).float().div(255)).embedding.float().cpu()
                     for i in range(0, len(images), chunk)]
        finally:
            for module, training in modes:
                module.training = training
    features = torch.cat(feats)
    if not torch.isfinite(features).all():
        # the training loss can stay finite while the weights or the BatchNorm running statistics have diverged
        # (the loss sees batch statistics; these features, in eval mode, see the running ones)
        raise NonFiniteLossError(
            f"the encoder's embeddings of the held batch are non-finite in eval mode "
            f"({int((~torch.isfinite(features)).any(1).sum())} of {len(features)} images): its weights or BatchNorm "
            "statistics diverged, although the loss stayed finite. Lower optim.lr (or use optim.name=lars, whose "
            "steps are bounded per layer), or check the method's temperatures."
        )
    return collapse_indicators(features)


def pretrain_metrics(history: History, indicators: dict[str, float]) -> dict[str, Any]:
    """The `pretrain/...` metrics of a run; the training ones are null when nothing was trained (`random_init`)."""
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
