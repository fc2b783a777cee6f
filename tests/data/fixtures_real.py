"""Tiny copies of every real dataset in its official on-disk format, written by the tests (never downloaded).

Array formats (CIFAR, SVHN, STL-10, MNIST) hold random images, encoded here byte by byte as each format's
documentation describes, so a reader that mixes up channels, rows or columns fails. Image-file formats hold solid
images with a colour unique across the fixture, so every decoded image can be traced back to its file and label
whatever order a reader lists files in (`Truth.identify`).
"""

from __future__ import annotations

import gzip
import io
import itertools
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class ArrayTruth:
    """Official train/test arrays (HWC uint8) and labels, and the class names."""

    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass
class FileTruth:
    """Per unique colour: (official split, label, relative path). `official`: sizes of the official splits."""

    classes: list[str]
    by_colour: dict[tuple[int, int, int], tuple[str, int, str]] = field(default_factory=dict)

    def identify(self, image: np.ndarray) -> tuple[str, int, str]:
        """The (official split, label, path) of the fixture file whose colour is nearest the image's mean colour."""
        mean = image.reshape(-1, 3).mean(0)
        colours = np.asarray(list(self.by_colour), float)
        best = int(np.argmin(((colours - mean) ** 2).sum(1)))
        assert np.abs(colours[best] - mean).max() < 12, f"no fixture colour near {mean}"
        r, g, b = (int(v) for v in colours[best])
        return self.by_colour[(r, g, b)]

    def official(self, split: str) -> list[tuple[int, str]]:
        return sorted((label, path) for s, label, path in self.by_colour.values() if s == split)


_COLOURS: list[tuple[int, int, int]] = [(r, g, b) for r, g, b in itertools.product(range(20, 250, 45), repeat=3)]


class _Painter:
    """Writes solid images, each with the next unused colour, and records them in a `FileTruth`."""

    def __init__(self, truth: FileTruth, base: Path) -> None:
        self.truth, self.base, self.next = truth, base, 0

    def __call__(self, path: Path, split: str, label: int, size: tuple[int, int] = (24, 18)) -> None:
        from PIL import Image

        colour = _COLOURS[self.next * 7 % len(_COLOURS)]
        self.next += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size[1], size[0], 3), colour, np.uint8)).save(path, quality=95)
        self.truth.by_colour[colour] = (split, label, path.relative_to(self.base).as_posix())


# ----------------------------------------------------------------------------------------------- arrays


def _random(rng: np.random.Generator, n: int, h: int, w: int, c: int = 3) -> np.ndarray:
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _cifar_record(image: np.ndarray, label_bytes: bytes) -> bytes:
    # label byte(s), then the red plane row by row, then green, then blue (CIFAR page, "binary version")
    return label_bytes + b"".join(image[:, :, ch].tobytes(order="C") for ch in range(3))


_PurePickler: Any = pickle._Pickler  # the pure-Python pickler, whose opcodes a subclass can override


class _Py2Pickler(_PurePickler):
    """Pickles the way the official CIFAR python-version files were written (Python 2, protocol 2): strings as
    byte strings (BINSTRING opcodes) and numpy's array helper under its old module name `numpy.core.multiarray`."""

    dispatch = dict(_PurePickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "")
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(module, module)
        qualname = name or obj.__qualname__
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)


