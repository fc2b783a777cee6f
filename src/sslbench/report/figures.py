"""Seaborn figures of the study (pure: loaded frames in, one PNG out; nothing drawn when there is no data).

matplotlib runs on the Agg backend and seaborn is imported inside the functions, so importing this module costs
nothing. Every method keeps one colour across all figures (`method_palette`). Values arrive in percent.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from sslbench.data.corruption_names import COMMON, CORRUPTION_GROUPS, CORRUPTIONS


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seaborn() -> Any:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    return sns


def method_palette(methods: Sequence[str]) -> dict[str, Any]:
    """One fixed colour per method, in study order (tab20 holds the 15 methods of the default study)."""
    sns = _seaborn()
    colours = sns.color_palette("tab20" if len(methods) > 10 else "tab10", max(len(methods), 1))
    return {m: colours[i % len(colours)] for i, m in enumerate(methods)}


def _save(fig: Any, path: Path, dpi: int) -> Path:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def accuracy_bars(frame: pd.DataFrame, path: Path, *, methods: Sequence[str], baseline: float | None,
                  dpi: int = 110) -> Path | None:
    """Grouped bars: x = method, hue = protocol (linear, kNN, semi-supervised ...), y = top-1 (%).

    frame: columns method, protocol, top1 (percent). `baseline` draws the random-init linear probe as a line.
    """
    if frame.empty:
        return None
    plt, sns = _pyplot(), _seaborn()
    order = [m for m in methods if m in set(frame["method"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(order) + 2), 4.2))
    sns.barplot(data=frame, x="method", y="top1", hue="protocol", order=order, ax=ax, palette="colorblind",
                errorbar=None)
    if baseline is not None:
        ax.axhline(baseline, color="0.3", ls="--", lw=1, label="random_init linear (quality bar)")
    ax.set(xlabel="", ylabel="test top-1 (%)", title="Accuracy by protocol (frozen encoder unless fine-tuned)")
    ax.tick_params(axis="x", rotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path, dpi)


def corruption_heatmap(matrix: Mapping[str, Mapping[str, float]], path: Path, *, methods: Sequence[str],
                       title: str, center: float | None = None, dpi: int = 110) -> Path | None:
    """Heatmap corruption (rows, grouped) × method (columns), annotated, values in percent.

    `center`: a diverging palette around this value (100 for CE: blue = more robust than the reference).
    """
    import pandas as pd

    if not matrix:
        return None
    plt, sns = _pyplot(), _seaborn()
    rows = [c for c in CORRUPTIONS if c in matrix] + sorted(set(matrix) - set(CORRUPTIONS))
    cols = [m for m in methods if any(m in matrix[c] for c in rows)]
    table = pd.DataFrame([[matrix[c].get(m) for m in cols] for c in rows], index=rows, columns=cols, dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.62 * len(cols) + 2.5), 0.36 * len(rows) + 1.6))
    with warnings.catch_warnings():  # seaborn 0.13 calls a colormap method that matplotlib 3.11 deprecates
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(table, annot=True, fmt=".0f", cmap="rocket_r" if center is None else "vlag", center=center,
                    cbar_kws={"label": "%"}, ax=ax, annot_kws={"fontsize": 6})
    boundaries = 0
    for group in CORRUPTION_GROUPS.values():
        boundaries += sum(1 for c in group if c in matrix)
        if 0 < boundaries < len(rows):
            ax.axhline(boundaries, color="white", lw=2)
    ax.set(xlabel="", ylabel="")
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="x", rotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _save(fig, path, dpi)


def _panel_lines(
    frame: pd.DataFrame,
    path: Path,
    *,
    panel: str,
    panels: Sequence[str],
    x: str,
    y: str,
    hue: str,
    hue_order: Sequence[str],
    palette: Mapping[str, Any],
    labels: tuple[str, str],
    title: str,
    dpi: int,
    sharey: bool = False,
    marker: str | None = "o",
) -> Path:
    """Small multiples: one panel per `panel` value, one seaborn line per `hue` value, one shared legend.

    Drawn on plain subplots rather than a FacetGrid: same look, a third of the layout passes on a slow CPU.
    """
    from matplotlib.lines import Line2D

    plt, sns = _pyplot(), _seaborn()
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.5 * nrows), sharey=sharey, squeeze=False)
    for ax, name in zip(axes.flat, panels, strict=False):
        part = frame[frame[panel] == name]
        order = [h for h in hue_order if h in set(part[hue])]
        sns.lineplot(data=part, x=x, y=y, hue=hue, hue_order=order, palette={h: palette[h] for h in order},
                     marker=marker, errorbar=None, legend=False, ax=ax)
        ax.set(title=str(name), xlabel=labels[0], ylabel=labels[1])
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    shown = [h for h in hue_order if h in set(frame[hue])]
    handles = [Line2D([0], [0], color=palette[h], marker=marker, label=h) for h in shown]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path, dpi)


def error_vs_severity(errors: pd.DataFrame | None, path: Path, *, methods: Sequence[str],
                      dpi: int = 110) -> Path | None:
    """Top-1 error vs severity, one panel per corruption group plus the 15-corruption mean, one line per method.

    errors: columns method, corruption, group, severity, error (percent).
    """
    import pandas as pd

    if errors is None or errors.empty:
        return None
    per_group = errors.groupby(["method", "group", "severity"], as_index=False)["error"].mean()
    standard = errors[errors["corruption"].isin(COMMON)]
    overall = standard.groupby(["method", "severity"], as_index=False)["error"].mean().assign(group="mean (15)")
    frame = pd.concat([overall, per_group], ignore_index=True)
    panels = ["mean (15)", *[g for g in CORRUPTION_GROUPS if g in set(frame["group"])],
              *sorted(set(frame["group"]) - {"mean (15)", *CORRUPTION_GROUPS})]
    return _panel_lines(frame, path, panel="group", panels=panels, x="severity", y="error", hue="method",
                        hue_order=methods, palette=method_palette(methods), labels=("severity", "top-1 error (%)"),
                        title="Error vs corruption severity", dpi=dpi)


def ood_auroc_bars(rows: Sequence[Mapping[str, Any]], path: Path, *, methods: Sequence[str],
                   dpi: int = 110) -> Path | None:
    """AUROC (%) per score, one panel per OOD group (near, far), bars coloured by method."""
    import pandas as pd

    frame = pd.DataFrame([r for r in rows if r.get("auroc") is not None])
    if frame.empty:
        return None
    _pyplot()
    sns = _seaborn()
    order = [m for m in methods if m in set(frame["method"])]
    groups = list(dict.fromkeys(frame["group"]))
    n_scores = frame["score"].nunique()
    # one row per group: with 15 methods x 9 scores, side-by-side panels would be far too wide
    grid = sns.catplot(data=frame, x="score", y="auroc", hue="method", hue_order=order, row="group",
                       row_order=groups, kind="bar", errorbar=None, height=2.6,
                       aspect=min(6.0, max(2.2, 0.045 * n_scores * len(order))), palette=method_palette(methods))
    for ax in grid.axes.flat:
        ax.axhline(50, color="0.4", ls=":", lw=1)
    grid.set_axis_labels("score", "AUROC (%, OOD = positive)")
    grid.set_titles("{row_name}-OOD")
    grid.figure.suptitle("OOD detection AUROC by score (50 = chance)", y=1.03)
    return _save(grid.figure, path, dpi)


def roc_curves(roc: pd.DataFrame | None, path: Path, *, methods: Sequence[str], score: str = "",
               dpi: int = 110) -> Path | None:
    """ROC curves (TPR vs FPR, OOD = positive) of one score, one panel per OOD group, one line per method."""
    if roc is None or roc.empty:
        return None
    if "score" in roc.columns:
        roc = roc[roc["score"] == score]
        if roc.empty:
            return None
    plt, sns = _pyplot(), _seaborn()
    groups = sorted(set(roc["group"]), key=lambda g: ({"near": 0, "far": 1}.get(g, 2), g))
    palette = method_palette(methods)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.0 * len(groups) + 1.5, 3.8), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        part = roc[roc["group"] == group]
        for method in [m for m in methods if m in set(part["method"])]:
            curve = part[part["method"] == method].sort_values(["fpr", "tpr"])
            ax.plot(curve["fpr"], curve["tpr"], color=palette[method], lw=1.2, label=method)
        ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate (ID flagged)",
               ylabel="true positive rate (OOD caught)", title=f"{group}-OOD")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    sns.despine(fig)
    fig.suptitle(f"ROC curves, score `{score}` (OOD = positive)" if score else "ROC curves (OOD = positive)")
    return _save(fig, path, dpi)


def gradcam_grid(images: Mapping[str, Path], path: Path, *, methods: Sequence[str], dpi: int = 110) -> Path | None:
    """Stack the per-method Grad-CAM panels (image | CAM | overlay) into one figure, one labelled row each."""
    import matplotlib.image as mpimg

    order = [m for m in methods if m in images]
    if not order:
        return None
    plt = _pyplot()
    pictures = [mpimg.imread(images[m]) for m in order]
    ratios = [p.shape[0] / p.shape[1] for p in pictures]
    width, left = 10.0, 0.17  # inches; fraction of the width kept for the method labels
    rows_height = (1 - left - 0.01) * width * sum(ratios) * 1.06
    height = rows_height + 0.45
    fig, axes = plt.subplots(len(order), 1, figsize=(width, height), gridspec_kw={"height_ratios": ratios},
                             squeeze=False)
    fig.subplots_adjust(left=left, right=0.99, bottom=0.005, top=1 - 0.4 / height, hspace=0.06)
    for ax, method, picture in zip(axes[:, 0], order, pictures, strict=True):
        ax.imshow(picture)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(method, rotation=0, ha="right", va="center", fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle("Grad-CAM (last conv block, target = true label)", y=1 - 0.1 / height, va="top")
    return _save(fig, path, dpi)


def ssim_vs_severity(ssim: pd.DataFrame | None, path: Path, *, dpi: int = 110) -> Path | None:
    """SSIM between corrupted and clean images vs severity: one panel per group, one line per corruption."""
    if ssim is None or ssim.empty:
        return None
    sns = _seaborn()
    groups = [g for g in CORRUPTION_GROUPS if g in set(ssim["group"])] + sorted(
        set(ssim["group"]) - set(CORRUPTION_GROUPS))
    frame = ssim.groupby(["group", "corruption", "severity"])["ssim"].mean().reset_index()
    corruptions = [c for c in CORRUPTIONS if c in set(frame["corruption"])] + sorted(
        set(frame["corruption"]) - set(CORRUPTIONS))
    colours = sns.color_palette("tab20", len(corruptions))
    return _panel_lines(frame, path, panel="group", panels=groups, x="severity", y="ssim", hue="corruption",
                        hue_order=corruptions, palette=dict(zip(corruptions, colours, strict=True)),
                        labels=("severity", "SSIM to the clean image"), sharey=True,
                        title="Structural similarity vs corruption severity", dpi=dpi)


def training_curves(curves: pd.DataFrame | None, path: Path, *, methods: Sequence[str],
                    dpi: int = 110) -> Path | None:
    """Pretraining curves the pretrain stage logged: one panel per metric (at most 6), one line per method. The
    throughput (`images_per_s`) is left out: it measures the machine, and the figure stays the same for a seed."""
    if curves is None or curves.empty:
        return None
    curves = curves[curves["metric"] != "images_per_s"]
    if curves.empty:
        return None
    metrics = list(dict.fromkeys(curves["metric"]))[:6]
    frame = curves[curves["metric"].isin(metrics)]
    x = "step"
    if "epoch" in frame.columns and frame["epoch"].notna().any() and frame["epoch"].nunique() >= 5:
        # per-step values are noisy; with enough epochs the per-epoch mean reads better with many methods (points
        # without an epoch, such as the collapse indicators before the first step, are left out)
        frame = frame.groupby(["method", "metric", "epoch"])["value"].mean().reset_index()
        x = "epoch"
    return _panel_lines(frame, path, panel="metric", panels=metrics, x=x, y="value", hue="method",
                        hue_order=methods, palette=method_palette(methods), labels=(x, ""),
                        marker="o" if x == "epoch" else None,
                        title="Pretraining curves" + (" (mean per epoch)" if x == "epoch" else ""), dpi=dpi)
