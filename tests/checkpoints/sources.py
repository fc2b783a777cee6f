"""Small randomly initialised networks and checkpoint containers in each publisher's own layout.

Each builder returns the network as its publisher runs it (the reference embedding) and writes the file the way the
publisher's code saves it: the key names, prefixes and container nesting follow the repositories cited in
docs/checkpoints.md. Models are ResNet-18 where the layout does not depend on the depth, so that the tests stay fast.
"""

from __future__ import annotations

import argparse
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sslbench.checkpoints import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    """Float images in [0, 1], what an sslbench encoder takes."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def normalised(x: torch.Tensor) -> torch.Tensor:
    """What the publishers' networks take: ImageNet mean/std normalisation."""
    return (x - MEAN) / STD


def perturb_norms(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so that eval-mode BN is not close to the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)  # type: ignore[union-attr]
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)  # type: ignore[union-attr]
                m.num_batches_tracked.fill_(7)  # type: ignore[union-attr]
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def resnet(name: str = "resnet18", *, seed: int = 0, stem: str = "imagenet", fc: bool = False) -> nn.Module:
    """A torchvision ResNet as a publisher builds it: `stem` is `imagenet` (7x7/2 + max-pool), `cifar` (3x3/1,
    padding 1, no max-pool: DISSL repo, mmselfsup's ResNet_CIFAR), `solo` (3x3/1, padding 2, no max-pool:
    solo-learn) or `pad_then_conv` (VICReg and SwAV: ConstantPad2d(1) then a 7x7/2 conv with padding 2);
    `fc=False` replaces the classifier by the identity as the SSL publishers do."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, name)(weights=None)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem == "solo":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        net.maxpool = nn.Identity()
    elif stem == "pad_then_conv":
        net.conv1.padding = (2, 2)
        net.conv1.register_forward_pre_hook(lambda _m, args: (F.pad(args[0], (1, 1, 1, 1), value=0.0),))
    if not fc:
        net.fc = nn.Identity()
    return perturb_norms(net, seed + 1000)


def pooled(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's pooled features (the classifier, when present, is bypassed)."""
    fc = net.fc
    net.fc = nn.Identity()
    try:
        with torch.no_grad():
            return net(normalised(x))
    finally:
        net.fc = fc


