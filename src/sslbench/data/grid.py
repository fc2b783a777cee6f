"""A PNG grid of samples per class, so that a person can see the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslbench.io import atomic_path


def sample_grid(
    images: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, per_class: int = 8, title: str = ""
) -> None:
    """Write a grid: one row per class (up to 20 classes), `per_class` random-but-fixed samples per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    shown = list(range(min(len(classes), 20)))
    fig, axes = plt.subplots(len(shown), per_class, figsize=(per_class * 0.8, len(shown) * 0.8 + 0.4), squeeze=False)
    for row, c in enumerate(shown):
        members = np.flatnonzero(labels == c)
        picks: np.ndarray | list[int] = (
            rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        )
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(picks):
                ax.imshow(images[picks[col]], interpolation="nearest")
        axes[row, 0].set_title(classes[c], fontsize=7, loc="left", pad=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
