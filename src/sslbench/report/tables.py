"""Markdown tables from loaded metrics dicts (pure functions: dicts in, markdown out).

Conventions of every table: one row per method in study order; accuracies, errors, CE ratios, AUROC and FPR are
shown in percent with one decimal; the best value of a column is bold; "—" marks a method whose input file is
missing (with a footnote naming the file and the `dvc repro` command); "n/a" marks a key that this method's file
does not report (e.g. a stochastic-only OOD score for a deterministic model). Keys are parsed by prefix so that a
stage that adds or renames a metric still shows up (as an extra column under its raw key) rather than vanishing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sslbench.report.anchors import ACCURACY_ANCHORS, ROBUSTNESS_ANCHORS, AnchorSet
from sslbench.report.load import CORRUPTION_GROUPS, CORRUPTIONS, MissingInput, corruption_group

MISSING = "—"
NOT_REPORTED = "n/a"
Kind = Literal["pct", "ratio", "num", "int", "seconds", "sci", "text"]
Better = Literal["high", "low"] | None
PerMethod = Mapping[str, Mapping[str, Any] | None]


@dataclass(frozen=True)
class Column:
    """One table column: the metric key, its header, how to format it and which direction is better.

    kind: "pct" = a fraction in [0, 1] shown as percent; "ratio" = a ratio such as CE (unbounded) shown as percent;
    "num" = 3 significant digits; "int"; "seconds" = a duration; "sci" = scientific (weight decays); "text".
    """

    key: str
    header: str
    kind: Kind = "pct"
    better: Better = "high"


@dataclass
class Table:
    """A rendered table plus what the reader must know about it: notes (omitted columns) and footnotes."""

    markdown: str
    notes: list[str] = field(default_factory=list)
    footnotes: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.markdown


# ----------------------------------------------------------------------------------------------- formatting


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(value: Any) -> float | None:
    """`value` as a float when it is a finite number (not a bool), else None."""
    return float(value) if is_number(value) else None


def percent_scale(values: Sequence[float], kind: Kind) -> float:
    """100 for fractions, 1 when a column is evidently already in percent.

    The stage contracts write fractions (top-1 in [0, 1], CE ratios around 1). A bounded "pct" column with a
    value above 1, or a "ratio" column above 10, can only be percent already; decided per column, so one column is
    never mixed.
    """
    if not values:
        return 100.0
    top = max(abs(v) for v in values)
    if kind == "pct":
        return 1.0 if top > 1.0 + 1e-9 else 100.0
    return 1.0 if top > 10.0 else 100.0


def format_value(value: Any, kind: Kind, scale: float = 100.0) -> str:
    """Format one cell; None/NaN (a metric the stage could not compute) shows as "n/a"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NOT_REPORTED
    if kind == "text" or not is_number(value):
        return str(value)
    v = float(value)
    if kind in ("pct", "ratio"):
        return f"{v * scale:.1f}"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "seconds":
        return f"{v / 60:.1f} min" if v >= 120 else f"{v:.0f} s"
    if kind == "sci":
        return f"{v:.0e}"
    return f"{v:.3g}"


# method -> what its table rows append to its name (a footnote mark such as `[^imported]`); None: nothing
Marks = Mapping[str, str] | None


def marked(method: str, marks: Marks) -> str:
    return f"{method}{(marks or {}).get(method, '')}"


def footnote_id(missing: MissingInput) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{missing.path.parent.name}-{missing.path.stem}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table; `align` per column: "l" or "r" (default: first left, rest right)."""
    align = align or ["l", *["r"] * (len(header) - 1)]
    rule = [":---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


# ----------------------------------------------------------------------------------------------- generic builder


def keys_with_prefix(per_method: PerMethod, prefix: str) -> list[str]:
    """Every key starting with `prefix` in any method's file, in first-seen order."""
    seen: dict[str, None] = {}
    for data in per_method.values():
        for key in data or {}:
            if key.startswith(prefix):
                seen.setdefault(key)
    return list(seen)