class ExpandingBottleneck(nn.Module):
    """DISSL's widening of its torch.hub `d8192` models (Dubois et al. 2022, repository
    YannDubs/Invariant-Self-Supervised-Learning, hub/resnet_dim.py): 1x1 in->hidden, 3x3 hidden->hidden, 1x1
    hidden->out, BN after each, ReLU between, plus the input tiled out/in times, then ReLU. Written here from that
    description, independently of sslbench's backbone."""

    def __init__(self, c_in: int, hidden: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.tiles = c_out // c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + torch.cat([x] * self.tiles, dim=1))


def dissl_resnet50_d8192(seed: int = 0) -> nn.Module:
    """`dissl_resnet50_d8192_*` of the DISSL torch.hub: ResNet-50, `avgpool` = Sequential(bottleneck, pool)."""
    net = resnet("resnet50", seed=seed)
    torch.manual_seed(seed + 1)
    net.avgpool = nn.Sequential(ExpandingBottleneck(2048, 512, 8192), nn.AdaptiveAvgPool2d(1))
    return perturb_norms(net, seed + 2000)


def head_state(seed: int, in_dim: int, prefix: str) -> dict[str, torch.Tensor]:
    """A small DINO projection head (`mlp.0/2/4`, weight-normalised `last_layer`), as `DINOHead` names it."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"mlp.0.weight": (32, in_dim), "mlp.0.bias": (32,), "mlp.2.weight": (32, 32), "mlp.2.bias": (32,),
              "mlp.4.weight": (16, 32), "mlp.4.bias": (16,), "last_layer.weight_g": (64, 1),
              "last_layer.weight_v": (64, 16)}
    return {prefix + k: torch.randn(*s, generator=g) for k, s in shapes.items()}


def with_prefix(state: dict[str, torch.Tensor], prefix: str) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict((prefix + k, v) for k, v in state.items())


def optimizer_state(model: nn.Module) -> dict[str, object]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return opt.state_dict()


def dino_args() -> argparse.Namespace:
    """DINO's `args`, pickled whole in its checkpoints (main_dino.py)."""
    return argparse.Namespace(arch="resnet18", patch_size=16, out_dim=65536, norm_last_layer=True,
                              momentum_teacher=0.996, use_bn_in_head=False, warmup_teacher_temp=0.04,
                              teacher_temp=0.07, lr=0.0005, epochs=100, global_crops_scale=(0.4, 1.0),
                              data_path="/path/to/imagenet/train", output_dir=".", seed=0, dist_url="env://")


# ----------------------------------------------------------------------------------------------- ViT-S (DINO)


def dino_vit_small(seed: int, image_size: int = 128, patch: int = 16) -> OrderedDict[str, torch.Tensor]:
    """Random ViT-S/16 weights under DINO's names (vision_transformer.py: `cls_token`, `pos_embed`,
    `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`, `norm`)."""
    g = torch.Generator().manual_seed(seed)
    d, tokens = 384, 1 + (image_size // patch) ** 2

    def w(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state: OrderedDict[str, torch.Tensor] = OrderedDict(
        cls_token=w(1, 1, d), pos_embed=w(1, tokens, d))
    state["patch_embed.proj.weight"] = w(d, 3, patch, patch, scale=0.05)
    state["patch_embed.proj.bias"] = w(d)
    for i in range(12):
        p = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            state[p + norm + ".weight"] = 1 + w(d, scale=0.1)
            state[p + norm + ".bias"] = w(d, scale=0.1)
        state[p + "attn.qkv.weight"], state[p + "attn.qkv.bias"] = w(3 * d, d, scale=0.05), w(3 * d)
        state[p + "attn.proj.weight"], state[p + "attn.proj.bias"] = w(d, d, scale=0.05), w(d)
        state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"] = w(4 * d, d, scale=0.05), w(4 * d)
        state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"] = w(d, 4 * d, scale=0.05), w(d)
    state["norm.weight"], state["norm.bias"] = 1 + w(d, scale=0.1), w(d, scale=0.1)
    return state


def vit_reference(state: dict[str, torch.Tensor], x: torch.Tensor, patch: int = 16, heads: int = 6) -> torch.Tensor:
    """DINO's ViT forward written out in float64 (pre-norm blocks, LayerNorm eps 1e-6, exact GELU, the class token
    after the final norm), independently of timm."""
    s = {k: v.double() for k, v in state.items()}
    x = (x.double() - MEAN.double()) / STD.double()
    h = F.conv2d(x, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=patch)
    h = h.flatten(2).transpose(1, 2)
    b, d = h.shape[0], h.shape[2]
    h = torch.cat([s["cls_token"].expand(b, -1, -1), h], dim=1) + s["pos_embed"]
    n, hd = h.shape[1], d // heads
    for i in range(12):
        p = f"blocks.{i}."
        y = F.layer_norm(h, (d,), s[p + "norm1.weight"], s[p + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(y, s[p + "attn.qkv.weight"], s[p + "attn.qkv.bias"]).view(b, n, 3, heads, hd).permute(
            2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, d)
        h = h + F.linear(y, s[p + "attn.proj.weight"], s[p + "attn.proj.bias"])
        y = F.layer_norm(h, (d,), s[p + "norm2.weight"], s[p + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"])), s[p + "mlp.fc2.weight"],
                     s[p + "mlp.fc2.bias"])
        h = h + y
    return F.layer_norm(h, (d,), s["norm.weight"], s["norm.bias"], eps=1e-6)[:, 0]


# ----------------------------------------------------------------------------------------------- Lightning


def lightning_container(state: dict[str, torch.Tensor], model: nn.Module, **extra: object) -> dict[str, object]:
    """What Lightning's `Trainer.save_checkpoint` writes around a module's state_dict; the scheduler's learning
    rates are numpy float64, as cosine schedules computed with numpy leave them."""
    lr = np.float64(0.3) * np.cos(np.float64(0.1))
    ckpt: dict[str, object] = {
        "epoch": 99,
        "global_step": 12300,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": OrderedDict(state),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 100, "completed": 99}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {
            "best_model_score": None, "best_model_path": "", "dirpath": "/ckpt", "last_model_path": "/ckpt/last.ckpt"}},
        "optimizer_states": [optimizer_state(model)],
        "lr_schedulers": [{"base_lrs": [0.3], "last_epoch": 99, "_last_lr": [lr], "verbose": False,
                           "_step_count": 100, "lr_lambdas": [None]}],
    }
    ckpt.update(extra)
    return ckpt
