"""OOD detection metrics with a stated positive class.

Convention (`CONVENTION = "ood_positive"`, the one of OpenOOD v1.5 and pytorch-ood; the ODIN paper takes ID as
positive instead). Every score given to these functions is an *in-distribution score*: higher = more
in-distribution. A sample is flagged OOD when its score is at or below a threshold t, so with OOD as the positive
class, for each threshold t:

    TPR(t) = #{OOD samples with score <= t} / #OOD      (OOD correctly flagged)
    FPR(t) = #{ID  samples with score <= t} / #ID       (ID wrongly flagged)

- `auroc`: area under that ROC curve = P(score_OOD < score_ID) + ½ P(score_OOD = score_ID) (ties count one half).
  It is symmetric in the convention: taking ID as positive gives the same number.
- `aupr_out`: average precision with OOD positive, samples ranked by −score.
- `aupr_in`: average precision with ID positive, samples ranked by score.
  Both are the step-wise sum Σ_k (R_k − R_{k−1}) P_k of scikit-learn's `average_precision_score` (one point per
  distinct threshold, so tied scores form one step). OpenOOD instead integrates the PR curve with the trapezoid rule
  (`sklearn.metrics.auc(recall, precision)`), which is slightly optimistic; values can differ in the 2nd decimal on
  small sets.
- `fpr95`: FPR@95TPR = the fraction of ID samples flagged OOD at the threshold where 95% of the OOD samples are
  flagged, i.e. min { FPR(t) : TPR(t) >= 0.95 }. This is OpenOOD v1.5's definition (`auc_and_fpr_recall`:
  `roc_curve(ood_indicator, -conf)`, first point with tpr >= 0.95). OpenOOD v1.0 and many older papers used the
  ID-positive reading instead (FPR on OOD at 95% of ID retained); the two differ, and ours is the v1.5 one.
  We evaluate every distinct threshold; OpenOOD reads the curve scikit-learn returns with `drop_intermediate=True`,
  which can skip the exact crossing on collinear stretches and then reports a higher FPR.

Hand-written rather than calling scikit-learn per metric: one sort yields all four metrics and the ROC curve under
one convention. `tests/eval/test_ood_metrics.py` cross-checks every number against `roc_auc_score`,
`average_precision_score` and `roc_curve`, including ties, all-equal scores and tiny sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONVENTION = "ood_positive"
TPR_LEVEL = 0.95
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def _check(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s_id = np.asarray(id_scores, dtype=np.float64).reshape(-1)
    s_ood = np.asarray(ood_scores, dtype=np.float64).reshape(-1)
    if len(s_id) == 0 or len(s_ood) == 0:
        raise ValueError(f"OOD metrics need at least one ID and one OOD score (got {len(s_id)} ID, {len(s_ood)} OOD)")
    if not (np.isfinite(s_id).all() and np.isfinite(s_ood).all()):
        raise ValueError("OOD metrics need finite scores; got NaN or inf")
    return s_id, s_ood


def _counts(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (OOD, ID) counts flagged OOD at each distinct threshold, lowest score first.

    Returns `(tps, fps)`, each (T,) for the T distinct score values t_1 < ... < t_T: tps[i] = #{OOD <= t_i},
    fps[i] = #{ID <= t_i}.
    """
    s_id, s_ood = _check(id_scores, ood_scores)
    scores = np.concatenate([s_ood, s_id])
    is_ood = np.concatenate([np.ones(len(s_ood)), np.zeros(len(s_id))])
    order = np.argsort(scores, kind="mergesort")
    scores, is_ood = scores[order], is_ood[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(is_ood)[last_of_group]
    fps = np.cumsum(1.0 - is_ood)[last_of_group]
    return tps, fps


def roc_curve_ood(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve with OOD positive: `(fpr, tpr)`, each (T + 1,), starting at (0, 0), one point per distinct
    threshold (no point dropped). Tied ID/OOD scores give a diagonal segment."""
    tps, fps = _counts(id_scores, ood_scores)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def _average_precision(tp: np.ndarray, fp: np.ndarray) -> float:
    """Σ_k (R_k − R_{k−1}) P_k over cumulative true/false positive counts at descending thresholds."""
    recall = np.r_[0.0, tp / tp[-1]]
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(recall) * precision))


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR@95TPR of one ID/OOD pair, OOD positive (see the module docstring).

    Args:
        id_scores: (N_id,) scores of in-distribution samples, higher = more in-distribution.
        ood_scores: (N_ood,) scores of OOD samples, same orientation.
    Returns:
        `{"auroc", "aupr_in", "aupr_out", "fpr95"}`, each in [0, 1].
    Raises:
        ValueError: an empty side or a non-finite score.
    """
    tps, fps = _counts(id_scores, ood_scores)
    n_ood, n_id = tps[-1], fps[-1]
    tpr, fpr = np.r_[0.0, tps / n_ood], np.r_[0.0, fps / n_id]
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids: ties give a diagonal, i.e. ½
    # ID positive, ranked by score descending: thresholds from the highest score down, counts of samples above each
    id_above = n_id - np.r_[0.0, fps[:-1]]
    ood_above = n_ood - np.r_[0.0, tps[:-1]]
    return {
        "auroc": auroc,
        "aupr_in": _average_precision(id_above[::-1], ood_above[::-1]),
        "aupr_out": _average_precision(tps, fps),
        "fpr95": float(fpr[np.argmax(tpr >= TPR_LEVEL)]),
    }


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """AUROC alone (OOD positive; equal to the ID-positive AUROC)."""
    return ood_metrics(id_scores, ood_scores)["auroc"]


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Evaluate a ROC curve (as from `roc_curve_ood`) at the FPR values `grid`.

    At an FPR where the curve jumps vertically the upper point is taken; between points it is linear (the
    straight segment that ties produce).
    """
    fpr, tpr, grid = np.asarray(fpr), np.asarray(tpr), np.asarray(grid, dtype=np.float64)
    i = np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1)
    j = np.minimum(i + 1, len(fpr) - 1)
    span = fpr[j] - fpr[i]
    w = np.where(span > 0, (grid - fpr[i]) / np.where(span > 0, span, 1.0), 0.0)
    return tpr[i] + w * (tpr[j] - tpr[i])


def mean_roc(curves: Sequence[tuple[np.ndarray, np.ndarray]], n_points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Vertical average of several ROC curves on a common FPR grid of `n_points` values in [0, 1].

    A group's metrics are the means of its sets' metrics (as OpenOOD reports near/far), so its curve is the
    vertical (TPR) average of its sets' curves, whose area is the mean AUROC up to the grid's resolution.
    """
    if not curves:
        raise ValueError("mean_roc needs at least one curve")
    grid = np.linspace(0.0, 1.0, n_points)
    return grid, np.mean([tpr_at_fpr(f, t, grid) for f, t in curves], axis=0)
