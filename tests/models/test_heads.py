"""MLP heads: layer layout, and SimCLR's output BatchNorm against lightly's projection head."""

from __future__ import annotations

import torch
from torch import nn

from sslbench.models.heads import MLP


def test_output_batchnorm_with_scale_and_no_shift() -> None:
    head = MLP([8, 16, 4], last_bn=True, last_bn_scale=True)
    bn = head[-1]
    assert isinstance(bn, nn.BatchNorm1d) and bn.weight is not None and bn.bias is None
    assert isinstance(head[-2], nn.Linear) and head[-2].bias is None
    out = head.train()(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)))
    assert out.mean(0).abs().max() < 1e-5  # normalised over the batch, no shift to learn
    out.sum().backward()
    assert bn.weight.grad is not None


def test_simclr_projector_has_lightly_layout_less_the_output_shift() -> None:
    from lightly.models.modules import SimCLRProjectionHead

    ours = MLP([8, 16, 4], last_bn=True, last_bn_scale=True)
    theirs = SimCLRProjectionHead(8, 16, 4)
    shapes = sorted(tuple(p.shape) for p in ours.parameters())
    their_shapes = sorted(tuple(p.shape) for p in theirs.parameters())
    their_shapes.remove((4,))  # the output BatchNorm's shift, which the SimCLR authors leave out
    assert shapes == their_shapes


def test_default_head_unchanged() -> None:
    head = MLP([8, 16, 4])
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head[-1].bias is not None