def py2_pickle(obj: object) -> bytes:
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def write_cifar10(raw: Path, python_version: bool = False, seed: int = 0) -> ArrayTruth:
    rng = np.random.default_rng(seed)
    truth = ArrayTruth(CIFAR10_CLASSES, _random(rng, 20, 32, 32), np.arange(20) % 10,
                       _random(rng, 10, 32, 32), rng.permutation(10))
    if python_version:
        root = raw / "cifar10" / "cifar-10-batches-py"
        root.mkdir(parents=True)

        def batch(x: np.ndarray, y: np.ndarray, name: str) -> None:
            rows = np.stack([np.frombuffer(_cifar_record(img, b""), np.uint8) for img in x])
            obj = {"batch_label": name, "labels": [int(v) for v in y], "data": rows,
                   "filenames": [f"{name}_{i}.png" for i in range(len(y))]}
            (root / name).write_bytes(py2_pickle(obj))

        for b in range(5):
            batch(truth.train_x[4 * b : 4 * b + 4], truth.train_y[4 * b : 4 * b + 4], f"data_batch_{b + 1}")
        batch(truth.test_x, truth.test_y, "test_batch")
        meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 4, "num_vis": 3072}
        (root / "batches.meta").write_bytes(py2_pickle(meta))
        return truth
    root = raw / "cifar10" / "cifar-10-batches-bin"
    root.mkdir(parents=True)
    for b in range(5):
        rows = range(4 * b, 4 * b + 4)
        (root / f"data_batch_{b + 1}.bin").write_bytes(
            b"".join(_cifar_record(truth.train_x[i], bytes([truth.train_y[i]])) for i in rows))
    (root / "test_batch.bin").write_bytes(
        b"".join(_cifar_record(x, bytes([y])) for x, y in zip(truth.test_x, truth.test_y, strict=True)))
    (root / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return truth


def write_cifar100(raw: Path, seed: int = 1) -> ArrayTruth:
    rng = np.random.default_rng(seed)
    fine = [f"fine_{i:02d}" for i in range(100)]
    truth = ArrayTruth(fine, _random(rng, 200, 32, 32), np.arange(200) % 100, _random(rng, 100, 32, 32),
                       rng.permutation(100))
    root = raw / "cifar100" / "cifar-100-binary"
    root.mkdir(parents=True)
    # records: coarse label byte, fine label byte, pixels; coarse = fine // 5 differs from fine
    for name, xs, ys in (("train.bin", truth.train_x, truth.train_y), ("test.bin", truth.test_x, truth.test_y)):
        (root / name).write_bytes(b"".join(_cifar_record(x, bytes([y // 5, y])) for x, y in zip(xs, ys, strict=True)))
    (root / "fine_label_names.txt").write_text("\n".join(fine) + "\n")
    (root / "coarse_label_names.txt").write_text("\n".join(f"coarse_{i}" for i in range(20)) + "\n")
    return truth


def write_svhn(raw: Path, seed: int = 2) -> ArrayTruth:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    truth = ArrayTruth([str(d) for d in range(10)], _random(rng, 20, 32, 32), np.arange(20) % 10,
                       _random(rng, 10, 32, 32), rng.permutation(10))
    (raw / "svhn").mkdir(parents=True)
    for name, xs, ys in (("train", truth.train_x, truth.train_y), ("test", truth.test_x, truth.test_y)):
        # X is (32, 32, 3, N); y is (N, 1) with the digit 0 stored as 10
        x = np.ascontiguousarray(np.moveaxis(xs, 0, -1))
        y = np.where(ys == 0, 10, ys).astype(np.uint8)[:, None]
        savemat(raw / "svhn" / f"{name}_32x32.mat", {"X": x, "y": y})
    return truth


def write_stl10(raw: Path, seed: int = 3) -> ArrayTruth:
    rng = np.random.default_rng(seed)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    truth = ArrayTruth(names, _random(rng, 20, 96, 96), np.arange(20) % 10, _random(rng, 10, 96, 96),
                       rng.permutation(10))
    root = raw / "stl10" / "stl10_binary"
    root.mkdir(parents=True)

    def column_major(img: np.ndarray) -> bytes:
        # per channel, the 96×96 plane column by column: for x in columns, for y in rows
        return b"".join(img[:, :, ch].tobytes(order="F") for ch in range(3))

    for split, xs, ys in (("train", truth.train_x, truth.train_y), ("test", truth.test_x, truth.test_y)):
        (root / f"{split}_X.bin").write_bytes(b"".join(column_major(x) for x in xs))
        (root / f"{split}_y.bin").write_bytes(bytes(int(y) + 1 for y in ys))
    (root / "class_names.txt").write_text("\n".join(names) + "\n")
    (root / "unlabeled_X.bin").write_bytes(b"")  # present in the official folder, unused
    return truth


def _idx(values: np.ndarray) -> bytes:
    return b"\0\0\x08" + bytes([values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape) + values.tobytes()


def write_mnist(raw: Path, seed: int = 4) -> ArrayTruth:
    rng = np.random.default_rng(seed)
    grey_train, grey_test = _random(rng, 20, 28, 28, 1)[..., 0], _random(rng, 10, 28, 28, 1)[..., 0]
    truth = ArrayTruth([str(d) for d in range(10)], np.repeat(grey_train[..., None], 3, -1),
                       (np.arange(20) % 10).astype(np.uint8), np.repeat(grey_test[..., None], 3, -1),
                       rng.permutation(10).astype(np.uint8))
    root = raw / "mnist"
    root.mkdir(parents=True)
    # train files gzipped (as published), test files plain (as torchvision leaves them after extraction)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(grey_train)))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(truth.train_y)))
    (root / "t10k-images-idx3-ubyte").write_bytes(_idx(grey_test))
    (root / "t10k-labels-idx1-ubyte").write_bytes(_idx(truth.test_y))
    return truth


# ----------------------------------------------------------------------------------------------- image files


def write_tinyimagenet(raw: Path) -> FileTruth:
    base = raw / "tinyimagenet" / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # the official wnids.txt is not sorted; labels follow sorted wnids
    truth = FileTruth(sorted(wnids))
    paint = _Painter(truth, base)
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\nn03\tbarn\nn09\tx\n")
    for wnid in wnids:
        for i in range(4):
            paint(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", "train", sorted(wnids).index(wnid),
                  (64, 64))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for i, wnid in enumerate(["n03", "n01", "n02", "n01", "n03", "n02"]):
        paint(base / "val" / "images" / f"val_{i}.JPEG", "val", sorted(wnids).index(wnid), (64, 64))
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t10\t10")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _Painter(FileTruth([]), base)(base / "test" / "images" / "test_0.JPEG", "test", -1, (64, 64))  # unlabelled
    return truth


def write_imagenet(raw: Path, flat_val: bool = False) -> FileTruth:
    base = raw / "imagenet"
    wnids = ["n01440764", "n01443537", "n01484850"]
    truth = FileTruth(wnids)
    paint = _Painter(truth, base)
    for c, wnid in enumerate(wnids):
        for i in range(4):
            paint(base / "train" / wnid / f"{wnid}_{i}.JPEG", "train", c, (30, 20))
        for i in range(2):
            val = base / "val" if flat_val else base / "val" / wnid
            paint(val / f"ILSVRC2012_val_{c}{i}.JPEG", "val", c, (20, 30))
    (base / "train" / wnids[0] / "notes.txt").write_text("not an image")
    return truth


def write_dtd(raw: Path) -> FileTruth:
    base = raw / "dtd" / "dtd"  # dtd-r1.0.1.tar.gz extracts a dtd/ folder
    classes = ["banded", "blotchy", "zigzagged"]
    truth = FileTruth(classes)
    paint = _Painter(truth, base)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for c, name in enumerate(classes):
        for i in range(6):
            split = ("train", "val", "test")[i % 3]
            rel = f"{name}/{name}_{i:04d}.jpg"
            paint(base / "images" / rel, split, c, (40, 30))
            lists[split].append(rel)
    (base / "labels").mkdir()
    for split, rels in lists.items():
        (base / "labels" / f"{split}1.txt").write_text("\n".join(rels) + "\n")
        (base / "labels" / f"{split}2.txt").write_text(rels[0] + "\n")  # other partitions: ignored
    return truth


def write_flowers102(raw: Path) -> FileTruth:
    from scipy.io import savemat

    base = raw / "flowers102"
    labels = np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 3, 2, 1])  # classes numbered from 1, images from 1
    sets = {"trnid": [3, 1, 2], "valid": [6, 5, 4], "tstid": [12, 7, 8, 9, 10, 11]}
    truth = FileTruth([])
    paint = _Painter(truth, base)
    split_of = {i: s for s, ids in zip(("train", "val", "test"), sets.values(), strict=True) for i in ids}
    for i, label in enumerate(labels, start=1):
        paint(base / "jpg" / f"image_{i:05d}.jpg", split_of[i], int(label) - 1, (50, 40))
    savemat(base / "imagelabels.mat", {"labels": labels[None, :].astype(float)})
    savemat(base / "setid.mat", {k: np.asarray(v, float)[None, :] for k, v in sets.items()})
    return truth


def write_sun397(raw: Path) -> FileTruth:
    base = raw / "sun397"
    keys = ["/a/abbey", "/b/bakery/shop", "/c/canyon"]
    truth = FileTruth(["abbey", "bakery/shop", "canyon"])
    paint = _Painter(truth, base / "SUN397")
    lists: dict[str, list[str]] = {"Training_01.txt": [], "Testing_01.txt": []}
    for c, key in enumerate(keys):
        for i in range(5):
            listed = "Training_01.txt" if i < 3 else "Testing_01.txt"
            rel = f"{key}/sun_{c}{i}abc.jpg"
            paint(base / "SUN397" / rel.lstrip("/"), "train" if i < 3 else "test", c, (36, 28))
            lists[listed].append(rel)
    unlisted = FileTruth([])
    _Painter(unlisted, base / "SUN397")(base / "SUN397" / "a" / "abbey" / "sun_unlisted.jpg", "none", 0)
    (base / "SUN397" / "ClassName.txt").write_text("\n".join(keys) + "\n")
    for name, rels in lists.items():
        (base / name).write_text("\n".join(rels) + "\n")
    (base / "Training_02.txt").write_text(lists["Training_01.txt"][0] + "\n")
    return truth


def write_places365(raw: Path) -> FileTruth:
    base = raw / "places365"
    keys = ["/a/airfield", "/b/bakery/shop", "/c/canyon"]
    truth = FileTruth(["airfield", "bakery/shop", "canyon"])
    paint = _Painter(truth, base)
    base.mkdir(parents=True)
    (base / "categories_places365.txt").write_text("".join(f"{k} {i}\n" for i, k in enumerate(keys)))
    train, val = [], []
    for c, key in enumerate(keys):
        for i in range(3):
            rel = f"{key}/{c * 10 + i + 1:08d}.jpg"
            paint(base / "data_256_standard" / rel.lstrip("/"), "train", c, (32, 32))
            train.append(f"{rel} {c}")
    for i, c in enumerate([2, 0, 1, 1]):
        name = f"Places365_val_{i + 1:08d}.jpg"
        paint(base / "val_256" / name, "val", c, (32, 32))
        val.append(f"{name} {c}")
    (base / "places365_train_standard.txt").write_text("\n".join(train) + "\n")
    (base / "places365_val.txt").write_text("\n".join(val) + "\n")
    return truth


# ----------------------------------------------------------------------------------------------- corrupted sets


def write_cifar10_c(folder: Path, truth: ArrayTruth, corruptions: list[str]) -> None:
    """CIFAR-10-C as extracted from CIFAR-10-C.tar (Hendrycks & Dietterich 2019): `<folder>/<corruption>.npy`, uint8
    (50000, 32, 32, 3), five blocks of the 10000 CIFAR-10 test images in order, severity 1..5, and `labels.npy`
    (50000,). Only the rows of `truth`'s test images are written (sparse files); row i of a block is test image i,
    the official row the CIFAR-10 fixture's test split records, each image its clean one shifted by the severity."""
    folder.mkdir(parents=True)
    n = len(truth.test_y)
    labels = np.zeros(50000, np.uint8)
    for severity in range(5):
        labels[severity * 10000 : severity * 10000 + n] = truth.test_y
    np.save(folder / "labels.npy", labels)
    for name in corruptions:
        array = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.uint8,
                                          shape=(50000, 32, 32, 3))
        for severity in range(1, 6):
            start = (severity - 1) * 10000
            array[start : start + n] = (truth.test_x.astype(np.int64) + 40 * severity) % 256
        array.flush()
        del array


def write_imagenet_c(folder: Path, imagenet: Path, corruptions: list[str], severities: list[int]) -> int:
    """ImageNet-C as extracted from its tarballs (blur.tar, digital.tar, noise.tar, weather.tar, extra.tar):
    `<folder>/<corruption>/<severity>/<wnid>/<validation file name>.JPEG`, 224 x 224 JPEGs made from the ImageNet
    validation images of `imagenet` (the fixture's `val/<wnid>/`) as ImageNet-C was: shorter side 256, centre crop
    224, then corrupted (here: darkened by the severity). Returns the number of images written."""
    from PIL import Image

    from sslbench.data.splits import center_crop_view

    count = 0
    for wnid_dir in sorted((imagenet / "val").iterdir()):
        for path in sorted(wnid_dir.glob("*.JPEG")):
            with Image.open(path) as raw:
                clean = center_crop_view(raw.convert("RGB"), 224)
            for name in corruptions:
                for severity in severities:
                    out = folder / name / str(severity) / wnid_dir.name / path.name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray((clean.astype(np.int64) * (10 - severity) // 10).astype(np.uint8)).save(
                        out, quality=85)
                    count += 1
    return count