def guess_kind(key: str) -> Kind:
    name = key.lower()
    if any(tag in name for tag in ("top1", "acc", "error", "auroc", "aupr", "fpr")):
        return "pct"
    if re.search(r"(^|/)(m?ce|relative_m?ce)($|/)", name):
        return "ratio"
    return "num"


def extra_columns(
    per_method: PerMethod,
    prefixes: Sequence[str],
    known: Sequence[str],
    kinds: Sequence[Kind] = ("pct", "ratio", "num", "int", "seconds", "sci"),
) -> list[Column]:
    """Numeric keys under `prefixes` that no known column shows (new or renamed metrics), as raw-key columns.

    `kinds` limits them to what the table is about (e.g. accuracies only, so that counts such as
    `semisup/n_labels_1pct` stay in metrics.json instead of widening the accuracy table).
    """
    out = []
    for prefix in prefixes:
        for key in keys_with_prefix(per_method, prefix):
            values = [d[key] for d in per_method.values() if d and key in d]
            kind = guess_kind(key)
            if key not in known and kind in kinds and any(is_number(v) for v in values):
                out.append(Column(key, f"`{key}`", kind, None))
    return out


def metric_table(
    methods: Sequence[str],
    per_method: PerMethod,
    columns: Sequence[Column],
    missing: Mapping[str, MissingInput],
    anchors: Sequence[AnchorSet] = (),
    first_header: str = "method",
    marks: Marks = None,
) -> Table:
    """Rows = methods, columns = metrics (+ anchor columns). Columns that no method reports are dropped (noted)."""
    table = Table("")
    present = [m for m in methods if per_method.get(m) is not None]
    if not present:
        return table
    kept: list[Column] = []
    for column in columns:
        if any(column.key in (per_method[m] or {}) for m in present):
            kept.append(column)
        else:
            table.notes.append(f"Column \"{column.header}\" omitted: no method reports `{column.key}`.")
    if not kept:
        return table
    cells: dict[str, list[str]] = {m: [] for m in methods}
    for column in kept:
        raw = {m: (per_method[m] or {}).get(column.key) for m in present if column.key in (per_method[m] or {})}
        numbers = [n for v in raw.values() if (n := number(v)) is not None]
        scale = percent_scale(numbers, column.kind)
        shown = {m: format_value(v, column.kind, scale) for m, v in raw.items()}
        if column.better and len(set(numbers)) >= 2:
            best = max(numbers) if column.better == "high" else min(numbers)
            best_text = format_value(best, column.kind, scale)
            shown = {m: f"**{t}**" if t == best_text else t for m, t in shown.items()}
        for m in methods:
            if m not in present:
                cells[m].append(MISSING)
            else:
                cells[m].append(shown.get(m, NOT_REPORTED))
    header = [first_header, *(c.header for c in kept), *(a.header for a in anchors)]
    if anchors:
        table.notes.append("Anchor sources: " + "; ".join(f"{a.title}: {a.source}" for a in anchors) + ".")
    rows = []
    for m in methods:
        label = marked(m, marks)
        if m not in present and m in missing:
            fid = footnote_id(missing[m])
            table.footnotes[fid] = missing[m].sentence()
            label = f"{label}[^{fid}]"
        anchor_cells = [f"{a.values[m]:.1f}" if m in a.values else "" for a in anchors]
        rows.append([label, *cells[m], *anchor_cells])
    table.markdown = markdown_table(header, rows)
    return table


# ----------------------------------------------------------------------------------------------- per area

PRETRAIN_COLUMNS = (
    Column("pretrain/ssl_loss", "final SSL loss", "num", None),
    Column("pretrain/online_top1", "online linear top-1", "pct", "high"),
    Column("pretrain/feature_std", "feature std", "num", None),
    Column("pretrain/effective_rank", "effective rank", "num", "high"),
    Column("pretrain/images_per_s", "images/s", "int", "high"),
    Column("pretrain/steps", "steps", "int", None),
    Column("pretrain/wall_s", "wall time", "seconds", None),
)


