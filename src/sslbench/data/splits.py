"""Uniform read access to a prepared dataset split, whatever its on-disk form (docs/datasets.md).

- small sets: `images.npy` (uint8 N×H×W×3, memory-mapped) + `labels.npy` + `meta.json`;
- large sets: `index.csv` (columns `path,label`; paths relative to `meta.json`'s `root`) + `meta.json`, whose
  images are decoded and resized to `meta["image_size"]` on access.

`open_split(...)` returns a `SplitSource`; consumers (embedding, corruption, fine-tuning) ask for batches by index.
It checks an array split against the sha256 its `meta.json` records (`io.write_split`) once per process: a file
changed or damaged after `prepare` wrote it (same size, other bytes) stops the stage that reads it, also when the
stage runs as a command outside `dvc repro`. The check reads the arrays once (memory-mapped, in chunks); a split is
checked again only if its files change on disk (inode, size, mtime or ctime).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslbench.errors import UserError
from sslbench.io import read_json, split_dir


@dataclass
class SplitSource:
    """A prepared split. `images(indices)` returns uint8 (len(indices), H, W, 3)."""

    directory: Path
    labels: np.ndarray
    meta: dict[str, Any]
    _array: np.ndarray | None = None
    _paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def name(self) -> str:
        return f"{self.meta.get('dataset', self.directory.parent.name)}/{self.directory.name}"

    def images(self, indices: np.ndarray | slice) -> np.ndarray:
        if self._array is not None:
            return np.asarray(self._array[indices])
        assert self._paths is not None
        from PIL import Image

        size = int(self.meta["image_size"])
        picked = np.arange(len(self))[indices]
        out = np.empty((len(picked), size, size, 3), np.uint8)
        for row, i in enumerate(picked):
            try:
                with Image.open(self._paths[i]) as img:
                    out[row] = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
            except OSError as err:
                raise UserError(f"cannot decode image {self._paths[i]} of {self.directory}: {err}") from err
        return out


# (folder, recorded sha256 of both arrays, signature of both files) of the splits that passed their check
_VERIFIED: set[tuple[object, ...]] = set()


def _signature(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def sha256_rows(array: np.ndarray, chunk_bytes: int = 16 << 20) -> str:
    """`io.sha256_array(array)` (the sha256 of the C-ordered bytes) computed a chunk of rows at a time, so that a
    memory-mapped array is hashed without being copied into memory whole."""
    digest = hashlib.sha256()
    rows = max(1, chunk_bytes // max(1, array[:1].nbytes))
    for start in range(0, len(array), rows):
        digest.update(np.ascontiguousarray(array[start : start + rows]).data)
    return digest.hexdigest()


def verify_arrays(directory: Path, images: np.ndarray, labels: np.ndarray, meta: dict[str, Any],
                  rebuild: str) -> None:
    """Check `images.npy` and `labels.npy` of `directory` against `meta["sha256"]` (once per process and file
    state); raise `UserError` naming the file and `rebuild` on a mismatch. Splits without recorded sha256 pass."""
    recorded = meta.get("sha256")
    if not isinstance(recorded, dict) or not {"images", "labels"} <= recorded.keys():
        return
    files = {"images": directory / "images.npy", "labels": directory / "labels.npy"}
    key = (str(directory.resolve()), recorded["images"], recorded["labels"],
           *(_signature(path) for path in files.values()))
    if key in _VERIFIED:
        return
    for name, array in (("images", images), ("labels", labels)):
        if sha256_rows(array) != recorded[name]:
            raise UserError(
                f"dataset split {directory} fails its sha256 check: {files[name]} is not the file `meta.json` "
                f"records (it was changed or damaged after it was written); run `{rebuild}` to rebuild it"
            )
    _VERIFIED.add(key)


def open_split(
    data_root: str | os.PathLike[str], dataset: str, split: str, rebuild: str = "dvc repro prepare"
) -> SplitSource:
    """Open `data/datasets/<dataset>/<split>/`; raises `UserError` naming the folder and `rebuild` if it is absent,
    unreadable or (array splits) fails the sha256 check of `verify_arrays`."""
    directory = split_dir(data_root, dataset, split)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"dataset split {directory} is missing; run `{rebuild}` to build it")
    meta = read_json(meta_path, rebuild)
    if (directory / "images.npy").is_file():
        try:
            array = np.load(directory / "images.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(directory / "labels.npy", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UserError(f"dataset split {directory} is unreadable ({err}); run `{rebuild}`") from err
        if array.ndim != 4 or array.dtype != np.uint8 or len(array) != len(labels):
            raise UserError(f"dataset split {directory} has inconsistent arrays; run `{rebuild}`")
        verify_arrays(directory, array, labels, meta, rebuild)
        return SplitSource(directory, labels.astype(np.int64), meta, _array=array)
    index = directory / "index.csv"
    if not index.is_file():
        raise UserError(f"dataset split {directory} has neither images.npy nor index.csv; run `{rebuild}`")
    root = Path(meta["root"])
    paths: list[Path] = []
    labels_list: list[int] = []
    with index.open(newline="") as fh:
        for row in csv.DictReader(fh):
            paths.append(root / row["path"])
            labels_list.append(int(row["label"]))
    return SplitSource(directory, np.asarray(labels_list, np.int64), meta, _paths=paths)


def write_index(directory: Path, rows: list[tuple[str, int]], meta: dict[str, Any]) -> None:
    """Atomically write a large-set split as `index.csv` (relative path, label) + `meta.json`.

    `meta` must hold `root` (absolute folder the paths are relative to), `classes` and `image_size`.
    """
    import json

    from sslbench.io import atomic_path

    for key in ("root", "classes", "image_size"):
        if key not in meta:
            raise ValueError(f"index meta needs {key!r}")
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        with (tmp / "index.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
        (tmp / "meta.json").write_text(json.dumps({**meta, "n": len(rows)}, indent=2) + "\n")
