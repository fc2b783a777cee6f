"""Shared machinery of the real datasets: locate or download, carve validation splits, decode, write.

Each dataset is a `DatasetSpec`: how to find its official on-disk layout under `<raw_root>/<name>/`, how to read
it into `Split`s, and the text the offline error shows. `build(spec, ctx)` does the rest the same way for all:

1. locate the layout under `<raw_root>/<name>/`; if absent and `download` is on, fetch the official files
   (`download.RESOURCES[name]`, checksum-verified) and locate again; otherwise raise the offline `UserError`;
2. read every split (nothing is written until all splits have been read and checked);
3. write `data/datasets/<name>/<split>/` in the format of docs/datasets.md: small sets as `images.npy` resized to the
   study resolution (`io.write_split`), large sets as `index.csv` of paths relative to the located root
   (`splits.write_index`), decoded and resized on access by `splits.open_split`.

Resizing is one rule everywhere: the whole image is resized to `image_size`×`image_size` with PIL's bilinear
filter (antialiased when shrinking), exactly as `splits.SplitSource.images` does for index sets, so the same image
gives the same pixels in both formats. The aspect ratio is not kept (no crop), as for the index sets, except for
a dataset whose spec asks for ImageNet's evaluation view (`DatasetSpec.view`, `splits.center_crop_view`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sslbench.data import download
from sslbench.errors import UserError
from sslbench.io import split_dir, write_split

log = logging.getLogger("sslbench.data.real")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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


@dataclass
class Split:
    """One split as read from the source, before writing.

    Exactly one of `images` (uint8 (N, h, w, 3), any h, w: resized when written) or `paths` (relative to the
    located root) is set. `index`: row numbers in the official `source_split`; `origin`: how the split was made
    (goes into meta.json).
    """

    labels: np.ndarray
    source_split: str
    index: np.ndarray
    origin: str
    images: np.ndarray | None = None
    paths: list[str] | None = None


@dataclass
class Read:
    """A whole dataset as read: class names (label i is `classes[i]`), splits, extra meta for every split."""

    classes: list[str]
    splits: dict[str, Split]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, read and describe one real dataset.

    find_root(folder) -> the located dataset root inside `<raw_root>/<name>/`, or None if the layout is absent;
    read(root, ctx) -> `Read`; large: write an index instead of arrays; layout: the expected files, as shown in the
    offline error (`{folder}` stands for `<raw_root>/<name>`); manual: why it cannot be downloaded automatically
    (empty when `download.RESOURCES` has it); view: how an index set's images are brought to the study resolution
    (`splits.VIEWS`: `squash` the whole image, or `center_crop`, ImageNet's resize-256 / centre-crop-224).
    """

    name: str
    title: str
    homepage: str
    layout: str
    find_root: Callable[[Path], Path | None]
    read: Callable[[Path, RealContext], Read]
    large: bool = False
    manual: str = ""
    view: str = "squash"


# ----------------------------------------------------------------------------------------------- locate


def offline_error(spec: DatasetSpec, ctx: RealContext, reason: str) -> UserError:
    folder = ctx.raw_root / spec.name
    layout = "\n".join("    " + line for line in spec.layout.format(folder=folder).strip().splitlines())
    how = (
        f"set `prepare.download=true` (network needed) to fetch it from {spec.homepage}"
        if not spec.manual
        else f"download it by hand from {spec.homepage} ({spec.manual})"
    )
    return UserError(
        f"dataset {spec.name!r} ({spec.title}) is not available: {reason}.\n"
        f"Expected layout under {folder}:\n{layout}\n"
        f"Fix: point `prepare.root=<folder>` (params.yaml `prepare.root`, or a command-line override) at a folder "
        f"that holds `{spec.name}/` in this layout, or {how}."
    )


def locate(spec: DatasetSpec, ctx: RealContext) -> Path:
    """The dataset's root under `<raw_root>/<name>/`, downloading it first when allowed and needed."""
    folder = ctx.raw_root / spec.name
    root = spec.find_root(folder) if folder.is_dir() else None
    if root is not None:
        return root
    what = f"no copy in {folder}" if not folder.exists() else f"{folder} does not hold the expected layout"
    if not ctx.download:
        raise offline_error(spec, ctx, f"{what} and downloading is off (prepare.download=false)")
    resources = download.RESOURCES.get(spec.name)
    if spec.manual or not resources:
        raise offline_error(spec, ctx, f"{what}, and it cannot be downloaded automatically")
    try:
        download.download_all(resources, folder, spec.name)
    except download.NetworkError as err:
        raise offline_error(spec, ctx, f"{what} and the download failed ({err})") from err
    root = spec.find_root(folder)
    if root is None:
        raise UserError(
            f"{spec.name}: downloaded into {folder} but the expected layout is still missing; "
            f"delete {folder} and run again\n" + str(offline_error(spec, ctx, "layout missing after download"))
        )
    return root


def first_with(folder: Path, candidates: Sequence[str], required: Sequence[str]) -> Path | None:
    """The first `folder/<candidate>` holding every path in `required`, or None."""
    for sub in candidates:
        root = folder / sub if sub else folder
        if all((root / r).exists() for r in required):
            return root
    return None


# ----------------------------------------------------------------------------------------------- splits


def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out: per class, round(fraction × n_c) images (at least 1 when the class has >= 2) drawn
    with `numpy.random.default_rng(seed)`. Returns sorted (kept, held_out) row indices.

    Hand-written rather than sklearn's `train_test_split(stratify=...)`, which refuses held-out sets smaller than
    the class count (tiny sets, many classes) instead of taking one per class.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        k = int(round(fraction * len(rows)))
        k = max(k, 1) if len(rows) >= 2 else 0
        held.append(rng.permutation(rows)[:k])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), out)
    return keep.astype(np.int64), out.astype(np.int64)