def pretrain_table(methods: Sequence[str], per_method: PerMethod, missing: Mapping[str, MissingInput],
                   marks: Marks = None) -> Table:
    known = [c.key for c in PRETRAIN_COLUMNS]
    return metric_table(
        methods, per_method, [*PRETRAIN_COLUMNS, *extra_columns(per_method, ["pretrain/"], known)], missing,
        marks=marks,
    )


ACCURACY_COLUMNS = (
    Column("linear/top1", "linear top-1", "pct", "high"),
    Column("linear/macro_acc", "linear macro acc", "pct", "high"),
    Column("linear/weight_decay", "wd (val-selected)", "sci", None),
    Column("knn/top1", "kNN top-1", "pct", "high"),
    Column("knn/macro_acc", "kNN macro acc", "pct", "high"),
)
WD_KEY = re.compile(r"^linear/top1_wd(?P<wd>.+)$")
SEMISUP_KEY = re.compile(r"^semisup/(?P<kind>finetune|linear)_top1_(?P<tag>[0-9.]+)pct$")
SEMISUP_DEFAULT = ("semisup/finetune_top1_1pct", "semisup/finetune_top1_10pct", "semisup/linear_top1_1pct",
                   "semisup/linear_top1_10pct")


def semisup_columns(per_method: PerMethod) -> list[Column]:
    """`semisup/{finetune,linear}_top1_<f>pct` for every label fraction the files report (fine-tune first, then
    linear, by fraction); the contract's 1% / 10% columns when none is found (dropped then, with a note)."""
    keys = [k for k in keys_with_prefix(per_method, "semisup/") if SEMISUP_KEY.match(k)] or list(SEMISUP_DEFAULT)

    def order(key: str) -> tuple[int, float]:
        match = SEMISUP_KEY.match(key)
        assert match is not None
        return (0 if match["kind"] == "finetune" else 1, float(match["tag"]))

    columns = []
    for key in sorted(keys, key=order):
        match = SEMISUP_KEY.match(key)
        assert match is not None
        label = "fine-tune" if match["kind"] == "finetune" else "linear"
        columns.append(Column(key, f"{label} {match['tag']}%", "pct", "high"))
    return columns


def accuracy_table(methods: Sequence[str], per_method: PerMethod, missing: Mapping[str, MissingInput],
                   marks: Marks = None, anchors: Sequence[AnchorSet] = ()) -> Table:
    """`anchors`: further anchor columns after the fixed ones (the publishers' numbers of imported encoders)."""
    semisup = semisup_columns(per_method)
    # shown elsewhere: the per-wd test numbers (own table) and the selected probe's validation top-1 (not a test
    # number); counts such as semisup/n_labels_* go to the protocol text
    known = [c.key for c in (*ACCURACY_COLUMNS, *semisup)] + ["linear/val_top1"]
    wd_keys = [k for k in keys_with_prefix(per_method, "linear/") if WD_KEY.match(k)]
    extra = [c for c in extra_columns(per_method, ["linear/", "knn/", "semisup/"], known, kinds=("pct",))
             if c.key not in wd_keys]
    return metric_table(methods, per_method, [*ACCURACY_COLUMNS, *semisup, *extra], missing,
                        anchors=(*ACCURACY_ANCHORS, *anchors), marks=marks)


def _wd_value(key: str) -> float:
    match = WD_KEY.match(key)
    try:
        return float(match["wd"]) if match else math.inf
    except ValueError:
        return math.inf


def weight_decay_table(methods: Sequence[str], per_method: PerMethod, missing: Mapping[str, MissingInput],
                       marks: Marks = None) -> Table:
    """Linear-probe test top-1 for every weight decay of the grid (the paper's max-over-test view)."""
    keys = sorted((k for k in keys_with_prefix(per_method, "linear/") if WD_KEY.match(k)), key=_wd_value,
                  reverse=True)
    columns = [Column(k, f"wd {WD_KEY.match(k)['wd']}", "pct", "high") for k in keys]  # type: ignore[index]
    return metric_table(methods, per_method, columns, missing, marks=marks)


