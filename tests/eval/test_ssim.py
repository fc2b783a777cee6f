"""SSIM: equals scikit-image's, is 1 for an image with itself, pairs by index."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from sslbench.eval.ssim import paired_ssim, ssim


def _images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    noisy = np.clip(clean.astype(int) + rng.integers(-60, 60, clean.shape), 0, 255).astype(np.uint8)
    return clean, noisy


def test_ssim_of_an_image_with_itself_is_one() -> None:
    clean, _ = _images(3)
    np.testing.assert_allclose(ssim(clean, clean), 1.0, atol=1e-12)
    assert ssim(clean[0], clean[0]).shape == (1,)


def test_ssim_equals_scikit_image() -> None:
    clean, noisy = _images(5)
    ours = ssim(clean, noisy)
    theirs = [structural_similarity(a, b, channel_axis=-1, data_range=255) for a, b in zip(clean, noisy, strict=True)]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert (ours < 0.99).all()


def test_paired_ssim_pairs_by_index_not_order() -> None:
    clean, noisy = _images(6)
    index = np.array([10, 11, 12, 13, 14, 15])
    expected = ssim(clean, noisy)
    shuffle = np.array([3, 0, 5, 1, 4, 2])
    # clean in one order, corrupted in another: each corrupted image still meets its own clean image
    got = paired_ssim(clean[shuffle], index[shuffle], noisy[::-1], index[::-1])
    np.testing.assert_allclose(got, expected[::-1], atol=1e-12)
    # a corrupted subset of the clean images
    np.testing.assert_allclose(paired_ssim(clean, index, noisy[[4]], index[[4]]), expected[[4]])
    with pytest.raises(ValueError, match=r"indices \[99\] have no clean image"):
        paired_ssim(clean, index, noisy[:1], np.array([99]))
    with pytest.raises(ValueError, match="duplicates"):
        paired_ssim(clean[:2], np.array([1, 1]), noisy[:1], np.array([1]))
