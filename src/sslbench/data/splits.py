"""Uniform read access to a prepared dataset split, whatever its on-disk form (docs/datasets.md).

- small sets: `images.npy` (uint8 N×H×W×3, memory-mapped) + `labels.npy` + `meta.json`;
- large sets: `index.csv` (columns `path,label`; paths relative to `meta.json`'s `root`) + `meta.json`, whose
  images are decoded and resized to `meta["image_size"]` on access, the whole image (`meta["view"]` absent or
  `squash`) or, for `view: center_crop`, ImageNet's evaluation view (`center_crop_view`).

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


SQUASH = "squash"  # the whole image resized to image_size x image_size (aspect ratio not kept)
CENTER_CROP = "center_crop"  # resize the shorter side to 256, centre-crop 224, resize to image_size
VIEWS = (SQUASH, CENTER_CROP)


def center_crop_view(img: Any, size: int, resize: int = 256, crop: int = 224) -> np.ndarray:
    """ImageNet's evaluation view of a PIL RGB image as uint8 (size, size, 3): the shorter side resized to `resize`
    (bilinear, antialiased), the centre `crop` x `crop` cut out, then resized to `size` (a no-op at 224).

    The pipeline that made ImageNet-C (Hendrycks & Dietterich 2019, `make_imagenet_c.py`: torchvision's
    `Resize(256)` + `CenterCrop(224)`), with torchvision's rounding (the longer side truncated, the crop offset
    rounded), so that clean and corrupted ImageNet images are processed alike, and the standard ImageNet evaluation
    transform of the SSL literature."""
    from PIL import Image

    w, h = img.size
    if w <= h:
        new = (resize, int(resize * h / w))
    else:
        new = (int(resize * w / h), resize)
    img = img.resize(new, Image.Resampling.BILINEAR)
    left, top = int(round((new[0] - crop) / 2.0)), int(round((new[1] - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    if size != crop:
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img)


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
        view = str(self.meta.get("view", SQUASH))
        picked = np.arange(len(self))[indices]
        out = np.empty((len(picked), size, size, 3), np.uint8)
        for row, i in enumerate(picked):
            try:
                with Image.open(self._paths[i]) as img:
                    rgb = img.convert("RGB")
                if view == CENTER_CROP:
                    out[row] = center_crop_view(rgb, size)
                else:
                    out[row] = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))
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


def classes_on_disk(cfg: Any) -> int:
    """Set `cfg.dataset.num_classes` (a stage config) to the number of classes of the prepared main train split and
    return it, so that a copy holding a subset of the dataset's classes (an ImageNet-100-style copy, fewer
    TinyImageNet wnids) is evaluated over the classes it has: label i is the i-th of its sorted classes, and the
    probe, the label subsets and the Grad-CAM panel's class names all count those. `UserError` when the copy holds
    more classes than the dataset config says (the models' class outputs would not cover them); the config is left
    as it is when the split is not prepared yet (its reader says so)."""
    from omegaconf import open_dict

    meta_path = split_dir(cfg.paths.data, str(cfg.dataset.name), str(cfg.dataset.train)) / "meta.json"
    configured = int(cfg.dataset.num_classes)
    if not meta_path.is_file():
        return configured
    classes = list(read_json(meta_path, "dvc repro prepare").get("classes") or [])
    if not classes:
        return configured
    check_class_count(str(cfg.dataset.name), len(classes), configured, str(meta_path.parent))
    if len(classes) != configured:
        with open_dict(cfg):
            cfg.dataset.num_classes = len(classes)
    return len(classes)


def check_class_count(dataset: str, found: int, configured: int, where: str) -> None:
    """`UserError` when a copy of the main dataset holds more classes than `dataset.num_classes`."""
    if found > configured:
        raise UserError(
            f"{dataset} at {where} holds {found} classes but dataset.num_classes={configured} "
            f"(src/sslbench/conf/dataset/{dataset}.yaml); remove the extra classes from the copy, or study it as a "
            f"dataset config of its own with num_classes: {found}"
        )
