"""Assemble `reports/summary.md`, the figures and `reports/metrics.json` from a loaded study.

The summary reads like a paper's results section: setup and protocol, then one table per area (pretraining,
accuracy, transfer, robustness, OOD) for every method, paper-scale anchors in separate labelled columns, the
quality bar computed from the data, figures, and footnotes for every missing input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sslbench.progress import progress
from sslbench.report import figures, plotdata, tables
from sslbench.report.anchors import (
    OPENOOD_CIFAR10_AUROC,
    OPENOOD_SOURCE,
    RESNET50_IMAGENET_MCE,
    published_linear,
)
from sslbench.report.load import StudyResults, metric_values
from sslbench.report.protocol import imported_encoders, imported_table, pretrain_protocol_table, protocol_markdown


def accuracy_protocols(probe: tables.PerMethod) -> list[tuple[str, str]]:
    """(key, label) of the accuracy figure's bars: linear, kNN, then every semi-supervised column found."""
    return [("linear/top1", "linear"), ("knn/top1", "kNN"),
            *((c.key, c.header) for c in tables.semisup_columns(probe))]


@dataclass
class Figures:
    """What was drawn: file name -> caption (relative to the figures folder), plus the dvc plot tables."""

    images: dict[str, str] = field(default_factory=dict)
    plot_tables: list[str] = field(default_factory=list)
    ce_title: str = ""


def accuracy_frame(study: StudyResults) -> Any:
    import pandas as pd

    probe = study.area("probe")
    rows = []
    for key, label in accuracy_protocols(probe):
        values = {m: float(d[key]) for m, d in probe.items() if d and tables.is_number(d.get(key))}
        scale = tables.percent_scale(list(values.values()), "pct")
        rows += [{"method": m, "protocol": label, "top1": v * scale} for m, v in values.items()]
    return pd.DataFrame(rows, columns=["method", "protocol", "top1"])


def errors_percent(study: StudyResults) -> Any:
    if study.errors is None:
        return None
    frame = study.errors.copy()
    frame["error"] = frame["error"].astype(float)
    frame["error"] *= tables.percent_scale([abs(v) for v in frame["error"].dropna()], "pct")
    return frame


def ce_matrix(study: StudyResults) -> tuple[dict[str, dict[str, float]], str]:
    """corruption -> method -> CE (%) from `robustness/ce/<c>`, else mean error per corruption from errors.csv."""
    reference = tables.robustness_reference(study.area("robustness"))
    _, matrix = tables.corruption_table(study.methods, study.area("robustness"))
    if matrix:
        return matrix, f"Corruption error CE (%, normalised by {reference}) per corruption × method"
    errors = errors_percent(study)
    if errors is None or errors.empty:
        return {}, ""
    mean = errors.groupby(["corruption", "method"])["error"].mean()
    out: dict[str, dict[str, float]] = {}
    for (corruption, method), value in mean.items():
        out.setdefault(str(corruption), {})[str(method)] = float(value)
    return out, "Top-1 error (%, mean over severities) per corruption × method (no CE keys in the files)"


def ood_groups(dataset: Mapping[str, Any]) -> list[str]:
    """The OOD groups of the dataset config (near, far, ...), without the validation sets."""
    groups = [str(g) for g in (dataset.get("ood") or {}) if g != "validation"]
    return groups or ["near", "far"]


def roc_score(roc: Any, wanted: str) -> str:
    """The score whose ROC curves are drawn: `wanted` if any file has it, else the first score found."""
    if roc is None or roc.empty:
        return wanted
    scores = list(dict.fromkeys(roc["score"]))
    return wanted if wanted in scores else str(scores[0])