def transfer_table(methods: Sequence[str], per_method: PerMethod, missing: Mapping[str, MissingInput],
                   marks: Marks = None) -> Table:
    """Per transfer set: micro top-1 (the headline) and macro accuracy (the reference code's default), labelled."""
    sets: dict[str, None] = {}
    for key in keys_with_prefix(per_method, "transfer/"):
        parts = key.split("/")
        if len(parts) == 3:
            sets.setdefault(parts[1])
    columns = []
    for name in sets:
        columns.append(Column(f"transfer/{name}/top1", f"{name} top-1 (micro)", "pct", "high"))
        columns.append(Column(f"transfer/{name}/macro_acc", f"{name} macro acc", "pct", "high"))
    return metric_table(methods, per_method, columns, missing, marks=marks)


ROBUSTNESS_COLUMNS = (
    Column("robustness/clean_error", "clean error", "pct", "low"),
    Column("robustness/mce", "mCE", "ratio", "low"),
    Column("robustness/relative_mce", "relative mCE", "ratio", "low"),
    Column("robustness/mean_error_15", "mean error (15)", "pct", "low"),
    Column("robustness/mean_error_19", "mean error (19)", "pct", "low"),
)


def robustness_reference(per_method: PerMethod) -> str:
    """The model that CE is normalised by, as the robustness files name it (joined if they disagree)."""
    names = sorted({str(d["robustness/reference"]) for d in per_method.values() if d and "robustness/reference" in d})
    return " / ".join(names) if names else "an unnamed reference (no `robustness/reference` key)"


def robustness_table(methods: Sequence[str], per_method: PerMethod, missing: Mapping[str, MissingInput],
                     marks: Marks = None) -> Table:
    reference = robustness_reference(per_method)
    columns = [
        Column(c.key, f"mCE (normalised by {reference})", c.kind, c.better) if c.key == "robustness/mce" else c
        for c in ROBUSTNESS_COLUMNS
    ]
    known = [c.key for c in columns] + ["robustness/reference_clean_error"]  # named in the caption instead
    extra = [
        c
        for c in extra_columns(per_method, ["robustness/"], known, kinds=("pct", "ratio"))
        if c.key.count("/") == 1  # per-group and per-corruption keys have their own tables
    ]
    return metric_table(methods, per_method, [*columns, *extra], missing, anchors=ROBUSTNESS_ANCHORS, marks=marks)


def robustness_group_tables(
    methods: Sequence[str], per_method: PerMethod, missing: Mapping[str, MissingInput], marks: Marks = None
) -> dict[str, Table]:
    """One table per per-group quantity (`robustness/group/<group>[/<quantity>]`), columns = groups in order."""
    by_quantity: dict[str, list[tuple[str, str]]] = {}
    for key in keys_with_prefix(per_method, "robustness/group/"):
        parts = key[len("robustness/group/") :].split("/", 1)
        quantity = parts[1] if len(parts) == 2 else ""
        by_quantity.setdefault(quantity, []).append((parts[0], key))
    order = {g: i for i, g in enumerate(CORRUPTION_GROUPS)}
    tables = {}
    for quantity, entries in by_quantity.items():
        entries.sort(key=lambda e: order.get(e[0], len(order)))
        kind = guess_kind(f"robustness/{quantity}") if quantity else "ratio"
        columns = [Column(key, group, kind, "low") for group, key in entries]
        tables[quantity] = metric_table(methods, per_method, columns, missing, marks=marks)
    return tables


