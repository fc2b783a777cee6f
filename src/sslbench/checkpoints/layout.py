"""The canonical layout (torchvision ResNet / timm ViT names) <-> sslbench's `Encoder` state_dict, and what a
canonical state_dict holds (backbone, stem, DISSL widening, ViT resolution).

sslbench's ResNet trunk keeps torchvision's modules but groups them (`backbone.features` = conv1, bn1, relu,
maxpool, layer1..3; `backbone.last_block` = layer4); with DISSL's "+dim" widening the trunk moves one level down
(`backbone.features.0` = that trunk, `backbone.features.1` = layer4) and the widening becomes the last block. The
ViT is timm's VisionTransformer under `backbone.net.`. The tables below are the whole correspondence; they are used
in both directions (import and export) and rename only by prefix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from sslbench.checkpoints.formats import LayoutError, strip_prefix

Tensor = torch.Tensor

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

_RESNET = (("conv1.", "backbone.features.0."), ("bn1.", "backbone.features.1."), ("layer1.", "backbone.features.4."),
           ("layer2.", "backbone.features.5."), ("layer3.", "backbone.features.6."),
           ("layer4.", "backbone.last_block."))
_RESNET_WIDENED = (("conv1.", "backbone.features.0.0."), ("bn1.", "backbone.features.0.1."),
                   ("layer1.", "backbone.features.0.4."), ("layer2.", "backbone.features.0.5."),
                   ("layer3.", "backbone.features.0.6."), ("layer4.", "backbone.features.1."),
                   ("avgpool.0.", "backbone.last_block."))
_VIT = (("", "backbone.net."),)

RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}
_DEPTHS: dict[tuple[str, tuple[int, ...]], str] = {
    ("basic", (2, 2, 2, 2)): "ResNet-18", ("basic", (3, 4, 6, 3)): "ResNet-34",
    ("bottleneck", (3, 4, 6, 3)): "ResNet-50", ("bottleneck", (3, 4, 23, 3)): "ResNet-101",
    ("bottleneck", (3, 8, 36, 3)): "ResNet-152",
}
VIT_SMALL_DIM, VIT_SMALL_DEPTH = 384, 12


def table(backbone: str, widened: bool) -> tuple[tuple[str, str], ...]:
    """(canonical prefix, sslbench prefix) pairs for a backbone."""
    if backbone == "vit_small":
        return _VIT
    if backbone in RESNETS:
        return _RESNET_WIDENED if widened else _RESNET
    raise LayoutError(f"backbone {backbone!r} has no published layout (only resnet18, resnet50 and vit_small have)")


# sslbench's ViT also registers its last transformer block as `backbone.last_block` (the Grad-CAM layer), so its
# state_dict holds that block twice: under `backbone.net.blocks.11.` and under this alias
_VIT_ALIAS = ("backbone.last_block.", f"backbone.net.blocks.{VIT_SMALL_DEPTH - 1}.")


def to_encoder(state: Mapping[str, Tensor], backbone: str, widened: bool) -> dict[str, Tensor]:
    """Canonical names -> the `Encoder` state_dict's names (keys no prefix matches are kept as they are)."""
    out = rename(state, table(backbone, widened))
    if backbone == "vit_small":
        alias, block = _VIT_ALIAS
        out.update({alias + k[len(block):]: v for k, v in list(out.items()) if k.startswith(block)})
    return out


def to_canonical(state: Mapping[str, Tensor], backbone: str, widened: bool) -> dict[str, Tensor]:
    """The `Encoder` state_dict's backbone -> canonical names (the inverse of `to_encoder`)."""
    if backbone == "vit_small":
        state = {k: v for k, v in state.items() if not k.startswith(_VIT_ALIAS[0])}
    return rename(state, table(backbone, widened), reverse=True)


def rename(state: Mapping[str, Tensor], pairs: tuple[tuple[str, str], ...], reverse: bool = False
           ) -> dict[str, Tensor]:
    """Rename keys by the first matching prefix of `pairs` (right to left with `reverse`); unmatched keys are kept
    as they are, so that the strict check reports them under the name the file uses."""
    out = {}
    for key, value in state.items():
        for src, dst in pairs:
            old, new = (dst, src) if reverse else (src, dst)
            rest = strip_prefix(key, old)
            if rest is not None:
                out[new + rest] = value
                break
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Arch:
    """What a canonical state_dict holds.

    Attributes:
        backbone: `resnet18`, `resnet50` or `vit_small`.
        conv1_kernel: 7 (ImageNet stem) or 3 (a CIFAR-style stem) for ResNets, else 0.
        out_dim, out_bottleneck: DISSL's widening (`avgpool.0.*`): the output width, and the hidden width of its
            residual expanding bottleneck (None for the 1x1 conv + BN + ReLU variant).
        image_size, patch: ViT only: the resolution its position embedding was made for, and the patch size.
    """

    backbone: str
    conv1_kernel: int = 0
    out_dim: int | None = None
    out_bottleneck: int | None = None
    image_size: int | None = None
    patch: int | None = None

    def describe(self) -> str:
        if self.backbone == "vit_small":
            return f"a ViT-S/{self.patch} for {self.image_size} px"
        stem = "7x7 (ImageNet) stem" if self.conv1_kernel == 7 else "3x3 (CIFAR) stem"
        text = f"a {self.backbone} with a {stem}"
        if self.out_dim is not None:
            kind = f"bottleneck {self.out_bottleneck}" if self.out_bottleneck else "1x1 conv"
            text += f", widened to {self.out_dim} ({kind})"
        return text


