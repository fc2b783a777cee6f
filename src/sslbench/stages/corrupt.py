"""`corrupt`: the corrupted test sets, 19 corruptions x 5 severities, generated or located
(`sslbench.corrupted_sets`).

python -m sslbench.stages.corrupt dataset=shapes study.seed=0 corrupt.n_images=100 corrupt.workers=2

Writes `data/corrupted/<dataset>/<corruption>/<severity>/` (images.npy + labels.npy + meta.json with the source
test `index`, or index.csv + meta.json for ImageNet-C) and `data/corrupted/<dataset>/meta.json` (the family),
then `reports/corrupt/ssim.csv` + `ssim.png` (SSIM of each corrupted image to its own clean image) and
`reports/corrupt/samples.png`. The whole `data/corrupted/<dataset>` folder is replaced atomically; a run that fails
removes the folders it created on the way (`data/corrupted/` itself included), so it leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from sslbench.corrupted_sets import generate_sets, locate_cifar10_c, locate_imagenet_c, test_paths
from sslbench.data import corruptions as C
from sslbench.data.splits import SplitSource, open_split
from sslbench.errors import UserError, unknown_choice
from sslbench.io import atomic_path, ensure_writable, sha256_file, write_text
from sslbench.report.panels import corruption_grid, ssim_table_figure
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


def run(cfg: DictConfig) -> dict[str, Any]:
    c = cfg.corrupt
    # ---- check everything before any work
    corruption_names = C.resolve_corruptions(_spec(c.corruptions))
    severities = C.resolve_severities(_spec(c.severities))
    n_images = _n_images(c.n_images)
    if c.subset not in C.SUBSETS:
        raise unknown_choice("corrupt.subset", c.subset, C.SUBSETS)
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
    subset = _listed_subset(test, str(c.subset_list), n_images) if c.subset == "robustbench" else None
    index = subset[0] if subset else C.select_indices(len(test), n_images, str(c.subset), seed)
    raw_root = located_root(cfg)

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
    if subset:
        family["subset"] = subset[1]
    with _removed_on_failure(C.corrupted_root(data_root, dataset).parent), \
            atomic_path(C.corrupted_root(data_root, dataset)) as tmp:
        tmp.mkdir()
        if source_kind == "generate":
            built = generate_sets(test, index, corruption_names, severities, tmp, family, workers=int(c.workers),
                                  min_size=int(c.min_size), resize=str(c.resize))
        elif source_kind == "cifar10_c":
            built = locate_cifar10_c(raw_root, test, index, corruption_names, severities, tmp, family)
        else:
            built = locate_imagenet_c(raw_root, test, index, corruption_names, severities, tmp, family,
                                      image_size=int(cfg.dataset.image_size))
        C.write_summary(tmp, family)
    seconds = time.perf_counter() - start

    _write_ssim(built.ssim_rows, reports, f"SSIM to clean: {family['name']}, n={len(index)} per set")
    if c.samples and len(index):
        corruption_grid(built.clean[0], built.firsts, reports / "samples.png",
                        f"{family['name']}: test image {int(index[0])}")
    n_sets = len(corruption_names) * len(severities)
    rate = n_sets * len(index) / max(seconds, 1e-9)
    log.info(
        "corrupt: %s, %d sets x %d images (%s) in %.1fs (%.0f img/s), mean SSIM %.3f -> %s",
        family["name"], n_sets, len(index), source_kind, seconds, rate,
        float(np.mean([r["ssim_mean"] for r in built.ssim_rows])) if built.ssim_rows else float("nan"),
        C.corrupted_root(data_root, dataset),
    )
    return {"name": family["name"], "sets": n_sets, "n_images": len(index), "seconds": seconds,
            "images_per_s": rate}


def _listed_subset(test: SplitSource, configured: str, n_images: int | None) -> tuple[np.ndarray, dict[str, str]]:
    """RobustBench's ImageNet-C protocol: the test rows of its 5,000 listed validation images (the first
    `n_images`), and what the family's meta.json records of the list."""
    if not (test.directory / "index.csv").is_file():
        raise UserError(f"corrupt.subset=robustbench names ImageNet validation images, but the test split "
                        f"{test.directory} is not an ImageNet one (no index.csv of image paths): use it with "
                        "dataset=imagenet, or corrupt.subset=random")
    listed = C.robustbench_list(configured)
    index = C.select_listed(test_paths(test), listed, n_images)
    return index, {"name": "robustbench", "list": str(listed), "sha256": sha256_file(listed)}


LOCATED_FOLDERS = {"imagenet_c": "ImageNet-C", "cifar10_c": "CIFAR-10-C"}


def located_root(cfg: DictConfig) -> Path:
    """The folder of a located corrupted family: `corrupt.root`, or when it is empty `<prepare.root>/ImageNet-C`
    (`CIFAR-10-C`), the real datasets' folder, itself `<paths.data>/raw` when `prepare.root` is empty too."""
    if cfg.corrupt.root:
        return Path(cfg.corrupt.root)
    raw = Path(cfg.prepare.root) if cfg.prepare.root else Path(cfg.paths.data) / "raw"
    return raw / LOCATED_FOLDERS.get(str(cfg.dataset.corruption_source), "")


@contextlib.contextmanager
def _removed_on_failure(folder: Path) -> Iterator[None]:
    """On an exception in the block, remove `folder` and those of its parents that did not exist before it, if they
    are empty (`atomic_path` creates the parent of its target and leaves it)."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in created:
            try:
                path.rmdir()
            except OSError:
                break
        raise


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