def draw_figures(study: StudyResults, folder: Path, dpi: int, *, groups: list[str], score: str) -> Figures:
    """Draw every figure that has data into `folder`, and the CSV tables for `dvc plots` in `folder/data`
    (`sslbench.report.plotdata`).

    groups: the OOD groups shown; score: the OOD score whose ROC curves are drawn.
    """
    out = Figures()
    methods = study.methods
    acc = accuracy_frame(study)
    quality_bar = acc[(acc["protocol"] == "linear") & (acc["method"] == "random_init")]["top1"]
    baseline = float(quality_bar.iloc[0]) if len(quality_bar) else None
    matrix, out.ce_title = ce_matrix(study)
    is_ce = out.ce_title.startswith("Corruption error CE")
    errors = errors_percent(study)
    # (file, draw, caption): drawn one by one under a progress bar (about a second each on a laptop CPU)
    jobs: list[tuple[str, Callable[[Path], Path | None], str]] = [
        ("accuracy.png", lambda p: figures.accuracy_bars(acc, p, methods=methods, baseline=baseline, dpi=dpi),
         "Test top-1 by protocol; dashed line: the random-init encoder's linear probe (the quality bar)."),
        ("mce_heatmap.png", lambda p: figures.corruption_heatmap(matrix, p, methods=methods, title=out.ce_title,
                                                                 center=100.0 if is_ce else None, dpi=dpi),
         out.ce_title + (" (100 = as robust as the reference; blue below, red above)." if is_ce else ".")),
        ("error_vs_severity.png", lambda p: figures.error_vs_severity(errors, p, methods=methods, dpi=dpi),
         "Top-1 error vs severity: mean over the 15 standard corruptions, then per group."),
        ("ood_auroc.png", lambda p: figures.ood_auroc_bars(tables.ood_long(methods, study.area("ood"), groups), p,
                                                          methods=methods, dpi=dpi),
         "OOD AUROC per score and group (OOD = positive; dotted line = chance)."),
        ("roc_curves.png", lambda p: figures.roc_curves(study.roc, p, methods=methods, score=score, dpi=dpi),
         f"ROC curves of the `{score}` score per OOD group (OOD = positive; TPR averaged over each group's sets by "
         "the ood stage)."),
        ("gradcam_grid.png", lambda p: figures.gradcam_grid(study.gradcam, p, methods=methods, dpi=dpi),
         "Grad-CAM per method (rows): image | CAM | overlay, composed from the robustness stage's panels."),
        ("ssim_vs_severity.png", lambda p: figures.ssim_vs_severity(study.ssim, p, dpi=dpi),
         "SSIM between each corrupted image and its own clean image, per corruption (model-independent)."),
        ("training_curves.png", lambda p: figures.training_curves(study.curves, p, methods=methods, dpi=dpi),
         "Pretraining curves logged by the pretrain stage (`pretrain/live/<method>/`): SSL loss, online top-1 and "
         "learning rate per step; collapse indicators of the held batch before the first step and at every epoch "
         "end."),
    ]
    drawn: list[tuple[Path | None, str]] = []
    with progress(total=len(jobs), desc="report figures", unit="fig") as bar:
        for name, draw, caption in jobs:
            bar.set_postfix_str(name)
            drawn.append((draw(folder / name), caption))
            bar.update(1)
    out.images = {p.name: caption for p, caption in drawn if p is not None}

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    plot_frames = {
        "error_vs_severity.csv": plotdata.severity_long(errors, methods),
        "ssim_vs_severity.csv": plotdata.ssim_wide(study.ssim),
        "accuracy.csv": _accuracy_wide(acc, methods, [label for _, label in accuracy_protocols(study.area("probe"))]),
    }
    for group in groups:
        plot_frames[f"roc_{group}.csv"] = plotdata.roc_long(study.roc, group, methods, score)
    for metric in plotdata.TRAINING_CURVES:
        plot_frames[f"pretrain_{metric}.csv"] = plotdata.curves_long(study.curves, metric, methods)
    for name, frame in plot_frames.items():
        frame.to_csv(data / name, index=False, float_format="%.4f")
        out.plot_tables.append(f"data/{name}")
    return out


def _accuracy_wide(acc: Any, methods: list[str], labels: list[str]) -> Any:
    """method, linear, kNN, fine_tune_1pct, ...: the accuracy figure's numbers (percent) for `dvc plots`."""
    import pandas as pd

    table = acc.pivot_table(index="method", columns="protocol", values="top1", aggfunc="first")
    table = table.reindex(index=methods, columns=labels)
    table.columns = [label.replace(" ", "_").replace("%", "pct").replace("-", "_") for label in labels]
    return pd.DataFrame(table).rename_axis("method").reset_index()


# ----------------------------------------------------------------------------------------------- summary


NOTES = ("imported",)  # footnotes that explain a row; every other footnote names a missing file


