"""SSIM: equals scikit-image's, is 1 for an image with itself, pairs by index."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from sslbench.eval.ssim import BATCH_BYTES, WORK_COPIES, _ssim_torch, batch_images, paired_ssim, resolve_device, ssim


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


def test_batches_do_not_change_any_value() -> None:
    clean, noisy = _images(9, seed=3)
    whole = ssim(clean, noisy)
    assert batch_images(clean.shape, 1) == 1
    np.testing.assert_array_equal(ssim(clean, noisy, batch_bytes=1), whole)  # one image per batch
    index = np.arange(9) + 5
    shuffle = np.random.default_rng(0).permutation(9)
    np.testing.assert_array_equal(paired_ssim(clean[shuffle], index[shuffle], noisy, index, batch_bytes=1), whole)


def test_batch_size_bounds_the_working_memory() -> None:
    assert batch_images((224, 224, 3)) == BATCH_BYTES // (224 * 224 * 3 * 8 * WORK_COPIES)
    assert batch_images((50_000, 224, 224, 3)) == batch_images((224, 224, 3)) >= 1


def test_torch_path_equals_numpy() -> None:
    clean, noisy = _images(4, seed=4)
    np.testing.assert_allclose(_ssim_torch(clean, noisy, 255.0, "cpu"), ssim(clean, noisy), rtol=0, atol=1e-12)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import sslbench.eval.ssim as module

    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(module, "NVIDIA_MARKERS", ())  # no NVIDIA driver: CPU without importing torch
    assert resolve_device("auto") == "cpu"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu() -> None:  # pragma: no cover - GPU only
    clean, noisy = _images(5, seed=5)
    assert resolve_device("auto") == "cuda"
    np.testing.assert_allclose(ssim(clean, noisy, device="cuda"), ssim(clean, noisy), rtol=0, atol=1e-12)
