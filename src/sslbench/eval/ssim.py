"""Structural similarity (SSIM) between each corrupted image and its own clean image (the corrupt stage
tabulates and plots it per corruption and severity, a measure of how strong each corruption is).

SSIM (Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP 2004,
https://doi.org/10.1109/TIP.2003.819861), with the local statistics of scikit-image's default
`skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=255)`:

    SSIM(x, y) = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),  C1 = (0.01 L)², C2 = (0.03 L)²

with μ, σ from a 7x7 uniform window (sample covariance, N/(N−1)), averaged over the map without its 3-pixel border
and over the channels. Hand-written over a whole batch because scikit-image's per-image call costs ~1 ms of Python
overhead at 32 px (19 s for 95 sets x 200 images); the tests check it equals scikit-image to 1e-12.

Pairing is by source index, never by loader order: `paired_ssim` takes each set's `index` and matches them.
"""

from __future__ import annotations

import numpy as np

WIN_SIZE = 7
K1, K2 = 0.01, 0.03


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """SSIM of each pair of images: a, b uint8 or float (N, H, W, C), or a single (H, W, C) pair; returns (N,).

    Raises:
        ValueError: shapes differ, or images smaller than the 7x7 window.
    """
    from scipy.ndimage import uniform_filter

    a, b = np.asarray(a), np.asarray(b)
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two (N, H, W, C) batches of one shape, got {a.shape} and {b.shape}")
    if min(a.shape[1:3]) < WIN_SIZE:
        raise ValueError(f"SSIM needs images of at least {WIN_SIZE}x{WIN_SIZE} px, got {a.shape[1:3]}")
    x, y = a.astype(np.float64), b.astype(np.float64)

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
    return s[:, pad:-pad, pad:-pad, :].mean(axis=(1, 2, 3))


def paired_ssim(
    clean: np.ndarray, clean_index: np.ndarray, corrupted: np.ndarray, corrupted_index: np.ndarray,
    data_range: float = 255.0,
) -> np.ndarray:
    """SSIM of each corrupted image against the clean image with the same source index; returns (len(corrupted),).

    Args:
        clean: (M, H, W, C) clean images with their source indices `clean_index` (M,), in any order.
        corrupted: (N, H, W, C) corrupted images with their source indices `corrupted_index` (N,), in any order.

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
    return ssim(np.asarray(clean)[order[pos]], corrupted, data_range)

