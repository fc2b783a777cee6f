"""The corrupted test sets of a study, built into a folder: generated from the test split with `imagecorruptions`,
or located on disk (CIFAR-10-C, ImageNet-C), each written as a split (`<corruption>/<severity>/`) with its meta,
and the SSIM of each corrupted image to its own clean image (`sslbench.eval.ssim`).

`family` is the meta of the whole family (`data/corrupted/<dataset>/meta.json`): the builders add what they learn
(name, constants, generator or root) and every set's meta repeats it (`set_meta`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from sslbench.data import corruptions as C
from sslbench.data.corruption_names import GROUP_OF
from sslbench.data.splits import SplitSource, write_index
from sslbench.errors import UserError
from sslbench.eval.ssim import batch_images, pair_rows, paired_ssim, resolve_device, ssim
from sslbench.io import write_split
from sslbench.progress import progress


@dataclass
class Built:
    """What building the sets yields besides their folders: the clean images of the subset, one SSIM row per set
    (`ssim_row`) and the first image of each set (for the sample grid). SSIM runs in bounded batches on `device`
    (`sslbench.eval.ssim.resolve_device`: the GPU where there is one)."""

    clean: np.ndarray
    ssim_rows: list[dict[str, Any]] = field(default_factory=list)
    firsts: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    device: str = field(default_factory=resolve_device)

    def add(self, corruption: str, severity: int, images: np.ndarray, index: np.ndarray) -> None:
        """Record a written set: its SSIM to the clean images (paired by source index) and its first image."""
        values = paired_ssim(self.clean, index, images, index, device=self.device)
        self.ssim_rows.append(ssim_row(corruption, severity, values))
        if len(images):
            self.firsts[(corruption, severity)] = images[0]

    def add_source(self, corruption: str, severity: int, source: SplitSource, index: np.ndarray) -> None:
        """`add` for a set read from disk (row i = source index `index[i]`), a batch of images at a time: a
        50,000-image ImageNet-C set is 7 GiB decoded."""
        rows = pair_rows(index, index)
        values = np.empty(len(index))
        step = max(256, batch_images(self.clean.shape))
        for start in range(0, len(index), step):
            images = source.images(slice(start, min(start + step, len(index))))
            values[start : start + len(images)] = ssim(self.clean[rows[start : start + len(images)]], images,
                                                        device=self.device)
            if start == 0 and len(images):
                self.firsts[(corruption, severity)] = images[0]
        self.ssim_rows.append(ssim_row(corruption, severity, values))


def generator_name() -> str:
    try:
        return f"imagecorruptions-imaug {version('imagecorruptions-imaug')}"
    except PackageNotFoundError:  # pragma: no cover - the original package, same import name
        return "imagecorruptions"


def ssim_row(corruption: str, severity: int, values: np.ndarray) -> dict[str, Any]:
    return {
        "corruption": corruption,
        "group": GROUP_OF[corruption],
        "severity": severity,
        "ssim_mean": float(values.mean()) if len(values) else float("nan"),
        "ssim_std": float(values.std()) if len(values) else float("nan"),
        "n": len(values),
    }


def set_meta(family: dict[str, Any], corruption: str, severity: int, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": family["dataset"],
        "name": family["name"],
        "source": family["source"],
        "source_split": family["source_split"],
        "corruption": corruption,
        "group": GROUP_OF[corruption],
        "severity": severity,
        "seed": family["seed"],
        "classes": family["classes"],
        "index": family["index"],
        **extra,
    }


def generate_sets(
    test: SplitSource, index: np.ndarray, corruption_names: list[str], severities: list[int], out: Path,
    family: dict[str, Any], *, workers: int, min_size: int, resize: str,
) -> Built:
    """Corrupt the test images `index` with every corruption and severity (`corruptions.generate_corrupted`, seeded
    per image by `family["seed"]`) into `out/<corruption>/<severity>/`."""
    built = Built(test.images(index))
    labels = test.labels[index]
    family["name"] = f"{family['dataset']} test with ImageNet-C corruptions (imagecorruptions, ImageNet-C constants)"
    family["constants"] = "imagenet_c"
    family["generator"] = generator_name()
    resized = min(built.clean.shape[1:3]) < min_size
    family["resize"] = {"min_size": min_size, "policy": resize, "applied": resized}
    total = len(index) * len(corruption_names) * len(severities)
    with progress(total=total, desc="corrupt", unit="img") as bar:
        for corruption, severity, images in C.generate_corrupted(
            built.clean, index, corruption_names, severities, seed=family["seed"], workers=workers,
            min_size=min_size, resize=resize, progress=False,
        ):
            meta = set_meta(family, corruption, severity, generator=family["generator"], constants="imagenet_c",
                            resize=family["resize"])
            write_split(out / corruption / str(severity), images, labels, meta)
            built.add(corruption, severity, images, index)
            bar.set_postfix_str(f"{corruption} {severity}")
            bar.update(len(images))
    return built


def locate_cifar10_c(
    root: Path, test: SplitSource, index: np.ndarray, corruption_names: list[str], severities: list[int], out: Path,
    family: dict[str, Any],
) -> Built:
    """Copy the images `index` of CIFAR-10-C under `root` into `out/<corruption>/<severity>/`, every file checked
    before anything is written."""
    family.update(name="CIFAR-10-C", constants="cifar10_c", root=str(root))
    built = Built(test.images(index))
    for corruption in corruption_names:  # check every file before writing anything
        if not (root / f"{corruption}.npy").is_file() or not (root / "labels.npy").is_file():
            missing = root / f"{corruption}.npy" if (root / "labels.npy").is_file() else root / "labels.npy"
            raise UserError(f"CIFAR-10-C not found: {missing} is missing. Get {C.CIFAR10_C_HELP}; "
                            "set corrupt.root=<root>")
    pairs = [(c, s) for c in corruption_names for s in severities]
    for corruption, severity in progress(pairs, desc="CIFAR-10-C", unit="set"):
        images, labels = C.load_cifar10_c(root, corruption, severity, index, test.labels, test.meta.get("index"))
        if images.shape[1:] != built.clean.shape[1:]:
            raise UserError(
                f"CIFAR-10-C images are {images.shape[1:]} but the study's test images are {built.clean.shape[1:]}; "
                "prepare CIFAR-10 at 32 px (dataset.image_size=32)"
            )
        write_split(out / corruption / str(severity), images, labels,
                    set_meta(family, corruption, severity, constants="cifar10_c", root=str(root)))
        built.add(corruption, severity, images, index)
    return built


def test_paths(test: SplitSource) -> list[str]:
    """The relative paths of an index-form split (`index.csv`), in row order."""
    index_csv = test.directory / "index.csv"
    if not index_csv.is_file():
        raise UserError(
            f"ImageNet-C pairs by file name with the ImageNet validation images, but {test.directory} has no "
            "index.csv (paths); prepare ImageNet as an index (`dvc repro prepare`)"
        )
    with index_csv.open(newline="") as fh:
        return [row["path"] for row in csv.DictReader(fh)]


def locate_imagenet_c(
    root: Path, test: SplitSource, index: np.ndarray, corruption_names: list[str], severities: list[int], out: Path,
    family: dict[str, Any], *, image_size: int,
) -> Built:
    """Index the ImageNet-C images under `root` that match the test images `index` (by file name) into
    `out/<corruption>/<severity>/index.csv`, every set checked before anything is written. `image_size`: the side
    of the study's images, to which the SSIM's clean views are resized like ImageNet-C's."""
    family.update(name="ImageNet-C", constants="imagenet_c", root=str(root))
    size = int(test.meta.get("image_size", image_size))
    paths = test_paths(test)
    pairs = [(c, s) for c in corruption_names for s in severities]
    rows = {p: C.imagenet_c_rows(root, *p, index, paths, test.labels, test.classes) for p in pairs}  # checks first
    test_root = Path(test.meta["root"])
    clean = np.zeros((len(index), size, size, 3), np.uint8)  # filled in place: no list of 50,000 images beside it
    for row, i in enumerate(index):
        clean[row] = C.imagenet_c_clean_view(test_root / paths[i], size)
    built = Built(clean)
    for corruption, severity in progress(pairs, desc="ImageNet-C", unit="set"):
        meta = set_meta(family, corruption, severity, constants="imagenet_c", root=str(root), image_size=size)
        directory = out / corruption / str(severity)
        write_index(directory, rows[(corruption, severity)], meta)
        located = SplitSource(directory, np.asarray([r[1] for r in rows[(corruption, severity)]]), meta,
                              _paths=[root / r[0] for r in rows[(corruption, severity)]])
        built.add_source(corruption, severity, located, index)
    return built