def corruption_table(
    methods: Sequence[str], per_method: PerMethod, prefix: str = "robustness/ce/"
) -> tuple[str, dict[str, dict[str, float]]]:
    """Per-corruption values (rows = corruptions by group, columns = methods with data), and the matrix itself.

    Returns (markdown, {corruption: {method: percent}}); empty markdown when no method reports the prefix.
    """
    found = {k[len(prefix) :] for k in keys_with_prefix(per_method, prefix)}
    if not found:
        return "", {}
    corruptions = [c for c in CORRUPTIONS if c in found] + sorted(found - set(CORRUPTIONS))
    present = [m for m in methods if per_method.get(m) and any(k.startswith(prefix) for k in per_method[m] or {})]
    numbers = [float(v) for m in present for k, v in (per_method[m] or {}).items() if k.startswith(prefix)
               and is_number(v)]
    scale = percent_scale(numbers, "ratio")
    matrix: dict[str, dict[str, float]] = {}
    rows = []
    for c in corruptions:
        row = [f"{c} ({corruption_group(c)})"]
        for m in present:
            v = (per_method[m] or {}).get(prefix + c)
            row.append(format_value(v, "ratio", scale) if v is not None else NOT_REPORTED)
            n = number(v)
            if n is not None:
                matrix.setdefault(c, {})[m] = n * scale
        rows.append(row)
    return markdown_table(["corruption (group)", *present], rows), matrix


# ----------------------------------------------------------------------------------------------- OOD

OOD_KEY = re.compile(r"^ood/(?P<group>[^/]+)/(?P<score>[^/]+)/(?P<metric>[^/]+)$")


OOD_RESERVED = ("validation", "sign", "skipped", "convention")


def ood_structure(per_method: PerMethod, groups: Sequence[str] | None = None) -> dict[str, list[str]]:
    """group -> scores in first-seen order, from keys `ood/<group>/<score>/<metric>` (near and far first).

    `groups`: the OOD groups to show (the dataset config's, e.g. near/far); None = every `ood/<x>/<score>/<metric>`
    prefix except the reserved ones (validation AUROCs, signs). Per-set keys `ood/<set>/...` share the key shape,
    so pass `groups` whenever the dataset config is known.
    """
    found: dict[str, dict[str, None]] = {}
    for key in keys_with_prefix(per_method, "ood/"):
        match = OOD_KEY.match(key)
        if match and match["group"] not in OOD_RESERVED and (groups is None or match["group"] in groups):
            found.setdefault(match["group"], {}).setdefault(match["score"])
    ordered = sorted(found, key=lambda g: ({"near": 0, "far": 1}.get(g, 2), g))
    return {g: list(found[g]) for g in ordered}


def ood_metric_key(data: Mapping[str, Any], group: str, score: str, metric: str) -> str | None:
    """The key of `metric` ("auroc" or "fpr") for a group/score, matching names by prefix (fpr95, fpr@95tpr)."""
    prefix = f"ood/{group}/{score}/"
    for key in data:
        if key.startswith(prefix) and key[len(prefix) :].lower().startswith(metric):
            return key
    return None


def ood_long(methods: Sequence[str], per_method: PerMethod, groups: Sequence[str] | None = None
             ) -> list[dict[str, Any]]:
    """Rows {method, group, score, auroc, fpr95} in percent (None where not reported)."""
    rows = []
    structure = ood_structure(per_method, groups)
    for m in methods:
        data = per_method.get(m)
        if data is None:
            continue
        for group, scores in structure.items():
            for score in scores:
                row: dict[str, Any] = {"method": m, "group": group, "score": score}
                for metric, name in (("auroc", "auroc"), ("fpr", "fpr95")):
                    key = ood_metric_key(data, group, score, metric)
                    value = data.get(key) if key else None
                    row[name] = number(value)
                rows.append(row)
    for name in ("auroc", "fpr95"):
        values = [r[name] for r in rows if r[name] is not None]
        scale = percent_scale(values, "pct")
        for r in rows:
            if r[name] is not None:
                r[name] *= scale
    return rows


