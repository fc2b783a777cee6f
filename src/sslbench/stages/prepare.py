"""`prepare`: materialise every dataset the study names under `data/datasets/` (`sslbench.data.registry`), with a
sample grid per split (`reports/prepare/<dataset>_<split>.png`).

Before anything is written it checks that every real dataset the study names is on disk under `prepare.root`
(default `data/raw`) or, with `prepare.download=true`, can be downloaded, naming every one that cannot with its
expected layout; then it downloads the missing ones; only then does it write the first dataset.

python -m sslbench.stages.prepare dataset=shapes study.seed=0 prepare.shapes.n_train=4000
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sslbench.data.embedded import ShapesConfig
from sslbench.data.real import RealContext
from sslbench.data.registry import check_available, check_names, fetch_missing, prepare_dataset
from sslbench.data.splits import check_class_count, open_split
from sslbench.errors import UserError
from sslbench.io import ensure_writable
from sslbench.report.panels import sample_grid
from sslbench.stages._entry import stage_main

log = logging.getLogger("sslbench.prepare")


def run(cfg: DictConfig) -> dict[str, Any]:
    names = list(dict.fromkeys([*cfg.dataset.prepare, *cfg.prepare.extra]))
    check_names(names)
    shapes = ShapesConfig(**cfg.prepare.shapes)
    data_root = Path(cfg.paths.data)
    raw_root = Path(cfg.prepare.root) if cfg.prepare.root else data_root / "raw"
    ensure_writable(*(data_root / "datasets" / name for name in names))
    if cfg.prepare.sample_grid:
        ensure_writable(Path(cfg.paths.reports) / "prepare" / "grid.png")
    real = RealContext(data_root, raw_root, bool(cfg.prepare.download), int(cfg.dataset.image_size),
                       int(cfg.study.seed))
    check_available(names, real)  # every dataset present or downloadable, before any work
    fetch_missing(names, real)  # downloads, before any dataset is written
    done: dict[str, Any] = {}
    for name in names:
        start = time.perf_counter()
        prepare_dataset(
            name,
            data_root,
            raw_root,
            seed=int(cfg.study.seed),
            image_size=int(cfg.dataset.image_size),
            download=bool(cfg.prepare.download),
            shapes=shapes,
        )
        splits = sorted(p.name for p in (data_root / "datasets" / name).iterdir() if (p / "meta.json").is_file())
        sizes = {s: len(open_split(data_root, name, s)) for s in splits}
        if name == str(cfg.dataset.name):
            _check_classes(cfg, data_root, name)
        done[name] = sizes
        log.info("prepared %-16s %s in %.1fs", name, sizes, time.perf_counter() - start)
        if cfg.prepare.sample_grid:
            for split in splits:
                source = open_split(data_root, name, split)
                take = slice(0, min(len(source), 2000))
                sample_grid(
                    source.images(take),
                    source.labels[take],
                    source.classes,
                    Path(cfg.paths.reports) / "prepare" / f"{name}_{split}.png",
                    title=f"{name} / {split}",
                )
    return done


def _check_classes(cfg: DictConfig, data_root: Path, name: str) -> None:
    """The study's dataset holds at most `dataset.num_classes` classes (`UserError` otherwise, and its folder just
    written is removed); fewer, as in an ImageNet-100-style copy, is fine: the evaluation counts the classes on disk
    (`splits.classes_on_disk`)."""
    train = open_split(data_root, name, str(cfg.dataset.train))
    found, configured = len(train.classes), int(cfg.dataset.num_classes)
    try:
        check_class_count(name, found, configured, str(train.meta.get("root", train.directory)))
    except UserError:
        shutil.rmtree(data_root / "datasets" / name, ignore_errors=True)
        raise
    if found < configured:
        log.warning("prepare: %s holds %d of the %d classes of dataset.num_classes; the evaluation counts the %d "
                    "classes on disk", name, found, configured, found)


main = stage_main(run, "prepare")

if __name__ == "__main__":
    main()
