"""`corrupt`: the corrupted test sets, 19 corruptions x 5 severities, generated or located (DESIGN.md §2).

python -m sslbench.stages.corrupt dataset=shapes study.seed=0 corrupt.n_images=100 corrupt.workers=2

Writes `data/corrupted/<dataset>/<corruption>/<severity>/` (images.npy + labels.npy + meta.json with the source
test `index`, or index.csv + meta.json for ImageNet-C) and `data/corrupted/<dataset>/meta.json` (the family),
then `reports/corrupt/ssim.csv` + `ssim.png` (SSIM of each corrupted image to its own clean image) and
`reports/corrupt/samples.png`. The whole `data/corrupted/<dataset>` folder is replaced atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from sslbench.data import corruptions as C
from sslbench.data.splits import SplitSource, open_split, write_index
from sslbench.errors import UserError, unknown_choice
from sslbench.eval.ssim import paired_ssim, ssim_table_figure
from sslbench.io import atomic_path, ensure_writable, write_split, write_text
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.corrupt")


def _spec(value: Any) -> Any:
    return list(value) if isinstance(value, ListConfig) else value


def _n_images(value: Any) -> int | None:
    if isinstance(value, str) and value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"corrupt.n_images must be a positive integer or `all`, got {value!r}")
    return value


def _generator_name() -> str:
    try:
        return f"imagecorruptions-imaug {version('imagecorruptions-imaug')}"
    except PackageNotFoundError:  # pragma: no cover - the original package, same import name
        return "imagecorruptions"


def run(cfg: DictConfig) -> dict[str, Any]:
    c = cfg.corrupt
    # ---- check everything before any work
    corruption_names = C.resolve_corruptions(_spec(c.corruptions))
    severities = C.resolve_severities(_spec(c.severities))
    n_images = _n_images(c.n_images)
    if c.subset not in ("first", "random"):
        raise unknown_choice("corrupt.subset", c.subset, ("first", "random"))
    if int(c.workers) < 1:
        raise UserError(f"corrupt.workers must be >= 1, got {c.workers}")
    if int(c.min_size) < C.MIN_SIZE:
        raise UserError(f"corrupt.min_size must be >= {C.MIN_SIZE} (imagecorruptions' minimum), got {c.min_size}")
    if c.resize not in C.RESIZE_POLICIES:
        raise unknown_choice("corrupt.resize", c.resize, C.RESIZE_POLICIES)
    source_kind = str(cfg.dataset.corruption_source)
    if source_kind not in C.SOURCES:
        raise unknown_choice("dataset.corruption_source", source_kind, C.SOURCES)
    seed = int(cfg.study.seed)
    dataset = str(cfg.dataset.name)
    data_root = Path(cfg.paths.data)
    reports = Path(cfg.paths.reports) / "corrupt"
    ensure_writable(C.corrupted_root(data_root, dataset), reports / "ssim.csv")
    test = open_split(data_root, dataset, str(cfg.dataset.test))
    index = C.select_indices(len(test), n_images, str(c.subset), seed)
    default_raw = {"imagenet_c": "ImageNet-C", "cifar10_c": "CIFAR-10-C"}.get(source_kind, "")
    raw_root = Path(c.root) if c.root else data_root / "raw" / default_raw

    if source_kind == "generate" and len(index):
        _check_resolution(cfg, test, test.images(index[:1]).shape[1:3], corruption_names)

    start = time.perf_counter()
    family: dict[str, Any] = {
        "dataset": dataset,
        "source_split": str(cfg.dataset.test),
        "source": source_kind,
        "corruptions": corruption_names,
        "severities": severities,
        "index": index.tolist(),
        "seed": seed,
        "classes": test.classes,
    }
    ssim_rows: list[dict[str, Any]] = []
    firsts: dict[tuple[str, int], np.ndarray] = {}
    with atomic_path(C.corrupted_root(data_root, dataset)) as tmp:
        tmp.mkdir()
        if source_kind == "generate":
            clean = _generate(cfg, test, index, corruption_names, severities, tmp, family, ssim_rows, firsts)
        elif source_kind == "cifar10_c":
            clean = _locate_cifar10_c(raw_root, test, index, corruption_names, severities, tmp, family, ssim_rows,
                                      firsts)
        else:
            clean = _locate_imagenet_c(raw_root, cfg, test, index, corruption_names, severities, tmp, family,
                                       ssim_rows, firsts)
        C.write_summary(tmp, family)
    seconds = time.perf_counter() - start

    _write_ssim(ssim_rows, reports, f"SSIM to clean: {family['name']}, n={len(index)} per set")
    if c.samples and len(index):
        C.corruption_grid(clean[0], firsts, reports / "samples.png", f"{family['name']}: test image {int(index[0])}")
    n_sets = len(corruption_names) * len(severities)
    rate = n_sets * len(index) / max(seconds, 1e-9)
    log.info(
        "corrupt: %s, %d sets x %d images (%s) in %.1fs (%.0f img/s), mean SSIM %.3f -> %s",
        family["name"], n_sets, len(index), source_kind, seconds, rate,
        float(np.mean([r["ssim_mean"] for r in ssim_rows])) if ssim_rows else float("nan"),
        C.corrupted_root(data_root, dataset),
    )
    return {"name": family["name"], "sets": n_sets, "n_images": len(index), "seconds": seconds,
            "images_per_s": rate}


def _ssim_row(corruption: str, severity: int, values: np.ndarray) -> dict[str, Any]:
    return {
        "corruption": corruption,
        "group": C.GROUP_OF[corruption],
        "severity": severity,
        "ssim_mean": float(values.mean()) if len(values) else float("nan"),
        "ssim_std": float(values.std()) if len(values) else float("nan"),
        "n": len(values),
    }


def _set_meta(family: dict[str, Any], corruption: str, severity: int, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": family["dataset"],
        "name": family["name"],
        "source": family["source"],
        "source_split": family["source_split"],
        "corruption": corruption,
        "group": C.GROUP_OF[corruption],
        "severity": severity,
        "seed": family["seed"],
        "classes": family["classes"],
        "index": family["index"],
        **extra,
    }


def _check_resolution(cfg: DictConfig, test: SplitSource, shape: tuple[int, ...], corruption_names: list[str]) -> None:
    """Say, per corruption, how images below `corrupt.min_size` are handled; refuse them under `resize=error`."""
    c = cfg.corrupt
    height, width = int(shape[0]), int(shape[1])
    if min(height, width) >= int(c.min_size):
        return
    if c.resize == "error":
        raise UserError(
            f"{test.name} images are {height}x{width} px, below corrupt.min_size={c.min_size} (imagecorruptions "
            "needs >= 32 px); set corrupt.resize=upsample to corrupt them upsampled"
        )
    for name in corruption_names:
        log.warning(
            "corrupt: %s images are %dx%d px, below corrupt.min_size=%d: %s is applied with policy "
            "corrupt.resize=upsample (bicubic up to %d px, corrupt, box-filter back to %dx%d)",
            test.name, height, width, c.min_size, name, c.min_size, height, width,
        )


def _generate(
    cfg: DictConfig, test: SplitSource, index: np.ndarray, corruption_names: list[str], severities: list[int],
    out: Path, family: dict[str, Any], ssim_rows: list[dict[str, Any]], firsts: dict[tuple[str, int], np.ndarray],
) -> np.ndarray:
    c = cfg.corrupt
    clean = test.images(index)
    labels = test.labels[index]
    family["name"] = f"{family['dataset']} test with ImageNet-C corruptions (imagecorruptions, ImageNet-C constants)"
    family["constants"] = "imagenet_c"
    family["generator"] = _generator_name()
    resized = min(clean.shape[1:3]) < int(c.min_size)
    family["resize"] = {"min_size": int(c.min_size), "policy": str(c.resize), "applied": resized}
    for corruption, severity, images in C.generate_corrupted(
        clean, index, corruption_names, severities, seed=family["seed"], workers=int(c.workers),
        min_size=int(c.min_size), resize=str(c.resize),
    ):
        meta = _set_meta(family, corruption, severity, generator=family["generator"], constants="imagenet_c",
                         resize=family["resize"])
        write_split(out / corruption / str(severity), images, labels, meta)
        ssim_rows.append(_ssim_row(corruption, severity, paired_ssim(clean, index, images, index)))
        if len(images):
            firsts[(corruption, severity)] = images[0]
    return clean


def _locate_cifar10_c(
    root: Path, test: SplitSource, index: np.ndarray, corruption_names: list[str], severities: list[int],
    out: Path, family: dict[str, Any], ssim_rows: list[dict[str, Any]], firsts: dict[tuple[str, int], np.ndarray],
) -> np.ndarray:
    from tqdm import tqdm

    family.update(name="CIFAR-10-C", constants="cifar10_c", root=str(root))
    clean = test.images(index)
    for corruption in corruption_names:  # check every file before writing anything
        if not (root / f"{corruption}.npy").is_file() or not (root / "labels.npy").is_file():
            missing = root / f"{corruption}.npy" if (root / "labels.npy").is_file() else root / "labels.npy"
            raise UserError(f"CIFAR-10-C not found: {missing} is missing. Get {C.CIFAR10_C_HELP}; "
                            "set corrupt.root=<root>")
    pairs = [(c, s) for c in corruption_names for s in severities]
    for corruption, severity in tqdm(pairs, desc="CIFAR-10-C", unit="set"):
        images, labels = C.load_cifar10_c(root, corruption, severity, index, test.labels)
        if images.shape[1:] != clean.shape[1:]:
            raise UserError(
                f"CIFAR-10-C images are {images.shape[1:]} but the study's test images are {clean.shape[1:]}; "
                "prepare CIFAR-10 at 32 px (dataset.image_size=32)"
            )
        write_split(out / corruption / str(severity), images, labels,
                    _set_meta(family, corruption, severity, constants="cifar10_c", root=str(root)))
        ssim_rows.append(_ssim_row(corruption, severity, paired_ssim(clean, index, images, index)))
        if len(images):
            firsts[(corruption, severity)] = images[0]
    return clean


def _test_paths(test: SplitSource) -> list[str]:
    index_csv = test.directory / "index.csv"
    if not index_csv.is_file():
        raise UserError(
            f"ImageNet-C pairs by file name with the ImageNet validation images, but {test.directory} has no "
            "index.csv (paths); prepare ImageNet as an index (`dvc repro prepare`)"
        )
    with index_csv.open(newline="") as fh:
        return [row["path"] for row in csv.DictReader(fh)]


def _locate_imagenet_c(
    root: Path, cfg: DictConfig, test: SplitSource, index: np.ndarray, corruption_names: list[str],
    severities: list[int], out: Path, family: dict[str, Any], ssim_rows: list[dict[str, Any]],
    firsts: dict[tuple[str, int], np.ndarray],
) -> np.ndarray:
    from tqdm import tqdm

    family.update(name="ImageNet-C", constants="imagenet_c", root=str(root))
    size = int(test.meta.get("image_size", cfg.dataset.image_size))
    paths = _test_paths(test)
    pairs = [(c, s) for c in corruption_names for s in severities]
    rows = {p: C.imagenet_c_rows(root, *p, index, paths, test.labels, test.classes) for p in pairs}  # checks first
    test_root = Path(test.meta["root"])
    clean = np.stack([C.imagenet_c_clean_view(test_root / paths[i], size) for i in index]) if len(index) else \
        np.zeros((0, size, size, 3), np.uint8)
    for corruption, severity in tqdm(pairs, desc="ImageNet-C", unit="set"):
        meta = _set_meta(family, corruption, severity, constants="imagenet_c", root=str(root), image_size=size)
        directory = out / corruption / str(severity)
        write_index(directory, rows[(corruption, severity)], meta)
        located = SplitSource(directory, np.asarray([r[1] for r in rows[(corruption, severity)]]), meta,
                                _paths=[root / r[0] for r in rows[(corruption, severity)]])
        images = located.images(slice(None))
        ssim_rows.append(_ssim_row(corruption, severity, paired_ssim(clean, index, images, index)))
        if len(images):
            firsts[(corruption, severity)] = images[0]
    return clean


def _write_ssim(rows: list[dict[str, Any]], reports: Path, title: str) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["corruption", "group", "severity", "ssim_mean", "ssim_std", "n"],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "ssim_mean": f"{row['ssim_mean']:.6f}", "ssim_std": f"{row['ssim_std']:.6f}"})
    write_text(reports / "ssim.csv", buffer.getvalue())
    if rows:
        ssim_table_figure(rows, str(reports / "ssim.png"), title)


main = stage_main(run, "corrupt")

if __name__ == "__main__":
    main()
