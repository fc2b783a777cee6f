"""A fake but realistic study for the report tests: every stage's metrics JSON, plot CSVs, Grad-CAM PNGs, model
configs and a params file, as the stage contracts describe them (values are generated, not results)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import yaml

from sslbench.report.load import CORRUPTION_GROUPS, CORRUPTIONS, STANDARD_CORRUPTIONS, corruption_group

METHODS = ("random_init", "supervised", "simclr", "byol", "barlow_twins_bayes_h")
SCORES = ("msp", "energy", "mahalanobis", "knn")
# linear-probe top-1 per method; byol's probe is deliberately missing in the default fake study
LINEAR = {"random_init": 0.329, "supervised": 0.80, "simclr": 0.464, "byol": 0.45, "barlow_twins_bayes_h": 0.31}


def _json(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def write_fake_study(
    root: Path,
    methods: Sequence[str] = METHODS,
    missing: Collection[tuple[str, str]] = (("probe", "byol"), ("robustness", "byol")),
    params_methods: Sequence[str] | None = None,
) -> Path:
    """Write `root/{reports,models,params.yaml}`; `missing` = (area, method) pairs to leave out. Returns root."""
    rng = np.random.default_rng(0)
    reports = root / "reports"
    for i, m in enumerate(methods):
        acc = LINEAR.get(m, 0.4 + 0.01 * i)
        stochastic = m.endswith(("_bayes_h", "_bayes_z"))
        if ("pretrain", m) not in missing:
            _json(reports / "pretrain" / f"{m}.json", {
                "pretrain/ssl_loss": float(rng.uniform(0.5, 5)), "pretrain/online_top1": acc - 0.05,
                "pretrain/images_per_s": float(rng.uniform(300, 600)), "pretrain/feature_std": 0.03,
                "pretrain/effective_rank": float(rng.uniform(5, 60)), "pretrain/wall_s": float(rng.uniform(40, 95)),
                "pretrain/steps": 30,
            })
            # the pretrain stage's DVCLive log: a TSV per curve, the collapse indicators at step 0 and epoch ends
            live = reports / "pretrain" / "live" / m / "plots" / "metrics"
            live.mkdir(parents=True, exist_ok=True)
            curves = {"epoch": [(s - 1) // 5 for s in range(1, 31)],
                      "ssl_loss": [3 * np.exp(-s / 20) + 0.5 for s in range(1, 31)],
                      "online_top1": [acc * (1 - np.exp(-s / 10)) for s in range(1, 31)],
                      "lr": [0.3] * 30, "images_per_s": [400.0] * 30}
            for name, values in curves.items():
                (live / f"{name}.tsv").write_text(f"step\t{name}\n" + "".join(
                    f"{s}\t{v}\n" for s, v in enumerate(values, start=1)))
            (live / "feature_std.tsv").write_text("step\tfeature_std\n" + "".join(
                f"{s}\t{0.1 - 0.002 * s}\n" for s in range(0, 31, 5)))
            (live.parent.parent / "metrics.json").write_text(json.dumps({"step": 30, "ssl_loss": 0.8}))
        if ("probe", m) not in missing:
            wds = {f"linear/top1_wd{wd:.0e}": acc - 0.01 * k for k, wd in enumerate((1e-4, 1e-5, 1e-6))}
            _json(reports / "probe" / f"{m}.json", {
                "linear/top1": acc, "linear/macro_acc": acc - 0.01, **wds, "linear/weight_decay": 1e-4,
                "linear/val_top1": acc + 0.01, "knn/top1": acc - 0.03, "knn/macro_acc": acc - 0.04,
                "semisup/n_labels_1pct": 40, "semisup/n_labels_10pct": 400,
                "semisup/finetune_epochs_1pct": 3, "semisup/finetune_epochs_10pct": 3,
                "semisup/finetune_top1_1pct": acc - 0.15, "semisup/finetune_top1_10pct": acc - 0.05,
                "semisup/linear_top1_1pct": acc - 0.2, "semisup/linear_top1_10pct": acc - 0.08,
                "transfer/digits/top1": acc + 0.1, "transfer/digits/macro_acc": acc + 0.09,
            })
        if ("robustness", m) not in missing:
            clean = 1 - acc
            errors = {(c, s): min(0.95, clean + 0.04 * s * (1 + j % 3) / 3)
                      for j, c in enumerate(CORRUPTIONS) for s in range(1, 6)}
            ref = {(c, s): min(0.95, 0.2 + 0.05 * s) for c in CORRUPTIONS for s in range(1, 6)}
            ce = {c: sum(errors[c, s] for s in range(1, 6)) / sum(ref[c, s] for s in range(1, 6)) for c in CORRUPTIONS}
            metrics: dict[str, object] = {
                "robustness/clean_error": clean,
                "robustness/mce": float(np.mean([ce[c] for c in STANDARD_CORRUPTIONS])),
                "robustness/relative_mce": 0.9,
                "robustness/mean_error_15": float(np.mean([errors[c, s] for c in STANDARD_CORRUPTIONS
                                                           for s in range(1, 6)])),
                "robustness/mean_error_19": float(np.mean(list(errors.values()))),
                **{f"robustness/group/{g}/error": float(np.mean([errors[c, s] for c in cs for s in range(1, 6)]))
                   for g, cs in CORRUPTION_GROUPS.items()},
                **{f"robustness/group/{g}/ce": float(np.mean([ce[c] for c in cs]))
                   for g, cs in CORRUPTION_GROUPS.items()},
                **{f"robustness/error/{c}": float(np.mean([errors[c, s] for s in range(1, 6)])) for c in CORRUPTIONS},
                **{f"robustness/ce/{c}": ce[c] for c in CORRUPTIONS},
                **{f"robustness/relative_ce/{c}": ce[c] * 0.9 for c in CORRUPTIONS},
                "robustness/reference": "supervised",
                "robustness/reference_clean_error": 0.2,
                "robustness/n_images": 100,
            }
            _json(reports / "robustness" / f"{m}.json", metrics)
            plots = reports / "robustness" / "plots" / m
            plots.mkdir(parents=True, exist_ok=True)
            (plots / "errors.csv").write_text(  # the robustness stage's layout
                "set,corruption,group,severity,error,reference_error,clean_error,n\n" + "".join(
                    f"{c}_{s},{c},{corruption_group(c)},{s},{e:.4f},{ref[c, s]:.4f},{clean:.4f},100\n"
                    for (c, s), e in errors.items()))
            gradcam = reports / "robustness" / "gradcam" / f"{m}.png"
            gradcam.parent.mkdir(parents=True, exist_ok=True)
            import matplotlib.image as mpimg

            mpimg.imsave(gradcam, rng.uniform(0, 1, (32, 96, 3)))
        if ("ood", m) not in missing:
            # the ood stage's layout: group means, per-set keys, null stochastic scores for deterministic models
            ood: dict[str, object] = {"ood/convention": "ood_positive",
                                      "ood/skipped": "" if stochastic else f"mean_sigma: {m} is deterministic"}
            for group, shift in (("near", 0.0), ("far", 0.1)):
                curves = {}
                for score in (*SCORES, "mean_sigma"):
                    auroc = float(np.clip(0.5 + (acc - 0.3) + shift + rng.normal(0, 0.03), 0, 1))
                    defined = stochastic or score != "mean_sigma"
                    for key, value in (("auroc", auroc), ("fpr95", 1.1 - auroc), ("aupr_in", auroc)):
                        ood[f"ood/{group}/{score}/{key}"] = value if defined else None
                        ood[f"ood/{'shapes_heldout' if group == 'near' else 'digits'}/{score}/{key}"] = (
                            value if defined else None)
                    if defined:
                        curves[score] = np.linspace(0, 1, 30) ** (0.3 + (1 - auroc))
                roc = reports / "ood" / "plots" / m / f"roc_{group}.csv"
                roc.parent.mkdir(parents=True, exist_ok=True)
                fpr = np.linspace(0, 1, 30)
                roc.write_text("fpr," + ",".join(curves) + "\n" + "".join(
                    f"{f:.4f}," + ",".join(f"{curves[k][i]:.4f}" for k in curves) + "\n" for i, f in enumerate(fpr)))
            ood["ood/sign/mean_sigma"] = -1 if stochastic else None
            ood["ood/validation/mean_sigma/auroc"] = 0.6 if stochastic else None
            _json(reports / "ood" / f"{m}.json", ood)
        config = {  # the resolved pretrain config that save_encoder writes
            "study": {"seed": 0}, "dataset": {"name": "shapes", "image_size": 32},
            "backbone": {"name": "convnet", "out_dim": None},
            "method": {"name": m, "module": {"beta": 1e-3, "mc_samples": 12} if stochastic else {}},
            "pretrain": {"epochs": 0 if m == "random_init" else 6, "batch_size": 256, "max_steps": -1},
            "encoder": {"stochastic_space": "h" if stochastic else "none", "prior": "standard"},
        }
        (root / "models" / m).mkdir(parents=True, exist_ok=True)
        (root / "models" / m / "config.yaml").write_text(yaml.safe_dump(config))
    (reports / "corrupt").mkdir(parents=True, exist_ok=True)
    (reports / "corrupt" / "ssim.csv").write_text("corruption,group,severity,ssim_mean,ssim_std,n\n" + "".join(
        f"{c},{corruption_group(c)},{s},{1 - 0.12 * s * (1 + j % 4) / 4:.4f},0.05,100\n"
        for j, c in enumerate(CORRUPTIONS) for s in range(1, 6)))
    params = {
        "study": {"seed": 0, "dataset": "shapes"},
        "methods": {m: {} for m in (params_methods or methods)},
        "prepare": {"shapes": {"n_train": 4000, "n_val": 500, "n_test": 1000, "n_ood": 500}},
        "pretrain": {"epochs": 6, "batch_size": 256},
        "probe": {"n_samples": 12,
                  "linear": {"epochs": 100, "lr": 0.3, "batch_size": 512, "weight_decays": [1e-4, 1e-5, 1e-6]},
                  "knn": {"k": 20, "temperature": 0.07},
                  "semisup": {"fractions": [0.01, 0.1], "finetune": {"epochs": 3, "patience": 5}}},
        "corrupt": {"corruptions": "all", "severities": "all", "n_images": 100},
        "robustness": {"reference": "auto"},
        "ood": {"knn_k": 50, "kmeans_clusters": 10},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root
