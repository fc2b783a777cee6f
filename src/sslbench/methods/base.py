"""The thin shared base of every pretraining method (composition over inheritance: one level at most).

A method subclasses `SSLMethod`, builds its heads and loss in `__init__`, and implements `loss_step`. The base does
what every method shares and nothing else:
- holds the `Encoder` (what `encoder.pt` saves) and the multi-view transform, applied to the batch on the device
  after transfer (`on_after_batch_transfer`), so augmentations run batched, on GPU when there is one;
- when `view_seed` is set (the pretrain stage sets it to `study.seed`), reseeds torch's generator before each step
  from (view_seed, global step, rank), so a resumed run draws the same augmentations (and any other sampling noise
  of the step) as an uninterrupted one;
- checks the loss is finite and stops with the step and the offending values when it is not;
- trains an online linear probe on detached features, with its own loss that never reaches the encoder; the SSL
  loss is logged apart from it (`train/ssl_loss` vs `train/online_probe_loss`);
- builds the optimizer (SGD or AdamW on everything but the probe; LARS-free to keep the dependency set small) with
  linear warm-up and cosine decay, per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import lightning as L
import numpy as np
import torch
from torch import nn

from sslbench.errors import UserError
from sslbench.models.encoder import Encoder, EncoderSpec

OPTIMIZERS = ("sgd", "lars", "adamw")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and schedule. `lr` is the base rate for `batch_size` 256 (linear scaling: lr * batch / 256)."""

    name: str = "sgd"
    lr: float = 0.3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    probe_lr: float = 0.1
    trust_coefficient: float = 1e-3  # LARS's eta (name: lars): SimCLR's, BYOL's and Barlow Twins' value
    bias_lr_scale: float = 1.0  # rate of the biases and norm parameters / the weights' (Barlow Twins: 0.0048 / 0.2)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise UserError(f"optim.name must be one of {OPTIMIZERS}, got {self.name!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.trust_coefficient <= 0 \
                or self.bias_lr_scale <= 0:
            raise UserError(f"optim: need lr > 0, weight_decay >= 0, warmup_epochs >= 0, trust_coefficient > 0, "
                            f"bias_lr_scale > 0 (got {self})")


class LossOutput(NamedTuple):
    """What `loss_step` returns.

    loss: the scalar SSL loss; features: (B, D) backbone features of the first view of each image (fed, detached, to
    the online probe; for the supervised baseline too); logs: extra scalars to log under `train/`.
    """

    loss: torch.Tensor
    features: torch.Tensor
    logs: dict[str, torch.Tensor]


class NonFiniteLossError(RuntimeError):
    pass


