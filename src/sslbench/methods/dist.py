"""Cross-rank gathers that keep gradients, for losses over batch statistics or negatives (docs/decisions.md).

Under DDP each rank computes its loss `L_r` and DDP averages the parameter gradients over the W ranks, so the update
is (1/W) d(sum_r L_r)/d(theta) once the gathered copies send their gradients back to the rank that produced them
(`torch.distributed.nn.functional.all_gather` sums them in backward). It equals the single-process gradient of the
whole-batch loss L exactly when sum_r L_r = W * L, which holds in the two patterns used here:
- every rank computes the *same* loss on gathered tensors (Barlow Twins' cross-correlation, VICReg's variance and
  covariance, SwAV's codes): L_r = L;
- each rank averages a per-anchor loss over its *own* anchors against gathered candidates (NT-Xent): L_r = mean of
  its share, so sum_r L_r = W * L when the shares are equal.
A gather without gradients (or an extra division by W) gives gradients off by a factor W: lightly-ai/lightly#1528 and
lightly-ai/lightly#1977. `tests/methods/test_distributed.py` checks every method against the single-process gradient.
Everything here is a no-op when torch.distributed is not initialised.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) from every rank along dim 0 -> (W * B, ...), rank order; gradients flow back.

    All ranks must pass tensors of the same shape.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def local_slice(n_local: int) -> slice:
    """Rows of this rank's samples inside a `gather`ed tensor of equal shares of `n_local` rows."""
    start = rank() * n_local
    return slice(start, start + n_local)


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over ranks, without gradients (running statistics such as DINO's centre)."""
    if not is_distributed():
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out / world_size()


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks, without gradients (e.g. Sinkhorn-Knopp marginals)."""
    if not is_distributed():
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out
