"""Backbones: `build_backbone(name, ...) -> (module, feature_dim)`.

Every backbone maps images (B, 3, H, W), normalised floats, to features (B, feature_dim) and exposes its last
convolutional (or transformer) block as `module.last_block`, the Grad-CAM target layer.

- `convnet`: the CPU-friendly default, 4 conv blocks (w-2w-4w-8w channels with `width` w = 32 by default, BN, ReLU,
  stride-2 pooling) and global average pooling; measured at ~480 img/s training with SimCLR on 32 px on a 2-core CPU.
  The compute grows as width^2.
- `resnet18`, `resnet50` (torchvision, random init) with a `stem`: `cifar` (3x3 stride-1 conv, padding 1, no
  max-pool; the DISSL repo at 32 px), `tinyimagenet` (3x3 stride-1 conv, max-pool kept; DISSL repo at 64 px),
  `imagenet` (the original 7x7 stride-2 conv + max-pool) or `cifar_pad2` (3x3 stride-1 conv with padding 2, no
  max-pool: solo-learn's CIFAR stem, whose first feature map is 34x34 at 32 px; for its published checkpoints).
- `vit_small`: ViT-S/16 (DINO) through timm, no pretrained weights; `patch_size` follows the image size.
- `out_dim`: DISSL's "+dim" option (Dubois et al. 2022, Sec. 6): widen the representation by a 1x1 conv + BN + ReLU
  on the last feature map before pooling, so that the linear probe sees `out_dim` features.
- `out_bottleneck`: with `out_dim`, widen with DISSL's expanding bottleneck instead, as its torch.hub `d8192` models
  do (YannDubs/Invariant-Self-Supervised-Learning, hub/resnet_dim.py): 1x1 conv to `out_bottleneck` channels, 3x3
  conv, 1x1 conv to `out_dim`, BN after each, plus the input tiled `out_dim / channels` times when that divides,
  then ReLU (`_ExpandingBottleneck`; PyTorch's default initialisation).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from sslbench.errors import UserError, unknown_choice

BACKBONES = ("convnet", "resnet18", "resnet50", "vit_small")
STEMS = ("cifar", "tinyimagenet", "imagenet", "cifar_pad2")


class ConvNet(nn.Module):
    """Four conv blocks (conv3x3-BN-ReLU, then 2x2 max-pool except after the last) and global average pooling."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(widths):
            layers: list[nn.Module] = [
                nn.Conv2d(in_ch, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_ch = width
        self.features = nn.Sequential(*blocks[:-1])
        self.last_block = blocks[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.last_block(self.features(x))).flatten(1)


class _ResNetTrunk(nn.Module):
    """A torchvision ResNet without its classifier, with a chosen stem."""

    def __init__(self, name: str, stem: str) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if stem in ("cifar", "tinyimagenet"):
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        elif stem == "cifar_pad2":
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        if stem in ("cifar", "cifar_pad2"):
            net.maxpool = nn.Identity()
        self.features = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3)
        self.last_block = net.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = int(net.fc.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.last_block(self.features(x))).flatten(1)


class _ExpandingBottleneck(nn.Module):
    """DISSL's expanding bottleneck (torch.hub `d8192` models): 1x1 -> 3x3 -> 1x1 convs with BN, a residual of the
    input tiled to `out_channels` (when they are a multiple of the input's), ReLU. Keys: conv1..3, bn1..3."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.tiles = out_channels // in_channels if out_channels % in_channels == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.tiles:
            out = out + x.repeat(1, self.tiles, 1, 1)
        return self.relu(out)


class _Widened(nn.Module):
    """DISSL's "+dim": the trunk's last block followed by a 1x1 conv expansion to `out_dim` channels, or by the
    expanding bottleneck of width `bottleneck`."""

    def __init__(self, trunk: ConvNet | _ResNetTrunk, out_dim: int, bottleneck: int | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(trunk.features, trunk.last_block)
        self.last_block: nn.Module
        if bottleneck is None:
            self.last_block = nn.Sequential(
                nn.Conv2d(trunk.out_channels, out_dim, 1, bias=False), nn.BatchNorm2d(out_dim), nn.ReLU(inplace=True)
            )
        else:
            self.last_block = _ExpandingBottleneck(trunk.out_channels, bottleneck, out_dim)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.last_block(self.features(x))).flatten(1)


class _ViT(nn.Module):
    def __init__(self, image_size: int) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never reach a hub
        import timm

        patch = 16 if image_size >= 128 else 4
        self.net = timm.create_model(
            "vit_small_patch16_224", pretrained=False, num_classes=0, img_size=image_size, patch_size=patch
        )
        self.last_block: nn.Module = self.net.blocks[-1]  # type: ignore[index,assignment]
        self.out_channels = int(self.net.num_features)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_backbone(
    name: str,
    *,
    stem: str = "cifar",
    out_dim: int | None = None,
    image_size: int = 32,
    width: int = 32,
    out_bottleneck: int | None = None,
) -> tuple[nn.Module, int]:
    """Build a randomly initialised backbone; returns `(module, feature_dim)`. `width` is the convnet's first width;
    `out_bottleneck` (with `out_dim`) widens with DISSL's expanding bottleneck instead of a 1x1 conv.

    Raises:
        UserError: unknown `name` or `stem`, or `out_dim`/`out_bottleneck` given where they are not supported.
    """
    if name not in BACKBONES:
        raise unknown_choice("backbone", name, BACKBONES)
    if stem not in STEMS:
        raise unknown_choice("stem", stem, STEMS)
    if out_dim is not None and out_dim < 1:
        raise UserError(f"backbone.out_dim must be a positive integer or null, got {out_dim}")
    if out_bottleneck is not None and (out_dim is None or out_bottleneck < 1):
        raise UserError(f"encoder.out_bottleneck needs out_dim and must be a positive integer, got {out_bottleneck} "
                        f"with out_dim {out_dim}")
    trunk: ConvNet | _ResNetTrunk | _ViT
    if width < 1:
        raise UserError(f"backbone.width must be a positive integer, got {width}")
    if name == "convnet":
        trunk = ConvNet((width, 2 * width, 4 * width, 8 * width))
    elif name == "vit_small":
        if out_dim is not None:
            raise UserError("backbone.out_dim (DISSL '+dim') is only supported by conv backbones, not vit_small")
        trunk = _ViT(image_size)
        return trunk, trunk.out_channels
    else:
        trunk = _ResNetTrunk(name, stem)
    if out_dim is not None:
        return _Widened(trunk, out_dim, out_bottleneck), out_dim
    return trunk, trunk.out_channels
