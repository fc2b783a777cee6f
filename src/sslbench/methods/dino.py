"""DINO: self-distillation with no labels (Caron et al., ICCV 2021, https://arxiv.org/abs/2104.14294).

A student (backbone + head) matches a teacher whose weights are an exponential moving average of the student's
(momentum 0.996 -> 1 on a cosine schedule). The teacher sees the global crops only, the student every crop. With
centre c and temperatures τ_t (warmed up linearly 0.04 -> 0.07) and τ_s = 0.1:

    P_t(x) = softmax((g_t(x) − c) / τ_t),   log P_s(x) = log_softmax(g_s(x) / τ_s),
    loss = mean over pairs (global crop i, crop v ≠ i) of mean_b( −Σ_k P_t(x_i)_k log P_s(x_v)_k ),
    c <- 0.9 c + 0.1 · mean over the global batch of the teacher's outputs (after the loss, without gradient).

Head (the paper's): a 3-layer MLP (GELU, hidden 2048, bottleneck 256), l2 normalisation, then a weight-normalised
linear layer to K = 65536 with its norm fixed to 1 (`norm_last_layer=True`), i.e. cosine scores against K unit
vectors; the last layer is frozen during the first epoch. Optimiser AdamW (lr 5e-4 · batch/256).
Deviation: weight decay stays constant (the paper ramps it 0.04 -> 0.4), as `SSLMethod` has one optimiser recipe.
Deviation: τ_t is warmed up continuously, per step (fractional epochs); the reference code (facebookresearch/dino
`DINOLoss`, `np.linspace(0.04, 0.07, E)` indexed by epoch) and lightly's `DINOLoss(epoch=...)` hold it for a whole
epoch, a staircase whose E steps include both ends, so it reaches 0.07 in epoch E - 1; ours reaches it at the end of
epoch E. At the CPU default's E = 3: 0.04 / 0.055 / 0.07 per epoch there, 0.04 -> 0.07 linearly over 3 epochs here.
Sizes: the method config's are the CPU default's, not the paper's: head 512-128 -> K = 1024 (paper 2048-256 ->
65536), EMA base 0.99 (paper 0.996 for ViTs and for its ResNet-50 run, whose command also takes SGD at lr 0.03,
wd 1e-4 and global crops (0.14, 1) where the default here keeps AdamW as for ViTs). lightly's example head is
512-64 -> 2048 and its example teacher head is a separately initialised head; `benchmarks/parity.py` starts lightly's
teacher from the student's weights, as the reference does and as here (docs/parity.md).
Multi-GPU: the centre averages the teacher outputs of every rank (all-reduce), as in the reference code.
The encoder saved downstream is the student's (the online probe trains on it too).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError
from sslbench.methods import dist
from sslbench.methods.base import LossOutput, SSLMethod
from sslbench.methods.ema import cosine_momentum, ema_update, frozen_copy
from sslbench.methods.swav import check_views, epochs_done, multi_crop_features


class DINOLoss(nn.Module):
    """Cross-entropy from the centred, sharpened teacher to the student, over crop pairs (formula above).

    Args:
        out_dim: K, the width of the head's output (size of the centre).
        student_temp: τ_s.
        center_momentum: momentum of the centre's moving average.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if student_temp <= 0 or not 0 <= center_momentum < 1:
            raise UserError(f"dino: need student_temp > 0 and 0 <= center_momentum < 1 ({student_temp}, "
                            f"{center_momentum})")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center: torch.Tensor
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], teacher_temp: float) -> torch.Tensor:
        """Args: student: (B, K) outputs per crop (global crops first); teacher: (B, K) per global crop.

        Updates the centre (in training mode) after computing the loss. Returns a scalar.
        """
        if len(teacher) < 1 or len(student) < 2 or len(teacher) > len(student):
            raise ValueError(f"DINO needs >= 1 teacher and >= 2 student crops, got {len(teacher)}, {len(student)}")
        targets = [F.softmax((t.detach().float() - self.center) / teacher_temp, dim=1) for t in teacher]
        log_probs = [F.log_softmax(s.float() / self.student_temp, dim=1) for s in student]
        terms = [
            -(q * log_probs[v]).sum(dim=1).mean()
            for i, q in enumerate(targets)
            for v in range(len(student))
            if v != i
        ]
        loss = torch.stack(terms).mean()
        if self.training:
            self.update_center(torch.cat(teacher))
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        batch_center = dist.all_reduce_mean(teacher.detach().float().mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class DINOHead(nn.Module):
    """MLP (GELU) -> l2 normalisation -> weight-normalised last layer with unit-norm rows (cosine scores).

    Args:
        in_dim: backbone feature width; hidden_dim, bottleneck_dim, out_dim: the paper's 2048, 256, 65536.
        n_layers: linear layers of the MLP (3 in the paper).
        use_bn: BatchNorm1d after each hidden linear layer (the reference code's `use_bn_in_head`, off by default).
    """

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int, n_layers: int = 3,
                 use_bn: bool = False) -> None:
        super().__init__()
        if n_layers < 1 or min(hidden_dim, bottleneck_dim, out_dim) < 1:
            raise UserError(f"dino head: need n_layers >= 1 and positive widths, got {n_layers}, "
                            f"{[hidden_dim, bottleneck_dim, out_dim]}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.extend([nn.BatchNorm1d(d_out), nn.GELU()] if use_bn else [nn.GELU()])
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # weight norm with g fixed to 1 (the paper's norm_last_layer) is exactly a row-normalised weight
        return F.linear(F.normalize(self.mlp(h), dim=1), F.normalize(self.last_layer.weight, dim=1))


class DINO(SSLMethod):
    """DINO with multi-crop and an EMA teacher (backbone + head), see the module docstring.

    Args:
        hidden_dim, bottleneck_dim, out_dim, n_layers, use_bn_in_head: the head's (`DINOHead`).
        student_temp, center_momentum: the loss's; teacher_temp: τ_t after the warm-up, which starts at
            `warmup_teacher_temp` and lasts `warmup_teacher_temp_epochs` (fractional) epochs.
        momentum_teacher: the EMA momentum at step 0 (cosine to 1 over training).
        freeze_last_layer_epochs: the head's last layer gets no update for this many (fractional) epochs.
        n_global_views: the leading views that are global crops (seen by the teacher); the rest are local crops.
        **base: `SSLMethod` arguments (encoder, views, num_classes, optim, batch_size).
    """

    def __init__(
        self,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        n_layers: int = 3,
        use_bn_in_head: bool = False,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 30.0,
        center_momentum: float = 0.9,
        momentum_teacher: float = 0.996,
        freeze_last_layer_epochs: float = 1.0,
        n_global_views: int = 2,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.n_global_views = n_global_views
        if warmup_teacher_temp <= 0 or teacher_temp <= 0 or not 0 <= momentum_teacher <= 1:
            raise UserError("dino: need teacher temperatures > 0 and 0 <= momentum_teacher <= 1")
        self.head = DINOHead(self.encoder.feature_dim, hidden_dim, bottleneck_dim, out_dim, n_layers, use_bn_in_head)
        self.teacher_encoder = frozen_copy(self.encoder)
        self.teacher_head = frozen_copy(self.head)
        self.criterion = DINOLoss(out_dim, student_temp, center_momentum)
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.momentum_teacher = momentum_teacher
        self.freeze_last_layer_epochs = freeze_last_layer_epochs

    def current_teacher_temp(self) -> float:
        """τ_t of this step: linear warm-up over the first epochs, then constant."""
        epochs = epochs_done(self)
        if epochs >= self.warmup_teacher_temp_epochs:
            return self.teacher_temp
        frac = epochs / self.warmup_teacher_temp_epochs
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        check_views(views, self.n_global_views, "dino")
        n_global = self.n_global_views
        features = multi_crop_features(self.encoder, views)
        student = list(self.head(torch.cat(features)).chunk(len(features)))  # one head pass over all crops
        with torch.no_grad():
            teacher_features = self.teacher_encoder.features(torch.cat(views[:n_global]))
            teacher = list(self.teacher_head(teacher_features).chunk(n_global))
        temp = self.current_teacher_temp()
        loss = self.criterion(student, teacher, temp)
        return LossOutput(loss, features[0], {"teacher_temp": torch.tensor(temp)})

    def on_after_backward(self) -> None:
        if epochs_done(self) < self.freeze_last_layer_epochs:
            self.head.last_layer.weight.grad = None

    @torch.no_grad()
    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        # the teacher follows the student's weights of the previous step, updated at the start of a step rather than
        # at the end of the previous one (as BYOL's target): the checkpoint callbacks run before a module's
        # on_train_batch_end, so only this order puts the teacher the next step uses into `last.ckpt`
        momentum = cosine_momentum(self.global_step, self.total_steps, self.momentum_teacher)
        ema_update(self.teacher_encoder, self.encoder, momentum)
        ema_update(self.teacher_head, self.head, momentum)