def detect(state: Mapping[str, Tensor]) -> Arch:
    """The architecture a canonical state_dict holds, or LayoutError naming what it is instead."""
    if "patch_embed.proj.weight" in state:
        return _detect_vit(state)
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        shown = ", ".join(list(state)[:4])
        raise LayoutError(f"no ResNet `conv1.weight` nor ViT `patch_embed.proj.weight` among the backbone's keys "
                          f"({shown}{', ...' if len(state) > 4 else ''})")
    if tuple(conv1.shape[1:]) not in ((3, 7, 7), (3, 3, 3)) or conv1.shape[0] != 64:
        raise LayoutError(f"conv1.weight has shape {tuple(conv1.shape)}; sslbench's ResNets have (64, 3, 7, 7) or "
                          "(64, 3, 3, 3) (wide or deep-stem ResNets are not supported)")
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    counts = tuple(len({m.group(1) for k in state if (m := re.match(rf"layer{i}\.(\d+)\.", k))}) for i in range(1, 5))
    name = next((n for n, arch in RESNETS.items() if arch == (block, counts)), None)
    if name is None:
        depth = _DEPTHS.get((block, counts), f"a ResNet with {block} blocks {counts}")
        raise LayoutError(f"the file holds {depth}; sslbench rebuilds resnet18 and resnet50 only")
    out_dim = out_bottleneck = None
    if "avgpool.0.conv3.weight" in state:
        out_dim = int(state["avgpool.0.conv3.weight"].shape[0])
        out_bottleneck = int(state["avgpool.0.conv1.weight"].shape[0]) if "avgpool.0.conv1.weight" in state else None
    elif "avgpool.0.0.weight" in state:
        out_dim = int(state["avgpool.0.0.weight"].shape[0])
    return Arch(name, int(conv1.shape[-1]), out_dim, out_bottleneck)


def _detect_vit(state: Mapping[str, Tensor]) -> Arch:
    proj = state["patch_embed.proj.weight"]
    dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = len({m.group(1) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if dim != VIT_SMALL_DIM or depth != VIT_SMALL_DEPTH:
        raise LayoutError(f"the file holds a ViT of width {dim} and depth {depth}; sslbench's vit_small is "
                          f"ViT-S ({VIT_SMALL_DIM} wide, {VIT_SMALL_DEPTH} blocks)")
    pos = state.get("pos_embed")
    if pos is None:
        raise LayoutError("the ViT has no `pos_embed`")
    grid = math.isqrt(int(pos.shape[1]) - 1)
    if grid * grid != int(pos.shape[1]) - 1:
        raise LayoutError(f"pos_embed has {pos.shape[1]} tokens, not a class token + a square grid")
    image_size = grid * patch
    if (patch, image_size >= 128) not in ((16, True), (4, False)):
        raise LayoutError(f"the file holds a ViT-S/{patch} for {image_size} px; sslbench's vit_small uses patch 16 "
                          "at >= 128 px and patch 4 below")
    return Arch("vit_small", image_size=image_size, patch=patch)


def mismatch(expected: Mapping[str, Tensor], got: Mapping[str, Tensor], shown: int = 3) -> str:
    """Missing and unexpected keys (first few of each, with counts) and shape mismatches; '' when they agree."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {tuple(got[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
              if k in got and tuple(got[k].shape) != tuple(v.shape)]
    parts = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f", ... {len(items) - shown} more" if len(items) > shown else ""
            parts.append(f"{len(items)} {what} ({', '.join(items[:shown])}{more})")
    return "; ".join(parts)


def fill_num_batches_tracked(expected: Mapping[str, Tensor], got: dict[str, Tensor]) -> int:
    """Add the BatchNorm counters a file lacks (older releases omit them; they do not change eval-mode outputs),
    as torchvision's own loading does; returns how many were added."""
    added = 0
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in got:
            got[key] = torch.zeros(value.shape, dtype=value.dtype)
            added += 1
    return added