class SSLMethod(L.LightningModule):
    """Base LightningModule. Batches are `(images, labels)` with uint8 images (B, H, W, 3).

    Args:
        encoder: the spec of the encoder to train.
        views: a module mapping float images (B, 3, H, W) in [0, 1] to a list of augmented views.
        num_classes: classes of the online probe.
        optim: optimizer and schedule.
        batch_size: images per step (for the linear lr scaling).
    """

    # False for baselines that are not optimised (random_init): the stage saves the initial encoder
    trainable: ClassVar[bool] = True

    def __init__(
        self, *, encoder: EncoderSpec, views: nn.Module, num_classes: int, optim: OptimConfig, batch_size: int
    ) -> None:
        super().__init__()
        self.encoder = Encoder(encoder)
        self.views = views
        self.optim = optim
        self.batch_size = batch_size
        # features are standardised first (BN without affine, batch statistics in training): raw pooled features
        # vary little around a large mean, which left a plain linear probe at chance for hundreds of steps
        self.online_probe = nn.Sequential(
            nn.BatchNorm1d(self.encoder.feature_dim, affine=False), nn.Linear(self.encoder.feature_dim, num_classes)
        )
        self.num_classes = num_classes
        self.view_seed: int | None = None
        # the last step's SSL loss and online top-1 (detached), read by the pretrain stage's history
        self.step_metrics: dict[str, torch.Tensor] = {}

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (for schedules such as BYOL's momentum); 1 outside a Trainer."""
        trainer = self._trainer
        return 1 if trainer is None else max(1, int(trainer.estimated_stepping_batches))

    # ------------------------------------------------------------------ to implement
    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if self.view_seed is not None and self._trainer is not None:
            state = np.random.SeedSequence([self.view_seed, self.global_step, self.global_rank]).generate_state(2)
            reseed_views(int(state[0]) << 32 | int(state[1]), images.device)
        if images.dtype == torch.uint8:
            # (B, H, W, 3) -> contiguous (B, 3, H, W), the layout the view ops are tested on (a ~0.06 ms copy at batch
            # 32; the ops ran neither faster nor slower on the permuted strides, measured 2026-12-04)
            images = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format).div_(255)
        with torch.no_grad():
            views = self.views(images)
        return views, labels

    def training_step(self, batch: tuple[list[torch.Tensor], torch.Tensor], batch_idx: int) -> torch.Tensor:
        views, labels = batch
        out = self.loss_step(views, labels)
        if not torch.isfinite(out.loss):
            details = ", ".join(f"{k}={v.item():.4g}" for k, v in out.logs.items())
            raise NonFiniteLossError(
                f"non-finite SSL loss {out.loss.item()} at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); {details or 'no other terms'}. "
                "Lower optim.lr, check the method's temperatures, or use 32-bit precision."
            )
        logits = self.online_probe(out.features.detach())
        probe_loss = nn.functional.cross_entropy(logits, labels)
        top1 = (logits.argmax(1) == labels).float().mean()
        bs = labels.shape[0]
        self.step_metrics = {"ssl_loss": out.loss.detach(), "online_top1": top1.detach()}
        if self._logs_this_step():
            self.log("train/ssl_loss", out.loss, prog_bar=True, batch_size=bs, sync_dist=True)
            self.log("train/online_probe_loss", probe_loss, batch_size=bs, sync_dist=True)
            self.log("train/online_top1", top1, prog_bar=True, batch_size=bs, sync_dist=True)
            for key, value in out.logs.items():
                self.log(f"train/{key}", value, batch_size=bs, sync_dist=True)
        # the probe's loss only reaches the probe (features are detached): the two objectives do not mix
        return out.loss + probe_loss

    def _logs_this_step(self) -> bool:
        """Whether this step's `self.log` calls reach a logger: Lightning's loggers write every
        `Trainer.log_every_n_steps` steps, yet each `self.log` call costs ~1.5 ms on CPU (measured at 3-4 calls per
        step: ~10 % of a 45 ms step of the default study) and, with `sync_dist`, one all-reduce per call under DDP.
        The step-by-step curves are written from `step_metrics` (`training.callbacks.History`), not from these."""
        trainer = self._trainer
        every = max(1, int(getattr(trainer, "log_every_n_steps", 1)))
        return (self.global_step + 1) % every == 0 or self.global_step == 0

    def configure_optimizers(self) -> Any:
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(total - 1, int(self.optim.warmup_epochs * total / max(1, self.trainer.max_epochs or 1)))
        opt, sched = self.optimizer_and_schedule(total, warmup)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def optimizer_and_schedule(
        self, total: int, warmup: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """The stage's optimizer and per-step schedule for `total` steps with `warmup` warm-up steps (the pretrain
        stage passes one epoch's steps times `optim.warmup_epochs`); benchmarks that train without a Trainer call
        this to train as the stage does."""
        probe = set(self.online_probe.parameters())
        params = [p for p in self.parameters() if p.requires_grad and p not in probe]
        return build_optimizer(params, list(self.online_probe.parameters()), self.optim, self.batch_size, total,
                               warmup)


def reseed_views(seed: int, device: torch.device) -> None:
    """Seed the generators the view ops draw from: the CPU's (`torch.randperm` of the colour jitter's order) and,
    for a batch on a GPU, that device's.

    Not `torch.manual_seed`: it also queues a seeding of every CUDA (and XPU) device, and while CUDA is not
    initialised each queued call records a Python stack trace, ~3 ms per call on CPU, 1.6 s of a 500-step run. On
    CPU the streams are the same as `torch.manual_seed`'s.
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def build_optimizer(
    params: list[nn.Parameter], probe_params: list[nn.Parameter], optim: OptimConfig, batch_size: int, total: int,
    warmup: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD, LARS or AdamW over `params` (weight decay on weights, none on biases and norm parameters; rate
    `optim.lr * batch_size / 256`) with linear warm-up over `warmup` steps then cosine decay to 0 at `total`, per
    step; `probe_params` (the online probe) get their own constant rate `optim.probe_lr` and no weight decay. The
    biases and norm parameters run at `optim.bias_lr_scale` times the weights' rate (1 but in Barlow Twins' recipe).

    LARS (You et al. 2017) is SGD with momentum whose step on each weight tensor is scaled by
    `trust_coefficient * |w| / (|g| + weight_decay * |w|)`; the biases, norm parameters and the probe (the groups
    without weight decay) take plain SGD steps, as in SimCLR's, BYOL's and Barlow Twins' code. It is lightly's
    implementation (`lightly.utils.lars.LARS`, from Lightning Bolts), without solo-learn's optional rate clipping."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]  # biases and norm parameters
    lr = optim.lr * batch_size / 256
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": optim.weight_decay, "lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr * optim.bias_lr_scale},
        {"params": probe_params, "weight_decay": 0.0, "lr": optim.probe_lr},
    ]
    opt: torch.optim.Optimizer
    if optim.name == "sgd":
        # not fused: PyTorch's fused SGD (2.14) fails when a parameter gets its first gradient after the first
        # step (SwAV's prototypes, frozen for the first epoch): it builds momentum buffers for all or none
        opt = torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
    elif optim.name == "lars":
        from lightly.utils.lars import LARS

        opt = LARS(groups, lr=lr, momentum=optim.momentum, trust_coefficient=optim.trust_coefficient)
    else:
        # PyTorch's fused kernel (one call per parameter group, not a loop over tensors) where it exists: the
        # AdamW step over Barlow Twins' 18 tensors took 0.56 ms against 1.9 ms on this CPU
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
        opt = torch.optim.AdamW(groups, lr=lr, fused=fused or None)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # the probe keeps a constant rate: it must track the moving features, not anneal with them
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [factor, factor, lambda _: 1.0])
    return opt, sched
