"""Paper-scale anchor numbers for the report's comparison columns (sources in docs/protocols.md).

These come from published READMEs of the reference systems, at a scale (datasets, backbones, epochs) that the
embedded study does not approach: they are shown **beside** the study's numbers, in columns labelled
"paper-scale anchor (not comparable: ...)", never mixed into them. Every anchor names its source and setting.
All values are percent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AnchorSet:
    """One published column of numbers: `values[method]` in percent, with where and how they were measured."""

    key: str
    title: str  # short column title
    setting: str  # dataset, backbone, budget: why it is not comparable to this study
    source: str  # who published it, with a checkable address
    values: dict[str, float]
    lower_is_better: bool = False

    @property
    def header(self) -> str:
        return f"{self.title} (paper-scale anchor, not comparable: {self.setting})"


TINYIMAGENET_LINEAR = AnchorSet(
    key="tinyimagenet_linear",
    title="TinyImageNet linear top-1",
    setting="TinyImageNet, DISSL repo Table 1, single seed",
    source="YannDubs/Invariant-Self-Supervised-Learning README (DISSL/CISSL Table 1 reproductions)",
    values={"dino": 43.3, "dissl": 45.1, "simclr": 45.2, "cissl": 45.8},
)

CIFAR10_ONLINE_LINEAR = AnchorSet(
    key="cifar10_online_linear",
    title="CIFAR-10 online linear top-1",
    setting="CIFAR-10, ResNet-18, 1000 epochs, online linear probe",
    source="vturrisi/solo-learn README (CIFAR-10 results table)",
    values={
        "simclr": 90.74,
        "simsiam": 90.51,
        "byol": 92.58,
        "barlow_twins": 92.10,
        "swav": 89.17,
        "dino": 89.52,
        "vicreg": 92.07,
    },
)

IMAGENET_C_MEAN_ERROR_19 = AnchorSet(
    key="imagenet_c_mean_error_19",
    title="ImageNet-C mean error (19)",
    setting="ImageNet-C, ResNet-50, all 19 corruptions x 5 severities, unnormalised inputs",
    source=(
        "Chhipa et al., 'Can Self-Supervised Representation Learning Methods Withstand Distribution Shifts "
        "and Corruptions?' (ICCV-W 2023, arXiv:2308.02525), results table"
    ),
    values={
        "simclr": 75.99,
        "simsiam": 75.77,
        "byol": 73.77,
        "barlow_twins": 73.80,
        "swav": 70.46,
        "dino": 71.51,
    },
    lower_is_better=True,
)

ACCURACY_ANCHORS = (TINYIMAGENET_LINEAR, CIFAR10_ONLINE_LINEAR)
ROBUSTNESS_ANCHORS = (IMAGENET_C_MEAN_ERROR_19,)

# Single sanity anchors quoted in the text (not per SSL method).
RESNET50_IMAGENET_MCE = (
    76.7,
    "standard supervised ResNet-50 ImageNet-C mCE (AlexNet-normalised), hendrycks/robustness README",
)
# OpenOOD v1.5, CIFAR-10 in-distribution, supervised ResNet-18 (results/cifar10.csv): score -> (near, far) AUROC.
OPENOOD_CIFAR10_AUROC: dict[str, tuple[float, float]] = {
    "knn": (90.64, 92.96),
    "mahalanobis": (84.20, 89.72),
    "msp": (88.03, 90.73),
}
OPENOOD_SOURCE = "Jingkang50/OpenOOD v1.5 results/cifar10.csv (supervised ResNet-18, CIFAR-10 in-distribution)"


def published_linear(configs: Mapping[str, Mapping[str, Any] | None]) -> AnchorSet | None:
    """The publishers' own linear top-1 of the imported encoders (`methods.<name>.reported` of a `method: published`
    entry, written to `models/<name>/config.yaml`), as one anchor column; None when no entry gives one.

    Not comparable either: each publisher trained its probe on augmented ImageNet crops for up to 100 epochs, where
    the study's probe reads one centre-crop embedding per image (docs/protocols.md)."""
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for method, config in configs.items():
        reported = (config or {}).get("method", {}).get("reported") if "imported" in (config or {}) else None
        top1 = reported.get("linear_top1") if isinstance(reported, Mapping) else None
        if isinstance(top1, int | float) and not isinstance(top1, bool):
            values[method] = float(top1)
            sources[method] = str(reported.get("source") or "source not given")  # type: ignore[union-attr]
    if not values:
        return None
    return AnchorSet(
        key="published_linear",
        title="published linear top-1",
        setting="the publisher's own linear protocol",
        source="; ".join(f"{m}: {s}" for m, s in sources.items()),
        values=values,
    )
