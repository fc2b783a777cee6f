"""The mCE family on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from sslbench.data.corruptions import COMMON, CORRUPTIONS, EXTRA
from sslbench.errors import UserError
from sslbench.eval.corruption import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERRORS,
    Reference,
    alexnet_reference,
    corruption_error,
    mean_corruption_error,
    mean_error,
    relative_corruption_error,
    relative_mean_corruption_error,
    robustness_metrics,
    top1_error,
)


def test_corruption_error_by_hand() -> None:
    # CE = (0.2 + 0.4) / (0.4 + 0.6) = 0.6
    assert corruption_error({1: 0.2, 2: 0.4}, {1: 0.4, 2: 0.6, 3: 0.9}) == pytest.approx(0.6)
    # relative CE = ((0.2 - 0.1) + (0.4 - 0.1)) / ((0.4 - 0.2) + (0.6 - 0.2)) = 0.4 / 0.6
    assert relative_corruption_error({1: 0.2, 2: 0.4}, 0.1, {1: 0.4, 2: 0.6}, 0.2) == pytest.approx(2 / 3)
    # a reference that does not degrade: relative CE is undefined, not a huge or negative number
    assert math.isnan(relative_corruption_error({1: 0.3}, 0.1, {1: 0.2}, 0.2))
    assert math.isnan(corruption_error({1: 0.3}, {1: 0.0}))
    with pytest.raises(ValueError, match="lacks severities"):
        corruption_error({1: 0.2, 4: 0.3}, {1: 0.4})


def test_alexnet_constants_and_mce() -> None:
    assert list(ALEXNET_ERRORS) == list(COMMON)
    assert ALEXNET_ERRORS["gaussian_noise"] == 0.886428 and ALEXNET_ERRORS["jpeg_compression"] == 0.606500
    ref = alexnet_reference()
    # a model with AlexNet's own errors has mCE 1 and relative mCE 1
    same = {c: dict.fromkeys(range(1, 6), e) for c, e in ALEXNET_ERRORS.items()}
    assert mean_corruption_error(same, ref) == pytest.approx(1.0)
    assert relative_mean_corruption_error(same, ALEXNET_CLEAN_ERROR, ref) == pytest.approx(1.0)
    # every error 0.5: CE_c = 2.5 / (5 a_c); by hand for two corruptions, then the mean over the 15
    flat = {c: dict.fromkeys(range(1, 6), 0.5) for c in COMMON}
    assert corruption_error(flat["brightness"], ref.errors["brightness"]) == pytest.approx(0.5 / 0.564592)
    assert corruption_error(flat["gaussian_noise"], ref.errors["gaussian_noise"]) == pytest.approx(0.5 / 0.886428)
    by_hand = sum(0.5 / a for a in ALEXNET_ERRORS.values()) / 15
    assert mean_corruption_error(flat, ref) == pytest.approx(by_hand)
    # relative: Σ_s (0.5 - 0.25) / Σ_s (a_c - 0.43478)
    rel = sum(0.25 / (a - ALEXNET_CLEAN_ERROR) for a in ALEXNET_ERRORS.values()) / 15
    assert relative_mean_corruption_error(flat, 0.25, ref) == pytest.approx(rel)
    with pytest.raises(UserError, match="averages over severities 1..5"):
        alexnet_reference([1, 2, 3])


def test_mce_needs_all_fifteen() -> None:
    ref = alexnet_reference()
    partial = {c: dict.fromkeys(range(1, 6), 0.5) for c in COMMON[:14]}
    assert math.isnan(mean_corruption_error(partial, ref))
    assert math.isnan(mean_error(partial, COMMON))


def test_mean_errors_by_hand() -> None:
    # corruption k (0-based) has error k/100 at every severity: mean over 15 = 7/100, over 19 = 9/100
    errors = {c: {s: k / 100 for s in (1, 2, 3, 4, 5)} for k, c in enumerate(CORRUPTIONS)}
    assert mean_error(errors, COMMON) == pytest.approx(0.07)
    assert mean_error(errors, CORRUPTIONS) == pytest.approx(0.09)


def test_robustness_metrics_with_a_supervised_reference() -> None:
    errors = {c: {1: 0.3, 2: 0.5} for c in CORRUPTIONS}
    ref_errors = {c: {1: 0.4, 2: 0.6} for c in CORRUPTIONS}
    m = robustness_metrics(errors, 0.1, Reference("supervised", ref_errors, 0.2))
    assert m["robustness/reference"] == "supervised"
    assert m["robustness/mce"] == pytest.approx(0.8)  # (0.3 + 0.5) / (0.4 + 0.6)
    assert m["robustness/relative_mce"] == pytest.approx((0.2 + 0.4) / (0.2 + 0.4))
    assert m["robustness/mean_error_15"] == pytest.approx(0.4)
    assert m["robustness/mean_error_19"] == pytest.approx(0.4)
    assert m["robustness/error/fog"] == pytest.approx(0.4)
    assert m["robustness/group/extra/ce"] == pytest.approx(0.8)
    assert m["robustness/group/noise/error"] == pytest.approx(0.4)
    assert m["robustness/clean_error"] == 0.1 and m["robustness/reference_clean_error"] == 0.2
    assert all(k.startswith("robustness/") for k in m)


def test_robustness_metrics_with_alexnet_leave_extra_unnormalised() -> None:
    errors = {c: dict.fromkeys(range(1, 6), 0.5) for c in CORRUPTIONS}
    m = robustness_metrics(errors, 0.2, alexnet_reference())
    assert m["robustness/reference"] == "alexnet"
    assert not any(f"ce/{c}" in k for c in EXTRA for k in m)  # AlexNet has no errors for the held-out four
    assert "robustness/group/extra/ce" not in m and "robustness/group/extra/error" in m
    assert m["robustness/mean_error_19"] == pytest.approx(0.5)
    assert m["robustness/ce/brightness"] == pytest.approx(0.5 / 0.564592)
    with pytest.raises(ValueError, match="unknown corruptions"):
        robustness_metrics({"fogg": {1: 0.1}}, 0.1, alexnet_reference())


def test_top1_error() -> None:
    import numpy as np

    assert top1_error(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])) == 0.5
    with pytest.raises(ValueError):
        top1_error(np.array([]), np.array([]))