def carved_note(fraction: float, seed: int, source: str = "train") -> str:
    return (f"carved from the official {source} split: {fraction:g} of each class (at least 1), "
            f"numpy default_rng(seed={seed}); the rest is `train`")


def train_val_test(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    fraction: float,
    seed: int,
    *,
    test_source: str = "test",
    test_origin: str = "the official test split",
    train_images: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
    train_paths: list[str] | None = None,
    test_paths: list[str] | None = None,
) -> dict[str, Split]:
    """The common case: official train (val carved from it) and an official evaluation split used as `test`."""
    keep, val = carve(train_labels, fraction, seed)
    note = carved_note(fraction, seed)
    out: dict[str, Split] = {}
    for split, rows, origin in (("train", keep, f"the official train split minus `val` ({note})"),
                                ("val", val, note)):
        out[split] = Split(
            labels=train_labels[rows], source_split="train", index=rows, origin=origin,
            images=None if train_images is None else train_images[rows],
            paths=None if train_paths is None else [train_paths[i] for i in rows],
        )
    out["test"] = Split(labels=test_labels, source_split=test_source, index=np.arange(len(test_labels)),
                        origin=test_origin, images=test_images, paths=test_paths)
    return out


# ----------------------------------------------------------------------------------------------- images


def decode_resized(path: Path, size: int) -> np.ndarray:
    """Decode one image file to uint8 RGB (size, size, 3), the same way `splits.open_split` does for index sets."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    except OSError as err:
        raise UserError(f"cannot decode image {path}: {err}; replace the file or re-download the dataset") from err


def decode_many(root: Path, paths: Sequence[str], size: int, desc: str) -> np.ndarray:
    """Decode and resize `root/<path>` for every path, in threads (PIL releases the GIL while decoding)."""
    from sslbench.progress import progress

    out = np.empty((len(paths), size, size, 3), np.uint8)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = pool.map(lambda p: decode_resized(root / p, size), paths)
        for i, img in enumerate(progress(decoded, total=len(paths), desc=desc, unit="img", leave=False)):
            out[i] = img
    return out


def resize_arrays(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, h, w, 3) -> (N, size, size, 3) with the same PIL bilinear rule as `decode_resized`."""
    from sslbench.data.embedded import resize_batch

    return resize_batch(images, size)


def check_listed_files(root: Path, paths: Sequence[str], what: str, seed: int, sample: int = 1000) -> None:
    """Check that a seeded sample of listed files exists (all of them when <= `sample`), naming the first missing.

    A full check of Places365's 1.8 M files would cost minutes; a file missing outside the sample surfaces when
    `open_split` decodes it, with a `UserError` naming it.
    """
    rng = np.random.default_rng(seed)
    picks = range(len(paths)) if len(paths) <= sample else rng.choice(len(paths), sample, replace=False)
    missing = [paths[i] for i in picks if not (root / paths[i]).is_file()]
    if missing:
        raise UserError(
            f"{what}: {len(missing)} listed image(s) are missing under {root}, e.g. {missing[0]}; "
            "the copy is incomplete: re-extract or re-download it"
        )


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, sorted), as torchvision's `ImageFolder` lists them (same extensions,
    case-insensitive). Written here because importing torchvision costs ~5 s for what is a directory walk.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


# ----------------------------------------------------------------------------------------------- build


def build(spec: DatasetSpec, ctx: RealContext) -> None:
    """Locate (or download), read and write one real dataset's train/val/test splits."""
    from sslbench.data.splits import write_index

    if ctx.image_size < 1:
        raise UserError(f"image_size must be >= 1, got {ctx.image_size}")
    root = locate(spec, ctx)
    read = spec.read(root, ctx)
    if set(read.splits) != {"train", "val", "test"}:
        raise AssertionError(f"{spec.name} reader returned splits {sorted(read.splits)}")
    for name, split in read.splits.items():
        labels = np.asarray(split.labels, np.int64)
        if len(labels) == 0:
            raise UserError(f"{spec.name}/{name} is empty in {root}; the copy is incomplete")
        if labels.min() < 0 or labels.max() >= len(read.classes):
            raise UserError(f"{spec.name}/{name}: labels outside 0..{len(read.classes) - 1} in {root}")
    arrays: dict[str, np.ndarray] = {}
    if not spec.large:  # decode everything before writing anything
        for name, split in read.splits.items():
            if split.images is not None:
                arrays[name] = resize_arrays(split.images, ctx.image_size)
            else:
                assert split.paths is not None
                arrays[name] = decode_many(root, split.paths, ctx.image_size, f"{spec.name}/{name}")
    for name, split in read.splits.items():
        meta: dict[str, Any] = {
            "dataset": spec.name,
            "split": name,
            "classes": read.classes,
            "source": f"{spec.title} ({spec.homepage})",
            "root": str(root.resolve()),
            "image_size": ctx.image_size,
            "seed": ctx.seed,
            "source_split": split.source_split,
            "origin": split.origin,
            **read.meta,
        }
        directory = split_dir(ctx.data_root, spec.name, name)
        if spec.large:
            assert split.paths is not None
            rows = list(zip(split.paths, np.asarray(split.labels).tolist(), strict=True))
            write_index(directory, rows, {**meta, "format": "index", "view": spec.view})
        else:
            write_split(directory, arrays.pop(name), split.labels,
                        {**meta, "format": "arrays", "index": split.index.tolist()})
    log.info("%s: wrote %s from %s", spec.name, {k: len(v.labels) for k, v in read.splits.items()}, root)
