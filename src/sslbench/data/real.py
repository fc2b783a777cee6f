"""Real datasets through the same interface as the embedded ones (docs/datasets.md).

Each entry of `REAL_DATASETS` materialises `data/datasets/<name>/{train,val,test}/` from the dataset's official
on-disk layout under `<raw_root>/<name>/` (`prepare.root`, default `data/raw`), downloading it first when
`prepare.download=true` (checksum-verified, archives extracted only if no member escapes the target). Offline with
no local copy it raises `UserError` naming the dataset, the expected layout, the fix and where to get it.

| name | splits (train / val / test) | written as |
|---|---|---|
| cifar10, cifar100, svhn, stl10, mnist | official train minus 10 % per class / that 10 % / official test | arrays |
| tinyimagenet | official train minus 10 % / that 10 % / official val (test labels are not public) | arrays |
| dtd, flowers102 | the official train / val / test lists (DTD: partition 1) | arrays |
| imagenet, places365 | official train minus 1 % / that 1 % / official val | index |
| sun397 | Training_01 minus 10 % / that 10 % / Testing_01 | index |

Readers live in `real_arrays.py` (array files) and `real_folders.py` (image files with lists); the shared locate,
download, carve and write steps in `real_common.py`; downloads and safe extraction in `download.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sslbench.data import real_arrays, real_folders
from sslbench.data.real_common import DatasetSpec, RealContext, build

__all__ = ["REAL_DATASETS", "SPECS", "RealContext"]

SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (*real_arrays.SPECS, *real_folders.SPECS)}

REAL_DATASETS: dict[str, Callable[[RealContext], None]] = {name: partial(build, spec) for name, spec in SPECS.items()}
