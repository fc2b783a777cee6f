"""The protocol behind every number, written from the configs the stages ran with (pure: dicts in, markdown out).

Sources: the dataset config (`conf/dataset/<name>.yaml`, composed into `report`'s own config by `dataset=`), the
study's params file (the same `params.yaml` sections that dvc.yaml passes to each stage as Hydra overrides, so
they are what the stages ran with) and each method's resolved pretraining config `models/<method>/config.yaml`.
Each stage's section is named in full (every key, flattened) so that nothing is hidden; the prose above it picks
out the headline values by name where the section has them and leaves a clause out where it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sslbench.report.load import CORRUPTIONS, STANDARD_CORRUPTIONS
from sslbench.report.tables import MISSING, markdown_table

STAGE_SECTIONS = ("prepare", "pretrain", "embed", "probe", "corrupt", "robustness", "ood")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def lookup(tree: Mapping[str, Any] | None, *paths: str) -> Any:
    """The value at the first dotted path that exists in `tree` (None if none does)."""
    for path in paths:
        node: Any = tree
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    return None


def find_leaf(tree: Mapping[str, Any] | None, names: Iterable[str], under: str | None = None) -> Any:
    """Depth-first search for the first key in `names` (optionally only inside a subtree whose key is `under`)."""
    if not isinstance(tree, Mapping):
        return None
    wanted = tuple(names)
    if under is not None:
        for key, value in tree.items():
            if key == under and isinstance(value, Mapping):
                found = find_leaf(value, wanted)
                if found is not None:
                    return found
        for value in tree.values():
            found = find_leaf(value, wanted, under) if isinstance(value, Mapping) else None
            if found is not None:
                return found
        return None
    for name in wanted:
        if name in tree and not isinstance(tree[name], Mapping):
            return tree[name]
    for value in tree.values():
        found = find_leaf(value, wanted) if isinstance(value, Mapping) else None
        if found is not None:
            return found
    return None


def show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {show(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def settings_line(section: Mapping[str, Any]) -> str:
    """Every key of a params section, flattened: `linear.epochs=100`, `knn.k=20`, ..."""
    items = flatten(section)
    return ", ".join(f"`{k}={show(v)}`" for k, v in items.items()) if items else "(empty)"


def _clause(template: str, value: Any) -> str:
    return "" if value is None or value == "" else template.format(show(value))


# ----------------------------------------------------------------------------------------------- pretraining


def _backbone(config: Mapping[str, Any]) -> Any:
    value = lookup(config, "backbone.name", "pretrain.backbone", "model.backbone", "backbone")
    if isinstance(value, Mapping):
        value = value.get("name") or value.get("_target_")
    return value


def _stochastic(config: Mapping[str, Any]) -> Any:
    """"no", or the stochastic space with its knobs (β, M, prior) for Bayes-H/Bayes-Z runs."""
    space = find_leaf(config, ["stochastic_space"])
    if space is None:
        return None
    if space == "none":
        return "no"
    knobs = [
        _clause("β {}", find_leaf(config, ["beta"], under="method")),
        _clause("M {}", find_leaf(config, ["mc_samples", "n_samples"], under="method")),
        _clause("prior {}", find_leaf(config, ["prior"])),
    ]
    return f"{space}: " + ", ".join(k for k in knobs if k) if any(knobs) else str(space)


PRETRAIN_FIELDS: tuple[tuple[str, Any], ...] = (
    ("backbone", _backbone),
    ("epochs", lambda c: lookup(c, "pretrain.epochs", "trainer.max_epochs", "epochs")
     or find_leaf(c, ["epochs", "max_epochs"], under="pretrain")),
    ("batch size", lambda c: lookup(c, "pretrain.batch_size", "data.batch_size", "batch_size")
     or find_leaf(c, ["batch_size"], under="pretrain")),
    ("image size", lambda c: lookup(c, "dataset.image_size", "image_size")),
    ("seed", lambda c: lookup(c, "study.seed", "seed")),
    ("stochastic embedding", _stochastic),
)


def pretrain_protocol_table(methods: Sequence[str], configs: Mapping[str, Mapping[str, Any] | None],
                            models_dir: str) -> tuple[str, dict[str, str]]:
    """Per-method pretraining settings read from `models/<method>/config.yaml` (columns nobody has are dropped)."""
    values = {m: {name: get(c) for name, get in PRETRAIN_FIELDS} for m, c in configs.items() if c is not None}
    if not values:
        return "", {}
    kept = [name for name, _ in PRETRAIN_FIELDS if any(v[name] is not None for v in values.values())]
    footnotes: dict[str, str] = {}
    rows = []
    for m in methods:
        if m not in values:
            fid = f"models-{m}"
            footnotes[fid] = (f"`{models_dir}/{m}/config.yaml` is missing: run `dvc repro pretrain@{m}` to build it.")
            rows.append([f"{m}[^{fid}]", *[MISSING] * len(kept)])
        else:
            rows.append([m, *[show(values[m][k]) if values[m][k] is not None else "n/a" for k in kept]])
    return markdown_table(["method", *kept], rows), footnotes


def imported_encoders(configs: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Mapping[str, Any]]:
    """method -> the provenance of each encoder imported from a published file (`imported:` of its config.yaml,
    written by `pretrain@<method>`: path, format, branch, sha256, where in the file the backbone was, what was
    dropped), in study order."""
    return {m: c["imported"] for m, c in configs.items() if c and isinstance(c.get("imported"), Mapping)}


def imported_table(methods: Sequence[str], configs: Mapping[str, Mapping[str, Any] | None]) -> str:
    """One row per imported encoder: its file, format, branch, sha256, the publisher's linear top-1 and source."""
    imported = imported_encoders(configs)
    rows = []
    for m in methods:
        if m not in imported:
            continue
        source = imported[m]
        reported = lookup(configs[m], "method.reported") or {}
        top1 = reported.get("linear_top1") if isinstance(reported, Mapping) else None
        where = reported.get("source") if isinstance(reported, Mapping) else None
        dropped = source.get("dropped")
        dropped = dropped if isinstance(dropped, Mapping) else {}
        rows.append([
            m, f"`{source.get('path', '?')}`", str(source.get("format", "?")), show(source.get("branch") or "—"),
            f"`{str(source.get('sha256', ''))[:12]}…`",
            ", ".join(f"{k} ({v} tensors)" for k, v in dropped.items()) or "—",
            f"{top1:.1f}" if isinstance(top1, int | float) else "—", str(where) if where else "—",
        ])
    header = ["method", "weights file", "format", "branch", "sha256", "dropped", "published linear top-1",
              "reported in"]
    return markdown_table(header, rows) if rows else ""


