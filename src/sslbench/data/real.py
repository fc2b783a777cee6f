"""Real datasets (placeholder: filled in by the real-datasets work; see DESIGN.md §6).

Each entry of `REAL_DATASETS` materialises one dataset under `data/datasets/<name>/<split>/` from a local root,
or downloads it when allowed. Offline with no local copy it raises `UserError` naming the dataset, the expected
layout and where to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealContext:
    """Where and how to materialise a real dataset.

    data_root: the study's `data/` folder; raw_root: the folder holding (or receiving) the raw downloads, one
    sub-folder per dataset; download: whether to try the network; image_size: the study resolution; seed: for
    carving validation splits.
    """

    data_root: Path
    raw_root: Path
    download: bool
    image_size: int
    seed: int


REAL_DATASETS: dict[str, Callable[[RealContext], None]] = {}
