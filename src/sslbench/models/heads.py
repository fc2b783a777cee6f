"""MLP heads with named dimensions (projectors, predictors, prototypes' inputs)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sslbench.errors import UserError


class MLP(nn.Sequential):
    """`Linear -> [BN] -> ReLU` for every hidden layer, then a last `Linear [-> BN]`.

    Args:
        dims: `[in_dim, hidden..., out_dim]`; `len(dims) == 2` is a single linear layer.
        batch_norm: BN after each hidden linear layer (SimCLR v2, BYOL, Barlow Twins projectors).
        last_bn: BN (no affine) after the last linear layer (SimSiam projector, CISSL heads).
        last_bn_scale: give that BN a learned scale but no shift (SimCLR's output layer: the authors' code,
            google-research/simclr `tf2/model.py`, normalises it with `center=False`).
        last_bias: bias of the last linear layer (off when `last_bn` is on, and for DISSL's bottleneck).
    """

    def __init__(
        self, dims: Sequence[int], *, batch_norm: bool = True, last_bn: bool = False, last_bn_scale: bool = False,
        last_bias: bool = True,
    ) -> None:
        if len(dims) < 2 or any(int(d) < 1 for d in dims):
            raise UserError(f"head dims must be at least [in_dim, out_dim] of positive widths, got {list(dims)}")
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True):
            layers.append(nn.Linear(d_in, d_out, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(dims[-2], dims[-1], bias=last_bias and not last_bn))
        if last_bn:
            bn = nn.BatchNorm1d(dims[-1], affine=last_bn_scale)
            if last_bn_scale:
                bn.register_parameter("bias", None)  # F.batch_norm takes a weight without a bias
            layers.append(bn)
        super().__init__(*layers)
        self.in_dim = int(dims[0])
        self.out_dim = int(dims[-1])
