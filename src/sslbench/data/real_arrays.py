"""Real datasets published as arrays in files: CIFAR-10/100, SVHN, STL-10, MNIST (small sets: `images.npy`).

Why small readers here and not `torchvision.datasets.{CIFAR10,SVHN,STL10,MNIST}`: those classes re-hash whole
data files with MD5 on every construction (STL-10: the 2.7 GB unlabeled file, needed or not) and accept only
their own sub-folder names; CIFAR's python version is a pickle (nothing the user did not produce is
unpickled: docs/reliability.md). Each format below is a few lines, documented at its reader; downloads are
checksum-verified by `sslbench.data.download` with torchvision's MD5s.

CIFAR: the *binary* version is read (plain records, no pickle). An existing copy of the python version (what
torchvision downloads) is accepted too, through `restricted_unpickle`, which admits only the numpy array
reconstruction and plain containers the official files use, and then checks every field's type.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from sslbench.data.real_common import DatasetSpec, Read, RealContext, first_with, train_val_test
from sslbench.errors import UserError

VAL_FRACTION = 0.1  # held out of the official train split, per class (meta.json `origin` says so)

# ----------------------------------------------------------------------------------------------- CIFAR

_reconstruct = np.zeros(1).__reduce__()[0]  # numpy's array-unpickling helper (module name differs across numpy 1/2)
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 pickles `bytes` at protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}") from None


def restricted_unpickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR python-version batch: a dict of numpy arrays, lists, strings and bytes, nothing else.

    Any other global (a function or class that unpickling would call) is refused with `UserError`.
    """
    try:
        with path.open("rb") as fh:
            obj = _RestrictedUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise UserError(f"{path} is not a plain CIFAR batch ({err}); use the official binary version") from err
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _py_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = restricted_unpickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{path}: 'data' is not a uint8 (N, 3072) array")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(x, int) for x in labels):
        raise UserError(f"{path}: {label_key!r} is not a list of {len(data)} ints")
    return _chw_to_hwc(data), np.asarray(labels, np.int64)


def _chw_to_hwc(rows: np.ndarray) -> np.ndarray:
    """CIFAR rows hold 1024 red, 1024 green, 1024 blue values, each plane row-major (32 × 32)."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _bin_records(path: Path, label_bytes: int, label_at: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary version: records of `label_bytes` label bytes then 3072 pixel bytes (see `_chw_to_hwc`)."""
    raw = np.fromfile(path, dtype=np.uint8)
    width = label_bytes + 3072
    if raw.size == 0 or raw.size % width:
        raise UserError(f"{path}: size {raw.size} is not a whole number of {width}-byte CIFAR records")
    records = raw.reshape(-1, width)
    return _chw_to_hwc(records[:, label_bytes:]), records[:, label_at].astype(np.int64)


def _names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_cifar(root: Path, ctx: RealContext, hundred: bool) -> Read:
    if hundred:
        binary = (root / "train.bin").is_file()
        train_files, test_files = (["train.bin"], ["test.bin"]) if binary else (["train"], ["test"])
    else:
        binary = (root / "test_batch.bin").is_file()
        suffix = ".bin" if binary else ""
        train_files = [f"data_batch_{i}{suffix}" for i in range(1, 6)]
        test_files = [f"test_batch{suffix}"]

    def load(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [
            _bin_records(root / f, 2 if hundred else 1, 1 if hundred else 0)
            if binary
            else _py_batch(root / f, "fine_labels" if hundred else "labels")
            for f in files
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    if binary:
        classes = _names(root / ("fine_label_names.txt" if hundred else "batches.meta.txt"))
    else:
        meta = restricted_unpickle(root / ("meta" if hundred else "batches.meta"))
        key = "fine_label_names" if hundred else "label_names"
        names = meta.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UserError(f"{root}: {key!r} in the meta file is not a list of names")
        classes = list(names)
    want = 100 if hundred else 10
    if len(classes) != want:
        raise UserError(f"{root}: expected {want} class names, found {len(classes)}")
    (xtr, ytr), (xte, yte) = load(train_files), load(test_files)
    splits = train_val_test(ytr, yte, VAL_FRACTION, ctx.seed, train_images=xtr, test_images=xte)
    version = "binary version" if binary else "python version (restricted unpickler)"
    return Read(classes, splits, {"format_read": version})


def _find_cifar10(folder: Path) -> Path | None:
    return first_with(folder, ["cifar-10-batches-bin", ""], ["batches.meta.txt", "test_batch.bin"]) or first_with(
        folder, ["cifar-10-batches-py", ""], ["batches.meta", "test_batch"])


def _find_cifar100(folder: Path) -> Path | None:
    return first_with(folder, ["cifar-100-binary", ""], ["fine_label_names.txt", "train.bin", "test.bin"]) or (
        first_with(folder, ["cifar-100-python", ""], ["meta", "train", "test"]))


CIFAR10 = DatasetSpec(
    name="cifar10",
    title="CIFAR-10",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    layout="""
{folder}/cifar-10-batches-bin/{{data_batch_1.bin … data_batch_5.bin, test_batch.bin, batches.meta.txt}}
  (the binary version: cifar-10-binary.tar.gz extracted), or
{folder}/cifar-10-batches-py/{{data_batch_1 … data_batch_5, test_batch, batches.meta}} (the python version)
""",
    find_root=_find_cifar10,
    read=lambda root, ctx: _read_cifar(root, ctx, hundred=False),
)
CIFAR100 = DatasetSpec(
    name="cifar100",
    title="CIFAR-100",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    layout="""
{folder}/cifar-100-binary/{{train.bin, test.bin, fine_label_names.txt}}
  (the binary version: cifar-100-binary.tar.gz extracted), or
{folder}/cifar-100-python/{{train, test, meta}} (the python version)
""",
    find_root=_find_cifar100,
    read=lambda root, ctx: _read_cifar(root, ctx, hundred=True),
)

# ----------------------------------------------------------------------------------------------- SVHN


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits: MATLAB v5 `X` uint8 (32, 32, 3, N), `y` (N, 1) with 10 standing for the digit 0."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except (ValueError, OSError, NotImplementedError) as err:
        raise UserError(f"{path} is not a readable SVHN .mat file ({err})") from err
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
        raise UserError(f"{path}: expected X (32, 32, 3, N) and y (N, 1)")
    labels = y.reshape(-1).astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)).astype(np.uint8), labels


