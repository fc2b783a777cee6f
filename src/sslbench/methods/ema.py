"""Exponential moving averages of networks (BYOL's target, DINO's teacher): small functions, no base class.

BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733, Sec. 3.1 and App. A): after each step,
xi <- tau * xi + (1 - tau) * theta, with tau increased from tau_base to 1 by a cosine over training:
tau = 1 - (1 - tau_base) * (cos(pi * k / K) + 1) / 2. DINO uses the same schedule (0.996 -> 1).
"""

from __future__ import annotations

import copy
import math
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def frozen_copy(module: M) -> M:
    """A deep copy with gradients off, to serve as an EMA target/teacher."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, for parameters; buffers (BN statistics) are copied."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    t_params: list[torch.Tensor] = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("EMA target and online networks differ in structure")
    torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - momentum)
    for t_buf, o_buf in zip(target.buffers(), online.buffers(), strict=True):
        t_buf.copy_(o_buf)


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """BYOL's schedule: `base` at step 0, `final` at `total_steps`, cosine in between."""
    if total_steps <= 0:
        return final
    progress = min(1.0, max(0.0, step / total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
