"""Structural similarity (SSIM) between each corrupted image and its own clean image (the corrupt stage
tabulates and plots it per corruption and severity, a measure of how strong each corruption is).

SSIM (Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP 2004,
https://doi.org/10.1109/TIP.2003.819861), with the local statistics of scikit-image's default
`skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=255)`:

    SSIM(x, y) = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),  C1 = (0.01 L)², C2 = (0.03 L)²

with μ, σ from a 7x7 uniform window (sample covariance, N/(N−1)), averaged over the map without its 3-pixel border
and over the channels. Hand-written over a whole batch because scikit-image's per-image call costs ~1 ms of Python
overhead at 32 px (19 s for 95 sets x 200 images); the tests check it equals scikit-image to 1e-12.

Memory: the float64 maps cost ~13 copies of the images (82 bytes per pixel value; a 50,000-image 224-px ImageNet-C
set would need ~570 GiB at once), so the images are processed in batches of at most `BATCH_BYTES` of working memory;
each image's value does not depend on the batch it is in. On a GPU (`device="cuda"`, or `"auto"` where one is
present) the same float64 arithmetic runs in torch, with 7x7 average pooling as the window (equal to the CPU path to
rounding, ~1e-15).

Pairing is by source index, never by loader order: `paired_ssim` takes each set's `index` and matches them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WIN_SIZE = 7
K1, K2 = 0.01, 0.03
BATCH_BYTES = 256 << 20  # float64 working memory of one batch of images
WORK_COPIES = 13  # float64 arrays of the batch's size alive at once in `_ssim_numpy`
NVIDIA_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


def resolve_device(device: str = "auto") -> str:
    """`auto` -> `cuda` where torch sees a CUDA device, else `cpu`. torch is imported only where an NVIDIA driver is
    installed, so the CPU-only corrupt stage does not pay its import."""
    if device != "auto":
        return device
    if not any(Path(p).exists() for p in NVIDIA_MARKERS):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def batch_images(shape: tuple[int, ...], batch_bytes: int = BATCH_BYTES) -> int:
    """How many images of `shape` ((H, W, C) or (N, H, W, C)) one batch holds within `batch_bytes` of float64 work."""
    per_image = int(np.prod(shape[-3:])) * 8 * WORK_COPIES
    return max(1, batch_bytes // max(1, per_image))


def _ssim_numpy(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    x, y = x.astype(np.float64), y.astype(np.float64)

    def mean(z: np.ndarray) -> np.ndarray:
        return uniform_filter(z, size=(1, WIN_SIZE, WIN_SIZE, 1))

    norm = WIN_SIZE**2 / (WIN_SIZE**2 - 1)  # sample covariance
    ux, uy = mean(x), mean(y)
    vx = norm * (mean(x * x) - ux * ux)
    vy = norm * (mean(y * y) - uy * uy)
    vxy = norm * (mean(x * y) - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (WIN_SIZE - 1) // 2
    return np.asarray(s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3)))


def _ssim_torch(x: np.ndarray, y: np.ndarray, data_range: float, device: str) -> np.ndarray:
    """The same statistics in torch float64 on `device`: a 7x7 average pool without padding is the window mean
    at every position the border crop keeps."""
    import torch
    from torch.nn import functional as F

    n, h, w, c = x.shape

    def planes(z: np.ndarray) -> Any:  # (N, H, W, C) -> (N * C, 1, H, W) float64
        t = torch.from_numpy(np.ascontiguousarray(z)).to(device).to(torch.float64)
        return t.permute(0, 3, 1, 2).reshape(n * c, 1, h, w)

    def mean(z: Any) -> Any:
        return F.avg_pool2d(z, WIN_SIZE, stride=1)

    tx, ty = planes(x), planes(y)
    norm = WIN_SIZE**2 / (WIN_SIZE**2 - 1)
    ux, uy = mean(tx), mean(ty)
    vx = norm * (mean(tx * tx) - ux * ux)
    vy = norm * (mean(ty * ty) - uy * uy)
    vxy = norm * (mean(tx * ty) - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return np.asarray(s.reshape(n, -1).mean(1).cpu().numpy())


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, *, device: str = "cpu",
         batch_bytes: int = BATCH_BYTES) -> np.ndarray:
    """SSIM of each pair of images: a, b uint8 or float (N, H, W, C), or a single (H, W, C) pair; returns (N,).

    Computed in batches of `batch_images(a.shape, batch_bytes)` images on `device` (`cpu`, `cuda` or `auto`).

    Raises:
        ValueError: shapes differ, or images smaller than the 7x7 window.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two (N, H, W, C) batches of one shape, got {a.shape} and {b.shape}")
    if min(a.shape[1:3]) < WIN_SIZE:
        raise ValueError(f"SSIM needs images of at least {WIN_SIZE}x{WIN_SIZE} px, got {a.shape[1:3]}")
    device = resolve_device(device)
    step = batch_images(a.shape, batch_bytes)
    out = np.empty(len(a))
    for i in range(0, len(a), step):
        x, y = a[i : i + step], b[i : i + step]
        out[i : i + step] = _ssim_numpy(x, y, data_range) if device == "cpu" else _ssim_torch(x, y, data_range,
                                                                                               device)
    return out


def pair_rows(clean_index: np.ndarray, corrupted_index: np.ndarray) -> np.ndarray:
    """The row of the clean image of each corrupted image (matched by source index).

    Raises:
        ValueError: duplicated clean indices, or a corrupted index with no clean image.
    """
    clean_index = np.asarray(clean_index, np.int64)
    corrupted_index = np.asarray(corrupted_index, np.int64)
    if len(np.unique(clean_index)) != len(clean_index):
        raise ValueError("clean_index has duplicates; pairing by index needs unique indices")
    order = np.argsort(clean_index)
    pos = np.searchsorted(clean_index[order], corrupted_index)
    pos = np.clip(pos, 0, max(len(order) - 1, 0))
    found = len(order) > 0 and np.array_equal(clean_index[order][pos], corrupted_index)
    if not found:
        missing = sorted(set(corrupted_index.tolist()) - set(clean_index.tolist()))[:5]
        raise ValueError(f"corrupted images with indices {missing} have no clean image")
    return np.asarray(order[pos])


def paired_ssim(
    clean: np.ndarray, clean_index: np.ndarray, corrupted: np.ndarray, corrupted_index: np.ndarray,
    data_range: float = 255.0, *, device: str = "cpu", batch_bytes: int = BATCH_BYTES,
) -> np.ndarray:
    """SSIM of each corrupted image against the clean image with the same source index; returns (len(corrupted),).

    Args:
        clean: (M, H, W, C) clean images with their source indices `clean_index` (M,), in any order (an array or a
            memory map: only each batch's clean images are gathered).
        corrupted: (N, H, W, C) corrupted images with their source indices `corrupted_index` (N,), in any order.
        device, batch_bytes: see `ssim`.

    Raises:
        ValueError: duplicated clean indices, or a corrupted index with no clean image.
    """
    rows = pair_rows(clean_index, corrupted_index)
    corrupted = np.asarray(corrupted)
    device = resolve_device(device)
    step = batch_images(corrupted.shape, batch_bytes)
    out = np.empty(len(corrupted))
    for i in range(0, len(corrupted), step):
        out[i : i + step] = ssim(np.asarray(clean[rows[i : i + step]]), corrupted[i : i + step], data_range,
                                 device=device, batch_bytes=batch_bytes)
    return out
