"""The 19 ImageNet-C corruptions, their groups and severities, defined once for the whole package.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019
(https://arxiv.org/abs/1903.12261): 15 benchmark corruptions in four groups (noise, blur, weather, digital), the
ones the mean corruption error (mCE) averages over, plus 4 held-out "extra" corruptions, each at severities 1..5.
The order is ImageNet-C's (imagecorruptions' `corruption_tuple`); generated sets derive their per-image seeds from
a corruption's position in it, so it must not change.

Plain Python with no imports: the report stage reads these names without loading the corruption code.
"""

from __future__ import annotations

CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
CORRUPTIONS: tuple[str, ...] = tuple(c for group in CORRUPTION_GROUPS.values() for c in group)
# the 15 benchmark ("common") corruptions of mCE: every group but `extra`, i.e. the first 15 in ImageNet-C order
COMMON: tuple[str, ...] = tuple(c for g, cs in CORRUPTION_GROUPS.items() if g != "extra" for c in cs)
EXTRA: tuple[str, ...] = CORRUPTION_GROUPS["extra"]
GROUP_OF: dict[str, str] = {c: g for g, cs in CORRUPTION_GROUPS.items() for c in cs}
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def corruption_group(name: str) -> str:
    """The group of a corruption, "other" for a name outside the 19."""
    return GROUP_OF.get(name, "other")
