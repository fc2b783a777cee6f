"""The backbone options added for published layouts: solo-learn's CIFAR stem and DISSL's expanding bottleneck;
existing specs keep their config.yaml and their networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslbench.checkpoints.layout import to_canonical, to_encoder
from sslbench.errors import UserError
from sslbench.models.backbones import build_backbone
from sslbench.models.encoder import Encoder, EncoderSpec


def test_cifar_pad2_stem_is_a_padding_2_conv_without_max_pool() -> None:
    net, dim = build_backbone("resnet18", stem="cifar_pad2")
    conv1 = net.features[0]
    assert isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (3, 3) and conv1.padding == (2, 2)
    assert isinstance(net.features[3], nn.Identity)
    assert net.features[:4](torch.rand(1, 3, 32, 32)).shape == (1, 64, 34, 34)
    assert dim == 512


def test_expanding_bottleneck_keys_and_residual() -> None:
    net, dim = build_backbone("resnet50", stem="imagenet", out_dim=8192, out_bottleneck=512)
    keys = [k for k in net.state_dict() if k.startswith("last_block.")]
    assert dim == 8192 and len(keys) == 18
    assert {k.split(".")[1] for k in keys} == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}
    block = net.last_block.eval()
    with torch.no_grad():
        for m in (block.bn3,):  # a zero last BN leaves relu(tiled input): the residual is the input repeated
            m.weight.zero_()
            m.bias.zero_()
        x = torch.randn(1, 2048, 2, 2)
        assert torch.equal(block(x), torch.relu(x.repeat(1, 4, 1, 1)))
    with pytest.raises(UserError, match="out_bottleneck needs out_dim"):
        build_backbone("resnet18", out_bottleneck=64)


def test_spec_without_the_new_options_writes_the_same_config() -> None:
    assert "out_bottleneck" not in EncoderSpec().to_dict()
    spec = EncoderSpec(backbone="resnet50", stem="imagenet", out_dim=8192, out_bottleneck=512)
    assert spec.to_dict()["out_bottleneck"] == 512
    assert EncoderSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("spec", [
    EncoderSpec(backbone="resnet18"), EncoderSpec(backbone="resnet18", out_dim=300),
    EncoderSpec(backbone="resnet18", out_dim=1024, out_bottleneck=64), EncoderSpec(backbone="vit_small"),
])
def test_layout_tables_cover_every_tensor_both_ways(spec: EncoderSpec) -> None:
    state = Encoder(spec).state_dict()
    widened = spec.out_dim is not None
    canonical = to_canonical(state, spec.backbone, widened)
    assert not any(k.startswith("backbone.") for k in canonical)
    back = to_encoder(canonical, spec.backbone, widened)
    assert list(back) == list(state) if spec.backbone != "vit_small" else set(back) == set(state)
    assert all(back[k] is state[k] or torch.equal(back[k], state[k]) for k in state)
