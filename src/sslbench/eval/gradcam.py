"""Grad-CAM of the frozen encoder with the linear probe as classifier: the maps, as arrays (the robustness area
draws them with `sslbench.report.panels.gradcam_panel`).

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017, https://arxiv.org/abs/1610.02391): for target class c and feature maps A^k of a layer,
α_k = mean_{i,j} ∂y^c/∂A^k_{ij} and the map is ReLU(Σ_k α_k A^k), scaled to [0, 1], upsampled (bilinear) to the
input size and scaled to [0, 1] again. The layer is `encoder.backbone.last_block` (the last conv block; for a ViT
its last transformer block, with the patch tokens reshaped to a grid), model = images in [0, 1] → encoder
embedding → linear probe (`LinearProbe.as_module()`, which folds the probe's feature standardisation into the
layer and so takes raw embeddings), target = the true label.

Written here, with pytorch-grad-cam (`pytorch_grad_cam.GradCAM`) as the test oracle that these maps must equal
(tests/eval/test_gradcam.py), because importing that package costs ~5 s per process on the 2-core default machine
(it imports torchvision's detection ops, OpenCV and scikit-learn's SVD for its other CAM variants), which was most
of the robustness evaluation's time per method; the computation itself is the few lines of `gradcam` below.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sslbench.models.encoder import Encoder


class ProbedEncoder(nn.Module):
    """images (B, 3, H, W) in [0, 1] → logits (B, C): the encoder's downstream embedding, then the linear probe."""

    def __init__(self, encoder: Encoder, probe: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.probe = probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.encoder(x).embedding)


def _vit_reshape(prefix_tokens: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix_tokens:, :]
        side = int(round(patches.shape[1] ** 0.5))
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def gradcam(
    encoder: Encoder, probe: nn.Linear, images: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps for the true labels and the probe's predictions.

    Args:
        encoder: the frozen encoder (put in eval mode here); probe: a linear layer on its raw embeddings.
        images: uint8 (N, H, W, 3); labels: (N,) the true classes (the Grad-CAM targets).

    Returns:
        cams float32 (N, H, W) in [0, 1]; predictions int64 (N,) of the same forward pass.
    """
    if len(labels) and (int(np.min(labels)) < 0 or int(np.max(labels)) >= probe.out_features):
        raise ValueError(f"Grad-CAM targets must lie in [0, {probe.out_features}) (the probe's classes), got "
                         f"[{int(np.min(labels))}, {int(np.max(labels))}]")
    model = ProbedEncoder(encoder, probe).eval()
    reshape: Callable[[torch.Tensor], torch.Tensor] = lambda t: t  # noqa: E731
    if encoder.spec.backbone == "vit_small":
        reshape = _vit_reshape(int(getattr(encoder.backbone.net, "num_prefix_tokens", 1)))
    x = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    x.requires_grad_(True)  # so that the layer's output carries a gradient even when every parameter is frozen
    store: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        store["activations"] = output
        output.register_hook(lambda grad: store.__setitem__("gradients", grad))

    layer = encoder.backbone.last_block
    assert isinstance(layer, nn.Module)
    handle = layer.register_forward_hook(keep)
    try:
        logits = model(x)
        target = torch.as_tensor(np.asarray(labels, np.int64))
        model.zero_grad(set_to_none=True)
        logits.gather(1, target[:, None]).sum().backward()
    finally:
        handle.remove()
    activations = reshape(store["activations"].detach()).float()
    gradients = reshape(store["gradients"].detach()).float()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = _unit_range(torch.relu((weights * activations).sum(dim=1)))
    cams = F.interpolate(cams[:, None], size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[:, 0]
    cams = _unit_range(torch.relu(cams))
    return cams.numpy().astype(np.float32), logits.detach().argmax(1).numpy().astype(np.int64)


def _unit_range(cams: torch.Tensor) -> torch.Tensor:
    """Each map (N, H, W) shifted to a minimum of 0 and divided by its maximum (+1e-7, as pytorch-grad-cam)."""
    low = cams.amin(dim=(1, 2), keepdim=True)
    cams = cams - low
    return cams / (1e-7 + cams.amax(dim=(1, 2), keepdim=True))