def ood_tables(methods: Sequence[str], per_method: PerMethod, missing: Mapping[str, MissingInput],
               groups: Sequence[str] | None = None, marks: Marks = None) -> dict[str, Table]:
    """One table per OOD group: rows = methods, columns = scores, cells "AUROC / FPR95" (best AUROC bold)."""
    rows = ood_long(methods, per_method, groups)
    tables: dict[str, Table] = {}
    for group, scores in ood_structure(per_method, groups).items():
        table = Table("")
        cell: dict[tuple[str, str], str] = {}
        seen: dict[str, set[float]] = {}
        for r in rows:
            if r["group"] != group:
                continue
            auroc = "n/a" if r["auroc"] is None else f"{r['auroc']:.1f}"
            fpr = "n/a" if r["fpr95"] is None else f"{r['fpr95']:.1f}"
            cell[(r["method"], r["score"])] = NOT_REPORTED if r["auroc"] is None and r["fpr95"] is None else \
                f"{auroc} / {fpr}"
            if r["auroc"] is not None:
                seen.setdefault(r["score"], set()).add(round(r["auroc"], 1))
        best = {score: max(values) for score, values in seen.items() if len(values) >= 2}
        body = []
        for m in methods:
            label = marked(m, marks)
            if per_method.get(m) is None:
                if m in missing:
                    fid = footnote_id(missing[m])
                    table.footnotes[fid] = missing[m].sentence()
                    label = f"{label}[^{fid}]"
                body.append([label, *[MISSING] * len(scores)])
                continue
            line = [label]
            for s in scores:
                text = cell.get((m, s), NOT_REPORTED)
                if s in best and text.startswith(f"{best[s]:.1f} /"):
                    text = f"**{text}**"
                line.append(text)
            body.append(line)
        table.markdown = markdown_table(["method", *scores], body)
        tables[group] = table
    return tables


def ood_conventions(per_method: PerMethod) -> list[str]:
    return sorted({str(d["ood/convention"]) for d in per_method.values() if d and "ood/convention" in d})


# ----------------------------------------------------------------------------------------------- quality bar

BASELINES = ("random_init", "supervised")


def _scored(methods: Sequence[str], probe: PerMethod, key: str) -> dict[str, float]:
    return {m: float((probe.get(m) or {})[key]) for m in methods if is_number((probe.get(m) or {}).get(key))}


def ssl_above_random_init(methods: Sequence[str], probe: PerMethod, key: str = "linear/top1") -> list[str] | None:
    """The SSL methods (not the two baselines) whose `key` is above random_init's; None without a random_init."""
    base = number((probe.get("random_init") or {}).get(key))
    if base is None:
        return None
    return [m for m, v in _scored([m for m in methods if m not in BASELINES], probe, key).items() if v > base]


def quality_bar(methods: Sequence[str], probe: PerMethod, key: str = "linear/top1", n_test: int | None = None) -> str:
    """Which SSL methods beat the random-init encoder on the same linear probe, computed from the files.

    With the test-set size `n_test`, each margin is compared with the 95% binomial half-width of one accuracy,
    1.96·sqrt(p(1-p)/n) at the random-init accuracy p, so a reader sees which margins are beyond sampling noise.
    """
    base = number((probe.get("random_init") or {}).get(key))
    if base is None:
        return f"Quality bar not evaluated: `random_init` has no `{key}` (run `dvc repro evaluate@random_init`)."
    ssl = [m for m in methods if m not in BASELINES]
    scored = _scored(ssl, probe, key)
    scale = percent_scale([base, *scored.values()], "pct")
    p = base * scale / 100
    noise = 196 * math.sqrt(p * (1 - p) / n_test) if n_test else None
    beat = sorted((m for m in scored if scored[m] > base), key=lambda m: -scored[m])
    not_beat = [m for m in ssl if m in scored and m not in beat]
    unknown = [m for m in ssl if m not in scored]

    def gap(m: str) -> str:
        margin = (scored[m] - base) * scale
        flag = "" if noise is None or abs(margin) > noise else ", within noise"
        return f"{m} ({margin:+.1f}{flag})"

    parts = [
        f"**Quality bar** (linear-probe test top-1 above the random-init encoder's {p * 100:.1f}%): "
        f"{len(beat)} of {len(scored)} SSL methods with results beat it"
        + (f": {', '.join(gap(m) for m in beat)}." if beat else ".")
    ]
    if not_beat:
        parts.append(f"Not above it: {', '.join(gap(m) for m in not_beat)}.")
    if unknown:
        parts.append(f"No linear-probe result: {', '.join(unknown)}.")
    parts.append("Margins in percentage points, single seed")
    if noise is not None:
        parts[-1] += f"; 95% binomial half-width of one accuracy at n={n_test} test images: ±{noise:.1f}"
    parts[-1] += "."
    return " ".join(parts)


