"""A PNG grid of samples per class, so that a person can see the data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sslbench.io import atomic_path


def tile(
    rows: Sequence[Sequence[np.ndarray | None]], gap: int | None = None, row_gap: int | None = None
) -> tuple[np.ndarray, int, int, int]:
    """One uint8 RGB mosaic of equally sized images (H, W, 3), (H, W) or float in [0, 1], row by row, on white,
    `gap` pixels apart (default H // 16, at least 1) and rows `row_gap` apart (default `gap`); None leaves a cell
    blank. Returns (mosaic, H, W, gap); row r starts at r * (H + row_gap).

    The figures of the study draw a mosaic in one matplotlib axes: one axes per small image cost ~1-2 s per figure
    (prepare's sample grids, corrupt's severity grid, each method's Grad-CAM panel).
    """
    first = next(np.asarray(i) for row in rows for i in row if i is not None)
    h, w = first.shape[:2]
    gap = max(1, h // 16) if gap is None else gap
    row_gap = gap if row_gap is None else row_gap
    n_cols = max(len(row) for row in rows)
    mosaic = np.full(((h + row_gap) * len(rows) - row_gap, (w + gap) * n_cols - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            if image is None:
                continue
            a = np.asarray(image)
            if a.dtype != np.uint8:
                a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
            top, left = r * (h + row_gap), c * (w + gap)
            mosaic[top : top + h, left : left + w] = a[..., None] if a.ndim == 2 else a
    return mosaic, h, w, gap


def sample_grid(
    images: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, per_class: int = 8, title: str = ""
) -> None:
    """Write a grid: one row per class (up to 20 classes), `per_class` random-but-fixed samples per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    shown = list(range(min(len(classes), 20)))
    rows = []
    for c in shown:
        members = np.flatnonzero(labels == c)
        picks = [int(i) for i in rng.choice(members, size=min(per_class, len(members)), replace=False)] \
            if len(members) else []
        rows.append([images[i] for i in picks] + [None] * (per_class - len(picks)))
    mosaic, h, _, gap = tile(rows)
    fig, ax = plt.subplots(figsize=(per_class * 0.8 + 1.2, len(shown) * 0.8 + 0.4))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([row * (h + gap) + h / 2 for row in range(len(shown))], [classes[c] for c in shown], fontsize=7)
    ax.set_xticks([])
    ax.tick_params(left=False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
