"""The mean-corruption-error family (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", ICLR 2019, https://arxiv.org/abs/1903.12261).

With E_{c,s} the top-1 error on corruption c at severity s and E_clean the clean error, against a reference model:

    CE_c          = Σ_s E_{c,s} / Σ_s E^ref_{c,s}
    relative CE_c = Σ_s (E_{c,s} − E_clean) / Σ_s (E^ref_{c,s} − E^ref_clean)
    mCE           = mean of CE_c over the 15 benchmark corruptions (relative mCE likewise)

The reference is AlexNet on ImageNet (severity-averaged errors from google-research/augmix `imagenet.py`) and, on
any other dataset, the study's own `supervised` model (there is no AlexNet there); it is always named in the
output. Unnormalised numbers are reported too: the mean error over the 15 corruptions x severities (the CIFAR-10-C
convention, 100 − mean accuracy) and the "mean error (19)" of Chhipa et al. 2023 (arXiv:2308.02525) over all 19
corruptions.

All errors here are fractions in [0, 1]; CE values are ratios (mCE 0.767 is the "76.7" of the papers). A quantity
whose inputs are missing (a corruption not in the study) or undefined (a reference that does not degrade, so a
non-positive denominator) is NaN, which the metrics writer stores as null.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sslbench.data.corruption_names import COMMON, CORRUPTION_GROUPS, CORRUPTIONS, SEVERITIES
from sslbench.errors import UserError

ErrorTable = Mapping[str, Mapping[int, float]]  # corruption -> severity -> top-1 error

# AlexNet's ImageNet-C top-1 errors, averaged over the 5 severities (google-research/augmix `imagenet.py`,
# the constants used by hendrycks/robustness to normalise CE).
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
# AlexNet's clean ImageNet top-1 error, needed by relative CE only: torchvision's AlexNet (the model evaluated in
# hendrycks/robustness) has top-1 accuracy 56.522%; the paper's Table 1 rounds its error to 43.5.
ALEXNET_CLEAN_ERROR = 0.43478


@dataclass(frozen=True)
class Reference:
    """The model that normalises CE: its name, its errors per (corruption, severity) and its clean error."""

    name: str
    errors: dict[str, dict[int, float]]
    clean_error: float


def alexnet_reference(severities: Iterable[int] = SEVERITIES) -> Reference:
    """AlexNet on ImageNet-C. Only severity averages are published, so Σ_s E^ref_{c,s} = 5·average is exact only
    when all five severities are evaluated; each severity is given the average.

    Raises:
        UserError: `severities` is not the full 1..5.
    """
    if sorted(severities) != list(SEVERITIES):
        raise UserError(
            "the AlexNet reference errors are averages over severities 1..5; evaluate all five severities "
            "(corrupt.severities=all) or use the supervised reference (robustness.reference=supervised)"
        )
    errors = {c: dict.fromkeys(SEVERITIES, e) for c, e in ALEXNET_ERRORS.items()}
    return Reference("alexnet", errors, ALEXNET_CLEAN_ERROR)


def top1_error(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of wrong predictions, 1 − top-1 accuracy."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or len(labels) == 0:
        raise ValueError(f"need equally long, non-empty predictions and labels, got {predictions.shape} {labels.shape}")
    return float(np.mean(predictions != labels))


def _reference_sum(errors: Mapping[int, float], reference: Mapping[int, float], offset: float = 0.0) -> float:
    missing = set(errors) - set(reference)
    if missing:
        raise ValueError(f"the reference lacks severities {sorted(missing)}")
    return float(sum(reference[s] - offset for s in errors))


def corruption_error(errors: Mapping[int, float], reference: Mapping[int, float]) -> float:
    """CE_c = Σ_s E_{c,s} / Σ_s E^ref_{c,s}, over the severities in `errors`; NaN if the reference sum is 0."""
    if not errors:
        return math.nan
    denominator = _reference_sum(errors, reference)
    return float(sum(errors.values()) / denominator) if denominator > 0 else math.nan


def relative_corruption_error(
    errors: Mapping[int, float], clean_error: float, reference: Mapping[int, float], reference_clean_error: float
) -> float:
    """Relative CE_c = Σ_s (E_{c,s} − E_clean) / Σ_s (E^ref_{c,s} − E^ref_clean).

    NaN when the reference does not degrade under c (denominator ≤ 0): the ratio has no meaning there.
    """
    if not errors:
        return math.nan
    denominator = _reference_sum(errors, reference, reference_clean_error)
    numerator = sum(e - clean_error for e in errors.values())
    return float(numerator / denominator) if denominator > 0 else math.nan


def _mean_over(values: Mapping[str, float], corruptions: Sequence[str]) -> float:
    if not corruptions or any(c not in values for c in corruptions):
        return math.nan
    return float(np.mean([values[c] for c in corruptions]))


def mean_corruption_error(errors: ErrorTable, reference: Reference, corruptions: Sequence[str] = COMMON) -> float:
    """mCE: mean of CE_c over `corruptions` (default the 15 benchmark ones); NaN if one is missing."""
    ces = {c: corruption_error(errors[c], reference.errors[c]) for c in corruptions if c in errors
           and c in reference.errors}
    return _mean_over(ces, corruptions)


def relative_mean_corruption_error(
    errors: ErrorTable, clean_error: float, reference: Reference, corruptions: Sequence[str] = COMMON
) -> float:
    """Relative mCE: mean of relative CE_c over `corruptions`; NaN if one is missing or undefined."""
    ces = {
        c: relative_corruption_error(errors[c], clean_error, reference.errors[c], reference.clean_error)
        for c in corruptions
        if c in errors and c in reference.errors
    }
    return _mean_over(ces, corruptions)


def mean_error(errors: ErrorTable, corruptions: Sequence[str]) -> float:
    """Unnormalised mean of E_{c,s} over `corruptions` x their severities; NaN if a corruption is missing."""
    if not corruptions or any(c not in errors or not errors[c] for c in corruptions):
        return math.nan
    return float(np.mean([e for c in corruptions for e in errors[c].values()]))


def robustness_metrics(errors: ErrorTable, clean_error: float, reference: Reference) -> dict[str, float | str]:
    """Every robustness number as flat `robustness/...` metrics (fractions; CE values are ratios).

    Keys: `reference` (name), `clean_error`, `reference_clean_error`, `mce` and `relative_mce` (15, normalised),
    `mean_error_15` (unnormalised, CIFAR-10-C convention), `mean_error_19` (the number of Chhipa et al. 2023), and per
    corruption `error/<c>` (severity mean), `ce/<c>`, `relative_ce/<c>` (where the reference covers c), per group
    `group/<g>/error` (mean over those of its corruptions in the study x severities) and `group/<g>/ce` (mean CE,
    where the reference covers the whole group).
    """
    unknown = set(errors) - set(CORRUPTIONS)
    if unknown:
        raise ValueError(f"unknown corruptions {sorted(unknown)}")
    out: dict[str, float | str] = {
        "robustness/reference": reference.name,
        "robustness/clean_error": float(clean_error),
        "robustness/reference_clean_error": float(reference.clean_error),
        "robustness/mce": mean_corruption_error(errors, reference),
        "robustness/relative_mce": relative_mean_corruption_error(errors, clean_error, reference),
        "robustness/mean_error_15": mean_error(errors, COMMON),
        "robustness/mean_error_19": mean_error(errors, CORRUPTIONS),
    }
    ces: dict[str, float] = {}
    for c in CORRUPTIONS:
        if c not in errors:
            continue
        out[f"robustness/error/{c}"] = float(np.mean(list(errors[c].values())))
        if c in reference.errors:
            ces[c] = corruption_error(errors[c], reference.errors[c])
            out[f"robustness/ce/{c}"] = ces[c]
            out[f"robustness/relative_ce/{c}"] = relative_corruption_error(
                errors[c], clean_error, reference.errors[c], reference.clean_error
            )
    for group, members in CORRUPTION_GROUPS.items():
        present = [c for c in members if c in errors]
        if not present:
            continue
        out[f"robustness/group/{group}/error"] = mean_error(errors, present)
        if all(c in ces for c in members):
            out[f"robustness/group/{group}/ce"] = _mean_over(ces, members)
    return out