# ----------------------------------------------------------------------------------------------- protocol text


def protocol_markdown(
    *,
    dataset: Mapping[str, Any],
    params: Mapping[str, Any] | None,
    params_file: str,
    selected_wd: Mapping[str, Any],
    reference: str,
    conventions: Sequence[str],
    ood_scores: Sequence[str],
    facts: Mapping[str, Any] | None = None,
) -> str:
    """The "Setup and protocol" prose: data, each evaluation protocol, and every params section in full."""
    params = params or {}
    facts = facts or {}
    name = dataset.get("name", "?")
    size = dataset.get("image_size")
    seed = lookup(params, "study.seed")
    sizes = lookup(params, f"prepare.{name}")
    probe = params.get("probe") if isinstance(params.get("probe"), Mapping) else None
    robustness = params.get("robustness") if isinstance(params.get("robustness"), Mapping) else None
    corrupt = params.get("corrupt") if isinstance(params.get("corrupt"), Mapping) else None
    ood = params.get("ood") if isinstance(params.get("ood"), Mapping) else None
    ood_sets = dataset.get("ood") or {}
    lines = []

    data = f"- **Data.** `{name}`"
    data += _clause(", {} classes", dataset.get("num_classes"))
    data += f", {size}×{size} RGB" if size else ""
    if isinstance(sizes, Mapping):
        split_sizes = {k: v for k, v in sizes.items() if str(k).startswith("n_")}
        if split_sizes:
            data += " (" + ", ".join(f"{k[2:]} {v}" for k, v in split_sizes.items()) + " images)"
    data += _clause("; study seed {}", seed) + "."
    data += " Every method is pretrained, embedded and evaluated on the same splits; one run per method."
    lines.append(data)

    lines.append(
        "- **Embeddings.** Each frozen encoder (eval mode) embeds every split once; all probes read those "
        "non-augmented embeddings. Bayes-H models are represented by μ of the stochastic space, Bayes-Z models by "
        "the deterministic h (Janiak et al. 2024; docs/methods.md)."
    )
    wds = sorted({show(v) for v in selected_wd.values() if v is not None})
    lines.append(
        "- **Linear probe** (the DISSL protocol, Dubois et al. 2022; docs/protocols.md). One linear layer on "
        "standardised embeddings, SGD with momentum 0.9 "
        "and a cosine schedule"
        + _clause(", {} epochs", find_leaf(probe, ["epochs"], under="linear"))
        + _clause(", lr {}", find_leaf(probe, ["lr"], under="linear"))
        + _clause(", batch {}", find_leaf(probe, ["batch_size"], under="linear"))
        + "; the weight decay is selected on the validation split"
        + _clause(" from {}", find_leaf(probe, ["weight_decays", "weight_decay", "wds"], under="linear"))
        + " (never on test), and the test top-1 of the selected probe is reported"
        + (f" (selected: {', '.join(wds)}; per method in the table)" if wds else "")
        + ". Test top-1 of every weight decay is listed separately for comparison with the DISSL "
        "repository's max-over-test numbers. Top-1 is micro accuracy; macro accuracy is the mean of per-class recalls."
    )
    lines.append(
        "- **kNN** (weighted vote of DINO's evaluation, Caron et al. 2021; docs/protocols.md). k-nearest-neighbour "
        "classifier over the L2-normalised training embeddings (no training)"
        + _clause(", k = {}", find_leaf(probe, ["k", "n_neighbors"], under="knn"))
        + _clause(", temperature {}", find_leaf(probe, ["temperature"], under="knn"))
        + "."
    )
    labels = {k.rsplit("_", 1)[-1].replace("pct", "%"): v for k, v in facts.items()
              if k.startswith("semisup/n_labels_")}
    fractions = find_leaf(probe, ["fractions", "subsets"], under="semisup")
    if labels:
        subsets = " and ".join(f"{tag} ({show(n)} labels)" for tag, n in labels.items())
    elif isinstance(fractions, list | tuple) and fractions:
        subsets = " and ".join(f"{100 * float(f):g}%" for f in fractions)
    else:
        subsets = "1% and 10%"
    lines.append(
        f"- **Semi-supervised** (Janiak et al. 2024; docs/protocols.md). Class-balanced subsets of {subsets} of the "
        "training labels: "
        "full fine-tuning of backbone + linear head (AdamW, cosine schedule"
        + _clause(", at most {} epochs", find_leaf(probe, ["epochs", "max_epochs"], under="semisup"))
        + _clause(", early stopping with patience {}", find_leaf(probe, ["patience"], under="semisup"))
        + "; model selection on the validation split, never on test), and the cheap variant: the linear probe "
        "trained on the same subsets."
    )
    transfer = dataset.get("transfer") or []
    lines.append(
        "- **Transfer** (docs/protocols.md). Linear probe of the frozen encoder on "
        + (", ".join(f"`{t}`" for t in transfer) if transfer else "the transfer sets")
        + " (their own train/val/test splits); micro top-1 is the headline, macro accuracy is listed beside it."
    )
    chosen = find_leaf(corrupt, ["corruptions"]) or find_leaf(robustness, ["corruptions"])
    severities = find_leaf(corrupt, ["severities"]) or find_leaf(robustness, ["severities"])
    lines.append(
        "- **Corruption robustness** (Hendrycks & Dietterich 2019; docs/protocols.md). "
        + f"Corrupted copies of the test set: {len(CORRUPTIONS)} corruptions in 5 groups × severities 1–5"
        + (f" (selected: corruptions `{show(chosen)}`, severities `{show(severities)}`)" if chosen or severities
           else "")
        + _clause(", source `{}`", dataset.get("corruption_source"))
        + _clause(", {} test images per corrupted set", facts.get("robustness/n_images"))
        + "; the linear probe above, trained on the clean train embeddings (weight decay selected on validation) is "
        "applied to the embeddings of each corrupted set; E(c,s) = its top-1 error on corruption c at severity s. "
        f"CE(c) = Σ_s E(c,s) / Σ_s E_ref(c,s) and **mCE = mean CE over the {len(STANDARD_CORRUPTIONS)} standard "
        f"corruptions, normalised by {reference}**"
        + (f" (reference clean error {100 * float(facts['robustness/reference_clean_error']):.1f}%)"
           if "robustness/reference_clean_error" in facts else "")
        + "; relative CE(c) = Σ_s (E(c,s) − E_clean) / "
        "Σ_s (E_ref(c,s) − E_ref,clean). Mean error (15) = unnormalised mean over 15 × 5 (the CIFAR-10-C "
        "convention); mean error (19) = mean over all 19 corruptions (the number of Chhipa et al. 2023)."
    )
    near = ", ".join(f"`{k}`" for k in (ood_sets.get("near") or {}))
    far = ", ".join(f"`{k}`" for k in (ood_sets.get("far") or {}))
    val = ", ".join(f"`{k}`" for k in (ood_sets.get("validation") or {}))
    convention = ", ".join(f"`{c}`" for c in conventions) or "not stated in the files"
    lines.append(
        "- **OOD detection** (OpenOOD v1.5, Zhang et al. 2023; docs/protocols.md). In-distribution test set against "
        "near-OOD "
        + (near or "sets")
        + " and far-OOD "
        + (far or "sets")
        + ". MSP, max-logit and energy use the linear probe above; the other scores are fitted on the train "
        "embeddings. **Convention: OOD is the positive class** (OpenOOD), so AUROC is the probability that an OOD "
        "image scores as more anomalous than an in-distribution one and FPR95 is the fraction of in-distribution "
        f"images flagged when 95% of OOD images are caught (files say: {convention}). Scores: "
        + (", ".join(f"`{s}`" for s in ood_scores) or "as listed")
        + _clause("; kNN score k = {}", find_leaf(ood, ["k", "knn_k"]))
        + "."
        + (f" Scores whose sign is disputed are oriented on the validation OOD sets {val}, never on test." if val
           else "")
    )
    lines.append("")
    if not params_file:
        lines.append("Settings as run: no params file given (`report.params_file`); each stage's defaults are in "
                     "`src/sslbench/conf/<stage>.yaml`.")
        return "\n".join(lines)
    lines.append(f"Settings as run (`{params_file}` sections passed to each stage as Hydra overrides):")
    lines.append("")
    found = False
    for section in STAGE_SECTIONS:
        if isinstance(params.get(section), Mapping):
            lines.append(f"- `{section}`: {settings_line(params[section])}")
            found = True
    if not found:
        lines.append(f"- no stage sections found in `{params_file}`; see each stage's config under "
                     "`src/sslbench/conf/`.")
    return "\n".join(lines)
