"""Augmented views: per-view transforms on image batches and a multi-view wrapper (docs/decisions.md).

Every transform runs batched on tensors, with parameters drawn per sample (the same on CPU and GPU), on float
images (B, 3, H, W) in [0, 1]; the encoder normalises afterwards. A method's views are configured in
`conf/method/<name>.yaml` under `views:` with one of the builders below:

- `symmetric_views`: n identical pipelines (SimCLR, Chen et al. 2020, https://arxiv.org/abs/2002.05709, App. A:
  random resized crop (scale 0.08-1), horizontal flip, colour jitter (0.8s, 0.8s, 0.8s, 0.2s) with p 0.8, grayscale
  p 0.2, Gaussian blur p 0.5 with sigma in [0.1, 2] and a kernel of 10% of the image side).
- `asymmetric_views`: BYOL's two different pipelines (Grill et al. 2020, https://arxiv.org/abs/2006.07733, Table 6:
  blur p 1.0 / 0.1, solarize p 0.0 / 0.2, colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2).
- `multi_crop_views`: 2 global crops (BYOL-style asymmetric) + `n_local` small local crops (SwAV, Caron et al. 2020,
  https://arxiv.org/abs/2006.09882; DINO, Caron et al. 2021, https://arxiv.org/abs/2104.14294: global scale
  (0.4, 1), local scale (0.05, 0.4), local blur p 0.5). Global views come first in the returned list.

Every op is our own batched op (`ResizedCropFlip`, `ColorJitter`, `Grayscale`, `GaussianBlur`, `Solarize`), written
by hand because kornia's versions cost more than the 16-channel convnet's forward and backward on a 2-core CPU
(measured per view of 64 32-px images: crop 3.7 ms, jitter's HSV hue path ~15 ms, blur 1.5 ms, against 36 ms for
the backbone; for grayscale and solarize, which are one `torch.where` each, kornia's per-call parameter machinery
was most of the cost at the study's batch of 32; `python benchmarks/view_ops.py`). The class docstrings give the
semantics, kept to torchvision's; kornia stays installed as the tests' oracle for them. The randomness comes from
torch's global generator; the pretraining base reseeds it at every step from (seed, step, rank), so a resumed run
draws the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslbench.errors import UserError


def _blur_kernel(size: int) -> int:
    """SimCLR's kernel: 10% of the image side, odd, at least 3."""
    k = max(3, int(round(0.1 * size)))
    return k if k % 2 == 1 else k + 1


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_GRAY = torch.tensor([0.299, 0.587, 0.114])


def _coin(images: torch.Tensor, p: float) -> torch.Tensor:
    """(B,) bool: which samples of the batch an op with probability `p` applies to (one draw per sample)."""
    return torch.rand(images.shape[0], device=images.device) < p