def _read_svhn(root: Path, ctx: RealContext) -> Read:
    xtr, ytr = _read_svhn_mat(root / "train_32x32.mat")
    xte, yte = _read_svhn_mat(root / "test_32x32.mat")
    splits = train_val_test(ytr, yte, VAL_FRACTION, ctx.seed, train_images=xtr, test_images=xte)
    return Read([str(d) for d in range(10)], splits, {"note": "the `extra` split is not used"})


SVHN = DatasetSpec(
    name="svhn",
    title="SVHN (cropped digits)",
    homepage="http://ufldl.stanford.edu/housenumbers/",
    layout="{folder}/{{train_32x32.mat, test_32x32.mat}}  (format 2, cropped digits)",
    find_root=lambda folder: first_with(folder, ["", "SVHN", "svhn"], ["train_32x32.mat", "test_32x32.mat"]),
    read=_read_svhn,
)

# ----------------------------------------------------------------------------------------------- STL-10


def _read_stl_images(path: Path) -> np.ndarray:
    """STL-10 `*_X.bin`: uint8 records of 3 × 96 × 96, each channel plane stored column-major (x outer, y inner)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % (3 * 96 * 96):
        raise UserError(f"{path}: size {raw.size} is not a whole number of 3×96×96 STL-10 images")
    # (N, C, x, y) -> (N, y, x, C)
    return np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1))


def _read_stl_labels(path: Path, n: int) -> np.ndarray:
    """STL-10 `*_y.bin`: one uint8 per image, classes numbered from 1."""
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != n or labels.min(initial=0) < 0:
        raise UserError(f"{path}: expected {n} labels in 1..10, found {len(labels)}")
    return labels


def _read_stl10(root: Path, ctx: RealContext) -> Read:
    xtr = _read_stl_images(root / "train_X.bin")
    xte = _read_stl_images(root / "test_X.bin")
    ytr = _read_stl_labels(root / "train_y.bin", len(xtr))
    yte = _read_stl_labels(root / "test_y.bin", len(xte))
    splits = train_val_test(ytr, yte, VAL_FRACTION, ctx.seed, train_images=xtr, test_images=xte)
    note = "the 5000 labelled train images only: unlabeled_X.bin and the 10 predefined folds are not used"
    return Read(_names(root / "class_names.txt"), splits, {"note": note})


STL10 = DatasetSpec(
    name="stl10",
    title="STL-10",
    homepage="https://cs.stanford.edu/~acoates/stl10/",
    layout="{folder}/stl10_binary/{{train_X.bin, train_y.bin, test_X.bin, test_y.bin, class_names.txt}}",
    find_root=lambda folder: first_with(
        folder, ["stl10_binary", ""], ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt"]
    ),
    read=_read_stl10,
)

# ----------------------------------------------------------------------------------------------- MNIST

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """IDX file (optionally gzipped): bytes 0-1 zero, byte 2 the type (0x08 = uint8), byte 3 the number of
    dimensions d, then d big-endian uint32 sizes, then the values row-major."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise UserError(f"{path} is not an uint8 IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    values = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(dims)):
        raise UserError(f"{path}: {values.size} values for shape {dims}")
    return values.reshape(dims)


def _mnist_file(root: Path, name: str) -> Path:
    plain = root / name
    return plain if plain.is_file() else root / f"{name}.gz"


def _read_mnist(root: Path, ctx: RealContext) -> Read:
    xtr, ytr, xte, yte = (read_idx(_mnist_file(root, n)) for n in _MNIST_FILES)
    for x, y, what in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{root}: {what} images {x.shape} and labels {y.shape} do not match")
    rgb = [np.repeat(x[..., None], 3, axis=-1) for x in (xtr, xte)]  # grey -> RGB, as for `digits`
    splits = train_val_test(ytr.astype(np.int64), yte.astype(np.int64), VAL_FRACTION, ctx.seed,
                            train_images=rgb[0], test_images=rgb[1])
    return Read([str(d) for d in range(10)], splits, {"note": "grey levels copied into the three RGB channels"})


def _find_mnist(folder: Path) -> Path | None:
    for sub in ("", "MNIST/raw", "raw"):
        root = folder / sub if sub else folder
        if all(_mnist_file(root, n).is_file() for n in _MNIST_FILES):
            return root
    return None


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    homepage="http://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)",
    layout="{folder}/{{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte}}[.gz]  (or in {folder}/MNIST/raw/ as torchvision leaves them)",
    find_root=_find_mnist,
    read=_read_mnist,
)

SPECS = (CIFAR10, CIFAR100, SVHN, STL10, MNIST)
