"""The image panels the stages draw beside their outputs: numbers and arrays in, one PNG out.

- `sample_grid`: samples per class of a prepared split (`prepare`, `reports/prepare/<dataset>_<split>.png`);
- `corruption_grid`: one test image under every corruption and severity (`corrupt`, `reports/corrupt/samples.png`);
- `ssim_table_figure`: SSIM to the clean image against severity (`corrupt`, `reports/corrupt/ssim.png`);
- `gradcam_panel`: Grad-CAM maps of the encoder + linear probe (robustness, `reports/robustness/gradcam/<method>.png`).

The study-level figures of the report stage are in `sslbench.report.figures`; the two modules are kept apart so that
a change to the report's figures does not change the code fingerprint of the stages that draw these panels.
matplotlib (Agg backend) and seaborn are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslbench.io import atomic_path


def tile(
    rows: Sequence[Sequence[np.ndarray | None]], gap: int | None = None, row_gap: int | None = None
) -> tuple[np.ndarray, int, int, int]:
    """One uint8 RGB mosaic of equally sized images (H, W, 3), (H, W) or float in [0, 1], row by row, on white,
    `gap` pixels apart (default H // 16, at least 1) and rows `row_gap` apart (default `gap`); None leaves a cell
    blank. Returns (mosaic, H, W, gap); row r starts at r * (H + row_gap).

    The panels draw a mosaic in one matplotlib axes: one axes per small image cost ~1-2 s per figure (prepare's
    sample grids, corrupt's severity grid, each method's Grad-CAM panel).
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


# ----------------------------------------------------------------------------------------------- data


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


# ----------------------------------------------------------------------------------------------- corruptions


def corruption_grid(
    clean: np.ndarray, corrupted: dict[tuple[str, int], np.ndarray], path: Path, title: str
) -> None:
    """A PNG with one row per corruption: the clean image, then the image at each severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corruptions = list(dict.fromkeys(c for c, _ in corrupted))
    severities = sorted({s for _, s in corrupted})
    mosaic, h, w, gap = tile([[clean, *(corrupted.get((c, s)) for s in severities)] for c in corruptions])
    fig, ax = plt.subplots(figsize=((len(severities) + 1) * 0.9 + 1.6, len(corruptions) * 0.9 + 0.4))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(len(corruptions))], corruptions, fontsize=7)
    ax.set_xticks([col * (w + gap) + w / 2 for col in range(len(severities) + 1)],
                  ["clean", *(f"severity {s}" for s in severities)], fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(left=False, top=False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def ssim_table_figure(rows: list[dict[str, object]], path: str, title: str) -> None:
    """Plot SSIM against severity, one line per corruption, one panel per group (seaborn), as a PNG at `path`.

    `rows` are the records of `reports/corrupt/ssim.csv` (corruption, group, severity, ssim_mean, ...).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(rows)
    groups = list(dict.fromkeys(frame["group"]))
    grid = sns.relplot(
        data=frame, x="severity", y="ssim_mean", hue="corruption", col="group", col_order=groups, kind="line",
        marker="o", height=2.6, aspect=0.9, facet_kws={"sharey": True},
    )
    grid.set(ylim=(min(0.0, float(frame["ssim_mean"].min())), 1.0), xticks=sorted(set(frame["severity"])))
    grid.set_axis_labels("severity", "SSIM to clean (mean)")
    grid.figure.suptitle(title, fontsize=9, y=1.02)
    with atomic_path(path) as tmp:
        grid.figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(grid.figure)


# ----------------------------------------------------------------------------------------------- Grad-CAM


def jet(cam: np.ndarray) -> np.ndarray:
    """float RGB (H, W, 3) in [0, 1]: the CAM (H, W) in matplotlib's jet colormap."""
    from matplotlib import colormaps

    return np.asarray(colormaps["jet"](np.clip(cam, 0, 1))[..., :3])


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3): the image (float in [0, 1]) and the jet-coloured CAM, half each, scaled to a maximum of 1
    (pytorch-grad-cam's `show_cam_on_image` with its defaults, with matplotlib's jet instead of OpenCV's)."""
    mixed = 0.5 * jet(cam) + 0.5 * image
    return (255 * mixed / mixed.max()).astype(np.uint8)


@dataclass(frozen=True)
class CamRow:
    """One condition of the panel (e.g. `clean`, `fog (3)`): images uint8 (N, H, W, 3), their CAMs (N, H, W),
    true labels and predictions (N,)."""

    title: str
    images: np.ndarray
    cams: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray


def gradcam_panel(rows: Sequence[CamRow], classes: Sequence[str], path: str | os.PathLike[str], title: str) -> None:
    """Write a PNG: one row per condition, and for each image three panels image | CAM | overlay, headed by the
    condition, true and predicted class, marked correct (green) or wrong (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_images = max(len(r.images) for r in rows)
    cells: list[list[np.ndarray | None]] = []
    for row in rows:
        line: list[np.ndarray | None] = []
        for i in range(n_images):
            if i >= len(row.images):
                line += [None, None, None]
                continue
            image = row.images[i].astype(np.float32) / 255.0
            line += [row.images[i], jet(row.cams[i]), overlay(image, row.cams[i])]
        cells.append(line)
    # one axes for the whole panel (an axes per cell cost ~1.5 s per method); titles as text above each image
    side = int(rows[0].images.shape[1])
    row_gap = side // 2 + 4  # room for the three title lines above each row
    mosaic, h, w, gap = tile(cells, row_gap=row_gap)
    fig, ax = plt.subplots(figsize=(3 * n_images * 1.25, len(rows) * 1.7 + 0.5))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for r, row in enumerate(rows):
        top = r * (h + row_gap)
        for i in range(min(n_images, len(row.images))):
            left = 3 * i * (w + gap)
            correct = int(row.predictions[i]) == int(row.labels[i])
            ax.text(left, top - 0.5, f"{row.title}\ntrue {classes[int(row.labels[i])]} / pred "
                    f"{classes[int(row.predictions[i])]}\n{'correct' if correct else 'wrong'}", fontsize=6,
                    ha="left", va="bottom", color="green" if correct else "red")
            ax.text(left + (w + gap) + w / 2, top - 0.5, "Grad-CAM", fontsize=6, ha="center", va="bottom")
            ax.text(left + 2 * (w + gap) + w / 2, top - 0.5, "overlay", fontsize=6, ha="center", va="bottom")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
