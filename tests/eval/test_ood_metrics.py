"""OOD metrics: OOD-positive convention, cross-checked against scikit-learn (ties, all-equal scores, tiny sets)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from sslbench.eval.ood_metrics import CONVENTION, mean_roc, ood_metrics, roc_curve_ood, tpr_at_fpr


def sklearn_reference(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """The same four numbers from scikit-learn, OOD = positive class (label 1), OOD-ness = −score."""
    y_ood = np.r_[np.zeros(len(id_scores)), np.ones(len(ood_scores))]
    s = np.r_[id_scores, ood_scores].astype(np.float64)
    fpr, tpr, _ = roc_curve(y_ood, -s, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(y_ood, -s),
        "aupr_in": average_precision_score(1 - y_ood, s),
        "aupr_out": average_precision_score(y_ood, -s),
        "fpr95": fpr[np.argmax(tpr >= 0.95)],
    }


@pytest.mark.parametrize("n_id,n_ood,levels", [(2, 2, 3), (3, 1, 2), (7, 5, 4), (40, 25, 6), (200, 150, 1000)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_with_ties(n_id: int, n_ood: int, levels: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct levels -> many ties across and within ID/OOD; OOD slightly lower (more OOD-like) on average
    id_scores = rng.integers(0, levels, n_id).astype(float)
    ood_scores = rng.integers(0, levels, n_ood).astype(float) - 0.5 * (seed % 2)
    ours, ref = ood_metrics(id_scores, ood_scores), sklearn_reference(id_scores, ood_scores)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


def test_all_equal_scores() -> None:
    ours = ood_metrics(np.full(6, 0.3), np.full(4, 0.3))
    ref = sklearn_reference(np.full(6, 0.3), np.full(4, 0.3))
    assert ours == pytest.approx(ref)
    # one threshold: every sample flagged at once
    assert ours == pytest.approx({"auroc": 0.5, "aupr_in": 0.6, "aupr_out": 0.4, "fpr95": 1.0})


def test_tiny_hand_computed() -> None:
    # ID scores {3, 1}, OOD {2, 0}: pairs (ood < id): (2<3), (0<3), (0<1) -> 3 of 4
    ours = ood_metrics(np.array([3.0, 1.0]), np.array([2.0, 0.0]))
    assert ours["auroc"] == pytest.approx(0.75)
    # OOD positive ranked by -score: 0(O) 1(I) 2(O) 3(I): precision at the OOD hits 1, 2/3 -> AP = (1 + 2/3)/2
    assert ours["aupr_out"] == pytest.approx((1 + 2 / 3) / 2)
    # ID positive ranked by score: 3(I) 2(O) 1(I) 0(O): AP = (1 + 2/3)/2
    assert ours["aupr_in"] == pytest.approx((1 + 2 / 3) / 2)
    # 95% of OOD flagged needs threshold 2 -> ID at 1 is flagged too: FPR = 1/2
    assert ours["fpr95"] == pytest.approx(0.5)
    assert ood_metrics(np.array([1.0]), np.array([0.0]))["auroc"] == 1.0


def test_perfect_and_reversed() -> None:
    good = ood_metrics(np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0]))
    assert good == pytest.approx({"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0})
    bad = ood_metrics(np.array([1.0, 2.0]), np.array([5.0, 6.0, 7.0]))
    assert bad["auroc"] == 0.0 and bad["fpr95"] == 1.0


def test_fpr95_is_exact_min_over_thresholds() -> None:
    # every threshold ties one ID with one OOD sample: the ROC curve is the diagonal; 95% TPR is reached at FPR 0.95.
    # scikit-learn's default drop_intermediate=True (read by OpenOOD) keeps only the end points and would give 1.0.
    s = np.arange(20.0)
    assert ood_metrics(s, s)["fpr95"] == pytest.approx(0.95)
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(20), np.ones(20)], -np.r_[s, s])
    assert fpr[np.argmax(tpr >= 0.95)] == 1.0


def test_orientation_is_in_distribution_high() -> None:
    id_scores, ood_scores = np.array([0.9, 0.8, 0.95]), np.array([0.1, 0.2])
    assert ood_metrics(id_scores, ood_scores)["auroc"] == 1.0
    assert ood_metrics(-id_scores, -ood_scores)["auroc"] == 0.0
    assert CONVENTION == "ood_positive"


def test_roc_curve_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    id_scores, ood_scores = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 20).astype(float)
    fpr, tpr = roc_curve_ood(id_scores, ood_scores)
    y = np.r_[np.zeros(30), np.ones(20)]
    ref_fpr, ref_tpr, _ = roc_curve(y, -np.r_[id_scores, ood_scores], drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)


def test_tpr_at_fpr_and_mean_roc() -> None:
    fpr, tpr = np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.6, 0.8, 1.0])
    # vertical jump at 0: upper point; linear between points
    np.testing.assert_allclose(tpr_at_fpr(fpr, tpr, np.array([0.0, 0.25, 0.5, 1.0])), [0.6, 0.7, 0.8, 1.0])
    rng = np.random.default_rng(0)
    id_scores = rng.normal(1.0, 1.0, 300)
    sets = [rng.normal(0.0, 1.0, 200), rng.normal(-1.0, 1.0, 150)]
    grid, mean_tpr = mean_roc([roc_curve_ood(id_scores, s) for s in sets], n_points=200)
    assert len(grid) == 200 and grid[0] == 0.0 and grid[-1] == 1.0
    assert np.all(np.diff(mean_tpr) >= -1e-12)
    area = float(np.sum(np.diff(grid) * (mean_tpr[1:] + mean_tpr[:-1]) / 2))
    assert area == pytest.approx(np.mean([ood_metrics(id_scores, s)["auroc"] for s in sets]), abs=5e-3)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ood_metrics(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        ood_metrics(np.array([1.0, np.nan]), np.array([1.0]))