class _Doc:
    """Collects markdown blocks, numbered tables and footnotes."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.footnotes: dict[str, str] = {}
        self.n_tables = 0

    def add(self, *blocks: str) -> None:
        for block in blocks:
            self.lines += [block, ""]

    def table(self, caption: str, table: tables.Table, missing_text: str) -> None:
        if table.empty:
            self.add(f"*{caption}: {missing_text}*")
            return
        self.n_tables += 1
        self.add(f"**Table {self.n_tables}.** {caption}", table.markdown)
        if table.notes:
            self.add(" ".join(table.notes))
        self.footnotes.update(table.footnotes)


def study_facts(study: StudyResults) -> dict[str, Any]:
    """Numbers the protocol quotes from the metrics files themselves (first file that has each)."""
    facts: dict[str, Any] = {}
    for area, prefix in (("probe", "semisup/n_labels_"), ("robustness", "robustness/n_images"),
                         ("robustness", "robustness/reference_clean_error")):
        for data in study.area(area).values():
            for key, value in (data or {}).items():
                if key.startswith(prefix) and tables.is_number(value):
                    facts.setdefault(key, value)
    return facts


def _n_test(params: Mapping[str, Any] | None, dataset: Mapping[str, Any]) -> int | None:
    from sslbench.report.protocol import lookup

    value = lookup(params, f"prepare.{dataset.get('name')}.n_test")
    return int(value) if isinstance(value, int) and value > 0 else None


def intro(study: StudyResults, dataset: Mapping[str, Any], params: Mapping[str, Any] | None) -> list[str]:
    """The report's first lines: the scale of the study, which SSL methods beat `random_init` beyond noise, and
    where to look for the ones that do not (the parity benchmark against an independent implementation)."""
    from sslbench.report.protocol import lookup

    name = dataset.get("name", "?")
    size, classes = dataset.get("image_size"), dataset.get("num_classes")
    n_train = lookup(params, f"prepare.{name}.n_train")
    steps = sorted(n for d in study.area("pretrain").values() if (n := int(tables.number((d or {}).get(
        "pretrain/steps")) or 0)) > 0)
    what = "embedded data that `prepare` generates" if name == "shapes" else "dataset"
    scale = (f"**Scale.** `{name}` ({what}; {classes} classes, {size}×{size} px"
             + (f", {n_train} training images" if isinstance(n_train, int) else "") + ")"
             + (f", backbone `{b}`" if (b := lookup(params, "pretrain.backbone")) else "")
             + (f", {steps[len(steps) // 2]} optimizer steps per trained method" if steps else "")
             + (f" on {a}" if (a := lookup(params, "pretrain.accelerator")) else "") + ".")
    if name == "shapes":
        scale += (" A budget of minutes on a CPU: it ranks methods at this budget on this data and says nothing "
                  "about their paper-scale accuracy (the anchors, in their own columns, show where that lies).")
    margins = tables.random_init_margins(study.methods, study.area("probe"), _n_test(params, dataset))
    if margins is None:
        return [scale]
    above, rest = margins
    standing = (f"**Above `random_init` beyond noise** (linear-probe test top-1): "
                f"{', '.join(above) if above else 'none'}"
                + (f". **Not beyond noise:** {', '.join(rest)}" if rest else "") + ".")
    if rest:
        standing += (" A method below the bar at this budget is not by that alone a faulty implementation: "
                     "`docs/parity.md` (`python benchmarks/parity.py`) trains each method beside lightly's "
                     "implementation of it, with the same backbone, views, data, optimizer and steps.")
    return [scale, standing]


def build_summary(
    study: StudyResults,
    figs: Figures,
    *,
    dataset: Mapping[str, Any],
    params: Mapping[str, Any] | None,
    params_file: str,
    models_dir: str,
    reports_dir: str,
) -> str:
    """The full `summary.md` text."""
    methods = study.methods
    probe, robust, ood = study.area("probe"), study.area("robustness"), study.area("ood")
    missing = {area: study.missing_for(area) for area in ("pretrain", "probe", "robustness", "ood")}
    reference = tables.robustness_reference(robust)
    groups = ood_groups(dataset)
    structure = tables.ood_structure(ood, groups)
    doc = _Doc()
    name = dataset.get("name", "?")
    complete = [m for m in methods if all(study.area(a).get(m) is not None for a in study.metrics)]
    doc.add(f"# Results: the `{name}` study ({len(methods)} methods)", *intro(study, dataset, params))
    doc.add(
        f"Generated by `dvc repro report` from `{reports_dir}/{{pretrain,probe,robustness,ood}}/<method>.json`. "
        f"{len(complete)} of {len(methods)} methods have every result. All accuracies, errors, CE, AUROC and FPR "
        "are **percent** (one decimal); the best value of each column is **bold**; \"—\" marks a method whose "
        "result file is missing (the footnote names the file and the command that builds it); \"n/a\" marks a "
        "metric that the method's file does not report. Paper-scale anchors stand in their own columns, labelled "
        "\"paper-scale anchor (not comparable: ...)\": they were measured on other datasets, backbones and budgets "
        "and only show where the real-scale numbers lie.",
    )

    doc.add("## Setup and protocol")
    doc.add(protocol_markdown(
        dataset=dataset, params=params, params_file=params_file,
        selected_wd=metric_values(probe, "linear/weight_decay"),
        reference=reference, conventions=tables.ood_conventions(ood),
        ood_scores=list(dict.fromkeys(s for scores in structure.values() for s in scores)),
        facts=study_facts(study),
    ))
    pre_md, pre_notes = pretrain_protocol_table(methods, study.model_configs, models_dir)
    if pre_md:
        doc.n_tables += 1
        doc.add(f"**Table {doc.n_tables}.** Pretraining settings per method, read from the resolved "
                f"`{models_dir}/<method>/config.yaml`.", pre_md)
        doc.footnotes.update(pre_notes)
    else:
        doc.add(f"*Pretraining settings: no `{models_dir}/<method>/config.yaml` found (run `dvc repro pretrain`).*")

    imported = imported_encoders(study.model_configs)
    marks = {m: "[^imported]" for m in imported}
    published = [anchor] if (anchor := published_linear(study.model_configs)) else []
    if imported:
        doc.n_tables += 1
        doc.add(f"**Table {doc.n_tables}.** Encoders imported from published weights files (`method: published`), "
                "not trained here: the file, its format, its sha256 (pinned in the params file), what the import "
                "left out, and the linear top-1 its publisher reports (their own protocol; shown as an anchor "
                "column of the accuracy table).", imported_table(methods, study.model_configs))
        doc.footnotes["imported"] = (f"Imported from a published weights file, not trained here (Table "
                                     f"{doc.n_tables} names the file and its format).")

    doc.add("## Pretraining")
    doc.table("Pretraining diagnostics at the end of training (online linear top-1 is logged apart from the SSL "
              "loss; effective rank and feature std of the embeddings reveal collapse).",
              tables.pretrain_table(methods, study.area("pretrain"), missing["pretrain"], marks),
              "no pretraining metrics found (run `dvc repro pretrain`)")

    doc.add("## Accuracy")
    doc.table("Test top-1 of the frozen encoder: linear probe (weight decay selected on validation), kNN, and "
              "semi-supervised on class-balanced label subsets (fine-tuned backbone, or linear probe).",
              tables.accuracy_table(methods, probe, missing["probe"], marks, anchors=published),
              "no probe metrics found (run `dvc repro evaluate`)")
    doc.add(tables.quality_bar(methods, probe, n_test=_n_test(params, dataset)))
    if note := tables.finetune_note(methods, probe):
        doc.add(note)
    doc.table("Linear-probe test top-1 for every weight decay of the grid (for comparison with the DISSL "
              "repository, which reports the best over test; the headline above uses the validation-selected one).",
              tables.weight_decay_table(methods, probe, missing["probe"], marks), "no per-weight-decay keys reported")
    doc.table("Transfer: linear probe of the frozen encoder on other datasets; top-1 (micro) and macro accuracy.",
              tables.transfer_table(methods, probe, missing["probe"], marks), "no transfer keys reported")

    doc.add("## Corruption robustness")
    doc.table(f"Corruption robustness: clean error, mCE normalised by **{reference}** (100 = as robust as the "
              f"reference), relative mCE, and unnormalised mean errors over the 15 standard and all 19 "
              "corruptions (lower is better throughout).",
              tables.robustness_table(methods, robust, missing["robustness"], marks),
              "no robustness metrics found (run `dvc repro evaluate`)")
    if note := tables.relative_mce_note(methods, robust):
        doc.add(note)
    value, source = RESNET50_IMAGENET_MCE
    doc.add(f"Paper-scale anchor (not comparable: ImageNet-C, normalised by AlexNet): {source}: mCE {value:.1f}.")
    labels = {"error": "top-1 error", "ce": f"CE normalised by {reference}", "": "as reported"}
    for quantity, table in tables.robustness_group_tables(methods, robust, missing["robustness"], marks).items():
        label = labels.get(quantity, f"`{quantity}`")
        doc.table(f"Robustness per corruption group: {label} (%), mean over the group's corruptions and "
                  "severities; lower is better.", table, "no per-group keys")
    ce_md, _ = tables.corruption_table(methods, robust)
    if ce_md:
        doc.n_tables += 1
        doc.add(f"**Table {doc.n_tables}.** CE per corruption (%, normalised by {reference}); methods with results "
                "as columns.", ce_md)

    doc.add("## Out-of-distribution detection")
    convention = tables.ood_conventions(ood)
    doc.add("**Convention: OOD = positive class** (OpenOOD v1.5). AUROC: higher is better, 50 = chance; FPR95: "
            "fraction of in-distribution test images flagged as OOD at 95% OOD recall, lower is better. "
            + (f"Files state `ood/convention` = {', '.join(f'`{c}`' for c in convention)}."
               if convention else "The OOD files do not state a convention (no `ood/convention` key)."))
    ood_tables = tables.ood_tables(methods, ood, missing["ood"], groups, marks)
    if not ood_tables:
        doc.add("*OOD detection: no OOD metrics found (run `dvc repro evaluate`).*")
    for group, table in ood_tables.items():
        doc.table(f"{group}-OOD: AUROC / FPR95 (%) per score (bold: best AUROC of each score).", table, "")
    if any((d or {}).get("ood/skipped") for d in ood.values()):
        doc.add("\"n/a\" in these tables: a score that is not defined for that model (the stochastic scores need a "
                "Bayes-H/Bayes-Z encoder; each file's `ood/skipped` says why). The sign of each disputed score was "
                "chosen on the validation OOD sets (`ood/sign/<score>`, `ood/validation/<score>/auroc` in "
                "metrics.json); per-set numbers are there too (`ood/<set>/<score>/<metric>`).")
    anchor_cells = ", ".join(f"{s} {near:.1f} / {far:.1f}" for s, (near, far) in OPENOOD_CIFAR10_AUROC.items())
    doc.add(f"Paper-scale anchor (not comparable: CIFAR-10 vs CIFAR-100/TinyImageNet (near) and MNIST/SVHN/Textures/"
            f"Places365 (far), supervised ResNet-18): AUROC near / far: {anchor_cells} ({OPENOOD_SOURCE}).")

    doc.add("## Figures")
    if figs.images:
        for file, caption in figs.images.items():
            doc.add(f"![{file}](figures/{file})", f"*{caption}* (`figures/{file}`)")
    else:
        doc.add("*No figure had data to draw.*")
    samples = Path(reports_dir) / "corrupt" / "samples.png"
    if samples.is_file():
        doc.add("![corruption samples](corrupt/samples.png)",
                "*One test image under every corruption and severity, written by the corrupt stage* "
                "(`corrupt/samples.png`)")
    doc.add("Plot tables for `dvc plots show`: " + ", ".join(f"`figures/{p}`" for p in figs.plot_tables) + ".")
    if study.missing_plots:
        doc.add("Figure inputs not found (the figures leave these out):\n"
                + "\n".join(f"- {m.sentence()}" for m in study.missing_plots))

    notes = {fid: text for fid, text in doc.footnotes.items() if fid in NOTES}
    missing_notes = {fid: text for fid, text in doc.footnotes.items() if fid not in NOTES}
    for heading, block in (("## Notes", notes), ("## Missing results", missing_notes)):
        if block:
            doc.add(heading, "\n".join(f"[^{fid}]: {text}" for fid, text in block.items()))
    return "\n".join(doc.lines).rstrip() + "\n"


def metrics_json(study: StudyResults, ssl_above_random_init: int | None) -> dict[str, Any]:
    """`{method: {"group/name": value}}` for every method with results (rendered by `dvc metrics show` as
    `<method>.<group>/<name>`), plus a `study` block of counts. Non-finite numbers become null."""
    out: dict[str, Any] = {}
    for method, merged in study.merged().items():
        if merged:
            out[method] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                           for k, v in merged.items()}
    study_block: dict[str, Any] = {
        "methods": len(study.methods),
        "methods_with_results": len(out),
        "missing_files": len(study.missing),
    }
    if ssl_above_random_init is not None:
        study_block["ssl_above_random_init"] = ssl_above_random_init
    out["study"] = study_block
    return out