def random_init_margins(methods: Sequence[str], probe: PerMethod, n_test: int | None, key: str = "linear/top1"
                        ) -> tuple[list[str], list[str]] | None:
    """(SSL methods above `random_init` beyond noise, the other SSL methods with a result), each in study order;
    None without a random_init result. Noise: the 95% binomial half-width of one accuracy at random_init's
    accuracy and `n_test` images (as in `quality_bar`); without `n_test` every positive margin counts."""
    base = number((probe.get("random_init") or {}).get(key))
    if base is None:
        return None
    scored = _scored([m for m in methods if m not in BASELINES], probe, key)
    scale = percent_scale([base, *scored.values()], "pct")
    p = base * scale / 100
    noise = 196 * math.sqrt(p * (1 - p) / n_test) if n_test else 0.0
    above = [m for m, v in scored.items() if (v - base) * scale > noise]
    return above, [m for m in scored if m not in above]


def _fraction_order(tag: str) -> float:
    try:
        return float(tag.removesuffix("pct"))
    except ValueError:
        return math.inf


def finetune_note(methods: Sequence[str], probe: PerMethod) -> str:
    """How fine-tuning compares with the linear probe on the same labels, per fraction, with the steps it ran; and,
    where it stays below, why (an empty string when no file has both numbers)."""
    lines = []
    for tag in sorted({k.rsplit("_", 1)[1] for k in keys_with_prefix(probe, "semisup/finetune_top1_")},
                      key=_fraction_order):
        pairs = {m: (number(d.get(f"semisup/finetune_top1_{tag}")), number(d.get(f"semisup/linear_top1_{tag}")))
                 for m in methods if (d := probe.get(m))}
        both = {m: (ft, lin) for m, (ft, lin) in pairs.items() if ft is not None and lin is not None}
        if not both:
            continue
        below = [m for m, (ft, lin) in both.items() if ft <= lin]
        steps = sorted({int(s) for m in both if (s := number((probe[m] or {}).get(f"semisup/finetune_steps_{tag}")))
                        is not None})
        span = "" if not steps else str(steps[0]) if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"
        ran = f" ({span} optimizer steps)" if span else ""
        lines.append(f"{tag}: fine-tuning{ran} beats the linear probe on the same labels for "
                     f"{len(both) - len(below)} of {len(both)} methods"
                     + (f"; not for {', '.join(below)}" if below else "") + ".")
    if not lines:
        return ""
    text = "**Fine-tuning vs the linear probe.** " + " ".join(lines)
    if any("; not for" in line for line in lines):
        text += (" Where fine-tuning stays below, it is the budget, not the method: the whole backbone is trained from "
                 "a few dozen or hundred labelled images, without augmentation, for the steps shown, whereas the "
                 "linear probe on the frozen embeddings runs to convergence (100 epochs). The protocol's 50 epochs "
                 "over 1 % / 10 % of ImageNet are thousands of steps; `probe.semisup.finetune.min_steps` sets this "
                 "study's (docs/protocols.md).")
    return text


def relative_mce_note(methods: Sequence[str], robust: PerMethod) -> str:
    """Why a method's relative mCE is not a number: the reference's errors do not rise above its clean error on
    some corruption (relative CE divides by that rise); empty when every method with a file has one."""
    undefined = {}
    for m in methods:
        data = robust.get(m)
        if data is None or number(data.get("robustness/relative_mce")) is not None:
            continue
        flat = [k.rsplit("/", 1)[1] for k, v in data.items()
                if k.startswith("robustness/relative_ce/") and number(v) is None]
        undefined[m] = flat
    if not undefined:
        return ""
    reasons = "; ".join(f"{m}: {', '.join(c) if c else 'no per-corruption value'}" for m, c in undefined.items())
    return ("**Relative mCE undefined** where the reference model's corrupted error is not above its clean error on "
            "a corruption (relative CE divides by that rise, Hendrycks & Dietterich 2019), at this number of "
            f"images per set: {reasons}.")
