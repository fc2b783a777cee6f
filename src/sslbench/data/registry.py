"""All dataset names `prepare` knows: embedded (generated or package-shipped) and real."""

from __future__ import annotations

from pathlib import Path

from sslbench.data.embedded import EMBEDDED, ShapesConfig
from sslbench.data.real import REAL_DATASETS, RealContext
from sslbench.errors import unknown_choice


def dataset_names() -> list[str]:
    return sorted({*EMBEDDED, *REAL_DATASETS})


def check_names(names: list[str]) -> None:
    """Raise `UserError` listing the valid names if any of `names` is unknown (before any work)."""
    for name in names:
        if name not in EMBEDDED and name not in REAL_DATASETS:
            raise unknown_choice("dataset", name, dataset_names())


def prepare_dataset(name: str, data_root: Path, raw_root: Path, *, seed: int, image_size: int, download: bool,
                    shapes: ShapesConfig) -> None:
    """Materialise one dataset under `data_root/datasets/<name>/`."""
    check_names([name])
    if name in EMBEDDED:
        EMBEDDED[name](data_root, seed, image_size, shapes)
    else:
        REAL_DATASETS[name](RealContext(data_root, raw_root, download, image_size, seed))