def _select(chosen: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per sample, `new` where `chosen` (B,) else `old`. `torch.lerp` with a 0/1 weight is exact at both ends and
    2x faster on CPU than `torch.where` with a broadcast (B, 1, 1, 1) condition (~40 against ~85 us at 32 x 3 x 32 x
    32, 2 threads)."""
    return torch.lerp(old, new, chosen.to(new.dtype).view(-1, *([1] * (new.ndim - 1))))


def _luma(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma 0.299 R + 0.587 G + 0.114 B. A broadcast multiply-sum: `einsum` over the channel axis went
    through `bmm` and cost 4x as much at the study's batch."""
    return (images * _GRAY.to(images).view(1, 3, 1, 1)).sum(1, keepdim=True)


class ColorJitter(nn.Module):
    """Colour jitter with per-sample factors, applied to each sample with probability `p`.

    Brightness x*b, contrast blend with the image's mean grey, saturation blend with the pixel's grey (torchvision
    definitions, factors uniform in [max(0, 1 - x), 1 + x]), hue rotated by 2*pi*h, h uniform in [-hue, hue], in the
    four ops' order drawn once per batch, clamping to [0, 1] after each op (as torchvision).
    Hand-written rather than kornia's `ColorJitter` because kornia's HSV round trip for the hue dominated a training
    step on CPU (~1 s per 256 images of 32 px, more than the convnet's forward and backward); the hue is instead a
    rotation about the grey axis in YIQ space, a per-sample 3x3 matrix (close to, not identical with, an HSV hue
    shift). Forward: (B, 3, H, W) in [0, 1] -> same.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= hue <= 0.5 or min(brightness, contrast, saturation) < 0:
            raise UserError(f"colour jitter needs brightness, contrast, saturation >= 0 and 0 <= hue <= 0.5, got "
                            f"{brightness}, {contrast}, {saturation}, {hue}")
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p

    @staticmethod
    def _factors(n: int, x: float, ref: torch.Tensor) -> torch.Tensor:
        low = max(0.0, 1.0 - x)
        return torch.empty(n, 1, 1, 1, device=ref.device, dtype=ref.dtype).uniform_(low, 1.0 + x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        apply = _coin(images, self.p)
        out = images
        for op in torch.randperm(4).tolist():
            if op == 0 and self.brightness > 0:
                out = out.mul(self._factors(n, self.brightness, out)).clamp_(0, 1)
            elif op == 1 and self.contrast > 0:
                mean = out.mean((2, 3)).mv(_GRAY.to(out)).view(n, 1, 1, 1)  # mean luma
                out = torch.lerp(mean, out, self._factors(n, self.contrast, out)).clamp_(0, 1)
            elif op == 2 and self.saturation > 0:
                out = torch.lerp(_luma(out), out, self._factors(n, self.saturation, out)).clamp_(0, 1)
            elif op == 3 and self.hue > 0:
                theta = torch.empty(n, device=out.device, dtype=out.dtype).uniform_(-self.hue, self.hue) * 2 * math.pi
                cos, sin = theta.cos(), theta.sin()
                rot = torch.zeros(n, 3, 3, device=out.device, dtype=out.dtype)
                rot[:, 0, 0] = 1
                rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
                m = _YIQ_TO_RGB.to(out) @ rot @ _RGB_TO_YIQ.to(out)  # (B, 3, 3)
                out = torch.bmm(m, out.reshape(n, 3, height * width)).view(n, 3, height, width).clamp_(0, 1)
        return _select(apply, out, images)


class ResizedCropFlip(nn.Module):
    """Random resized crop and horizontal flip, per sample, as one bilinear resampling of the batch.

    The crop follows torchvision's `RandomResizedCrop.get_params`: area fraction uniform in `scale`, aspect ratio
    log-uniform in `ratio`, up to 10 draws until the box fits in the image, else the whole image cropped to the
    nearest ratio in range, centred; the box is then resampled to `size` (bilinear, no antialiasing, as kornia's
    `RandomResizedCrop`), and mirrored with probability `hf_prob`. One `affine_grid` + `grid_sample` over the batch
    instead of kornia's crop_by_indices + flip (3-7x faster on CPU). Forward: (B, 3, H, W) -> (B, 3, size, size).
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hf_prob: float = 0.5) -> None:
        super().__init__()
        self.size, self.scale, self.ratio, self.hf_prob = size, scale, ratio, hf_prob

    def boxes(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """(n, 4) boxes (x0, y0, w, h) in pixels, drawn as torchvision draws them."""
        tries = 10
        area = height * width * torch.empty(n, tries, device=device).uniform_(*self.scale)
        log_r = torch.empty(n, tries, device=device).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = log_r.exp()
        w = (area * r).sqrt().round()
        h = (area / r).sqrt().round()
        fits = (w > 0) & (h > 0) & (w <= width) & (h <= height)
        first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1, device=device))
        pick = first.clamp_min(0).unsqueeze(1)
        w, h = w.gather(1, pick).squeeze(1), h.gather(1, pick).squeeze(1)
        # fallback: whole image at the nearest admissible ratio, centred
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw, fh = float(width), float(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = float(round(height * self.ratio[1])), float(height)
        else:
            fw, fh = float(width), float(height)
        ok = first >= 0
        w = torch.where(ok, w, torch.full_like(w, fw))
        h = torch.where(ok, h, torch.full_like(h, fh))
        x0 = torch.where(ok, (torch.rand(n, device=device) * (width - w + 1)).floor(), (width - w) / 2)
        y0 = torch.where(ok, (torch.rand(n, device=device) * (height - h + 1)).floor(), (height - h) / 2)
        return torch.stack([x0, y0, w, h], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        x0, y0, w, h = self.boxes(n, height, width, images.device).to(images.dtype).unbind(1)
        flip = _coin(images, self.hf_prob)
        # the sampling grid of an axis-aligned box in normalised coordinates (align_corners=False: pixel edges at -1
        # and 1), built from its two separable axes: what `F.affine_grid` computes for this theta, without its
        # batched matrix product over every output pixel (~0.6 ms of a ~1.5 ms crop at batch 32 on this CPU)
        base = (torch.arange(self.size, device=images.device, dtype=images.dtype) * 2 + 1) / self.size - 1
        sx = torch.where(flip, -w / width, w / width)
        gx = sx[:, None] * base + ((2 * x0 + w) / width - 1)[:, None]  # (B, size) across columns
        gy = (h / height)[:, None] * base + ((2 * y0 + h) / height - 1)[:, None]  # (B, size) down rows
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # (B, size, size, 2)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Grayscale(nn.Module):
    """Grayscale with probability `p` per sample: the luma 0.299 R + 0.587 G + 0.114 B in all three channels
    (torchvision's and kornia's `rgb_to_grayscale`). Forward: (B, 3, H, W) -> same."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        chosen = _coin(images, self.p)
        return _select(chosen, _luma(images).expand_as(images), images)


class Solarize(nn.Module):
    """Solarize with probability `p` per sample: pixels at or above `threshold` become 1 - x (torchvision's and
    kornia's `solarize`; BYOL's threshold 0.5). Forward: (B, C, H, W) in [0, 1] -> same."""

    def __init__(self, p: float, threshold: float = 0.5) -> None:
        super().__init__()
        self.p, self.threshold = p, threshold

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        chosen = _coin(images, self.p)
        if self.threshold == 0.5:  # min(x, 1 - x) is x below 0.5 and 1 - x from 0.5 on: 5x cheaper than a where
            solarized = torch.minimum(images, 1.0 - images)
        else:
            solarized = torch.where(images >= self.threshold, 1.0 - images, images)
        return _select(chosen, solarized, images)


class GaussianBlur(nn.Module):
    """Gaussian blur with sigma uniform in `sigma` per sample, applied with probability `p`; a `kernel_size` kernel,
    reflect padding (kornia's and torchvision's definition). Separable, as two grouped convolutions over the chosen
    samples at once. Forward: (B, C, H, W) -> same."""

    def __init__(self, kernel_size: int, sigma: tuple[float, float], p: float = 0.5) -> None:
        super().__init__()
        self.kernel_size, self.sigma, self.p = kernel_size, sigma, p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, c, height, width = images.shape
        chosen = _coin(images, self.p).nonzero().flatten()
        sigma = torch.empty(n, device=images.device, dtype=images.dtype).uniform_(*self.sigma)
        if len(chosen) == 0:
            return images
        half = self.kernel_size // 2
        taps = torch.arange(-half, half + 1, device=images.device, dtype=images.dtype)
        kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[chosen, None] ** 2))
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (m * C, k)
        x = images[chosen].reshape(1, len(chosen) * c, height, width)
        x = F.pad(x, (half, half, half, half), mode="reflect")
        x = F.conv2d(x, kernel[:, None, None, :], groups=len(kernel))
        x = F.conv2d(x, kernel[:, None, :, None], groups=len(kernel))
        out = images.clone()
        out[chosen] = x.reshape(len(chosen), c, height, width)
        return out


class ViewTransform(nn.Module):
    """One augmentation pipeline: crop -> flip -> colour jitter -> grayscale -> blur -> solarize.

    Args:
        crop_size: output side in pixels.
        min_scale, max_scale: area range of the random resized crop (fraction of the image).
        hf_prob: horizontal flip probability.
        cj_prob: probability of colour jitter; cj_strength s scales (cj_bright, cj_contrast, cj_sat, cj_hue).
        cj_bright, cj_contrast, cj_sat, cj_hue: jitter magnitudes at strength 1 (SimCLR: 0.8, 0.8, 0.8, 0.2).
        gray_prob: probability of converting to grayscale.
        blur_prob: probability of a Gaussian blur with sigma in `blur_sigma`.
        solarize_prob: probability of solarizing (pixels above 0.5 are inverted).
    Forward: (B, 3, H, W) float in [0, 1] -> (B, 3, crop_size, crop_size).
    """

    def __init__(
        self,
        crop_size: int = 32,
        min_scale: float = 0.08,
        max_scale: float = 1.0,
        hf_prob: float = 0.5,
        cj_prob: float = 0.8,
        cj_strength: float = 1.0,
        cj_bright: float = 0.8,
        cj_contrast: float = 0.8,
        cj_sat: float = 0.8,
        cj_hue: float = 0.2,
        gray_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_prob: float = 0.0,
    ) -> None:
        super().__init__()
        for name, p in (("hf_prob", hf_prob), ("cj_prob", cj_prob), ("gray_prob", gray_prob),
                        ("blur_prob", blur_prob), ("solarize_prob", solarize_prob)):
            if not 0.0 <= p <= 1.0:
                raise UserError(f"views.{name} must be a probability in [0, 1], got {p}")
        if not 0.0 < min_scale <= max_scale <= 1.0:
            raise UserError(f"views: need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        if crop_size < 1:
            raise UserError(f"views.crop_size must be positive, got {crop_size}")
        self.crop_size = crop_size
        ops: list[nn.Module] = [ResizedCropFlip(crop_size, (min_scale, max_scale), hf_prob=hf_prob)]
        if cj_prob > 0 and cj_strength > 0:
            s = cj_strength
            ops.append(ColorJitter(cj_bright * s, cj_contrast * s, cj_sat * s, min(0.5, cj_hue * s), p=cj_prob))
        if gray_prob > 0:
            ops.append(Grayscale(gray_prob))
        if blur_prob > 0:
            sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
            ops.append(GaussianBlur(_blur_kernel(crop_size), sigma, p=blur_prob))
        if solarize_prob > 0:
            ops.append(Solarize(solarize_prob))
        self.ops = nn.Sequential(*ops)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.ndim == 4 and images.shape[1] == 3, f"expected (B, 3, H, W) images, got {tuple(images.shape)}"
        return self.ops(images).clamp_(0.0, 1.0)


class MultiView(nn.Module):
    """Apply each transform to the same batch: `forward(images) -> [t(images) for t in transforms]`.

    One call per view. Drawing the views that differ only in their probabilities in one pass over the repeated batch
    (with per-sample probabilities) was tried: the ops' cost grows with the batch rather than per call, so at the
    study's batch of 32 a whole training step took 1.02x (SimCLR) and 1.07x (BYOL) as long as with one call per
    view, and 0.93x for DINO's 2 + 4 crops: not worth a second code path (docs/decisions.md).
    """

    def __init__(self, transforms: Sequence[nn.Module]) -> None:
        super().__init__()
        if not transforms:
            raise UserError("views: at least one view transform is needed")
        self.transforms = nn.ModuleList(transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [t(images) for t in self.transforms]


def _per_view(value: float | Sequence[float]) -> Sequence[float]:
    return (float(value), float(value)) if isinstance(value, int | float) else value


def symmetric_views(n_views: int = 2, **knobs: Any) -> MultiView:
    """`n_views` views from one pipeline (SimCLR, and the baselines with `n_views: 1`); knobs: `ViewTransform`."""
    if n_views < 1:
        raise UserError(f"views.n_views must be >= 1, got {n_views}")
    return MultiView([ViewTransform(**knobs) for _ in range(n_views)])


def asymmetric_views(
    blur_prob: float | Sequence[float] = (1.0, 0.1),
    solarize_prob: float | Sequence[float] = (0.0, 0.2),
    **knobs: Any,
) -> MultiView:
    """Two views that differ in blur and solarize probabilities (BYOL); other knobs as `ViewTransform`. A single
    number for `blur_prob` or `solarize_prob` applies to both views (a study-level `pretrain.views` knob)."""
    blur_prob, solarize_prob = _per_view(blur_prob), _per_view(solarize_prob)
    if len(blur_prob) != 2 or len(solarize_prob) != 2:
        raise UserError("views.blur_prob and views.solarize_prob need one value per view (two)")
    return MultiView([
        ViewTransform(blur_prob=b, solarize_prob=s, **knobs)
        for b, s in zip(blur_prob, solarize_prob, strict=True)
    ])


def multi_crop_views(
    crop_size: int = 32,
    min_scale: float = 0.4,
    n_local: int = 6,
    local_size: int = 16,
    local_scale: Sequence[float] = (0.05, 0.4),
    blur_prob: float | Sequence[float] = (1.0, 0.1),
    solarize_prob: float | Sequence[float] = (0.0, 0.2),
    local_blur_prob: float = 0.5,
    **knobs: Any,
) -> MultiView:
    """2 global crops (`crop_size`, scale [min_scale, 1], asymmetric blur/solarize) + `n_local` local crops
    (`local_size`, scale `local_scale`); other knobs (colour jitter, gray, flip) as `ViewTransform`. A single number
    for `blur_prob` applies to every crop, local ones included."""
    if n_local < 0:
        raise UserError(f"views.n_local must be >= 0, got {n_local}")
    if len(local_scale) != 2:
        raise UserError(f"views.local_scale must be [min, max], got {list(local_scale)}")
    if isinstance(blur_prob, int | float):  # one number (a study-level knob) also sets the local crops' blur
        local_blur_prob = float(blur_prob)
    global_views = asymmetric_views(blur_prob, solarize_prob, crop_size=crop_size, min_scale=min_scale, **knobs)
    local_views = [
        ViewTransform(crop_size=local_size, min_scale=local_scale[0], max_scale=local_scale[1],
                      blur_prob=local_blur_prob, **knobs)
        for _ in range(n_local)
    ]
    return MultiView([*global_views.transforms, *local_views])
