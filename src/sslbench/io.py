"""Artifact I/O: atomic writes, metrics JSON, dataset splits, model files, Parquet embeddings.

Every writer writes to a temporary name beside the target and renames it into place at the end, so a killed
stage never leaves a file that looks complete. Every reader validates what it reads and raises `UserError`
naming the file and the `dvc repro` command that rebuilds it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sslbench.errors import UserError

# ----------------------------------------------------------------------------------------------- atomic writes


_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-{_HOST}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries of `target` left by killed processes of this host (`.<name>.tmp-<host>-<pid>` whose
    process is gone); returns what was removed. Those of live processes and of other hosts are left alone."""
    prefix = _tmp_prefix(target)
    removed = []
    for path in target.parent.glob(glob.escape(prefix) + "*"):
        pid = path.name[len(prefix) :]
        if pid.isdigit() and not _pid_alive(int(pid)):
            _remove(path)
            removed.append(path)
    return removed


def _unwritable(target: Path, err: OSError) -> UserError:
    return UserError(
        f"cannot write {target}: {err.strerror or err} ({err.filename or target.parent}); make that folder "
        "writable, or point paths.data / paths.models / paths.reports at a writable folder"
    )


def ensure_writable(*targets: str | os.PathLike[str]) -> None:
    """Check, before any work, that each target file or folder can be created; raise `UserError` naming the target
    and the fix otherwise. Folders made for the check are removed again, so a stage that fails later leaves no
    trace. Root ignores permission bits but not immutable flags or read-only mounts, so this creates and removes a
    probe entry rather than asking `os.access`."""
    for target in map(Path, targets):
        _check_writable(target, keep_folder=False)


def _check_writable(target: Path, keep_folder: bool) -> None:
    folder = target.parent
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    probe = folder / f"{_tmp_prefix(target)}{os.getpid()}-probe"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        raise _unwritable(target, err) from err
    finally:
        for path in made if not keep_folder else ():
            try:
                path.rmdir()
            except OSError:
                break


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it onto `target`, on failure remove it.

    Works for files and directories alike (whatever the body creates at the yielded path). The temporary is named
    `.<name>.tmp-<host>-<pid>`: a `kill -9` leaves it behind, and the next write of the same target removes it
    (`remove_stale_temporaries`). A folder that cannot be written raises `UserError` before the body runs.
    """
    target = Path(target)
    tmp = target.parent / f"{_tmp_prefix(target)}{os.getpid()}"
    _check_writable(target, keep_folder=True)
    remove_stale_temporaries(target)
    _remove(tmp)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_metrics(target: str | os.PathLike[str], metrics: Mapping[str, Any]) -> None:
    """Write a flat metrics JSON (keys `group/name`, values numbers or short strings)."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if "/" not in key:
            raise ValueError(f"metric key {key!r} must look like 'group/name'")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        flat[key] = value
    write_json(target, flat)


def read_json(path: str | os.PathLike[str], rebuild: str) -> Any:
    """Read a JSON artifact; `rebuild` is the command that recreates it (named in the error)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; run `{rebuild}` to build it")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); run `{rebuild}` to rebuild it") from err


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def files_under(root: str | os.PathLike[str], pattern: str) -> dict[str, Path]:
    """The files under `root` matching the glob `pattern`, keyed by their POSIX path relative to `root`, sorted."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p for p in sorted(root.glob(pattern)) if p.is_file()}


def sha256_manifest(files: Mapping[str, Path]) -> dict[str, str]:
    """{key: sha256} of `files` ({key: path}, e.g. from `files_under`): what a manifest file records."""
    return {key: sha256_file(path) for key, path in files.items()}


def manifest_mismatch(present: Mapping[str, Path], listed: Mapping[str, str]) -> tuple[str, str] | None:
    """The first file (by key) where `present` ({key: path} on disk) and a manifest `listed` ({key: sha256})
    disagree, as (key, "unlisted" | "missing" | "changed"); None when every file is listed with its bytes.

    The shared check behind the corrupted-set manifest (`corruptions.verify_sets`) and the embedding manifest
    (`verify_embeddings`); each caller words its own error.
    """
    for key in sorted(present.keys() | listed.keys()):
        if key not in listed:
            return key, "unlisted"
        if key not in present:
            return key, "missing"
        if sha256_file(present[key]) != listed[key]:
            return key, "changed"
    return None


def sha256_array(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- dataset splits


@dataclass(frozen=True)
class Split:
    """One split of a dataset in the on-disk format of docs/datasets.md (small sets).

    images: uint8 (N, H, W, 3); labels: int64 (N,); meta: the split's meta.json.
    """

    images: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])


def split_dir(data_root: str | os.PathLike[str], dataset: str, split: str) -> Path:
    return Path(data_root) / "datasets" / dataset / split


def write_split(
    directory: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray, meta: Mapping[str, Any]
) -> None:
    """Atomically write `images.npy`, `labels.npy` and `meta.json` (with sha256 and shapes) into `directory`."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {labels.shape}")
    full_meta = dict(meta)
    full_meta.update(
        n=int(images.shape[0]),
        image_shape=list(images.shape[1:]),
        sha256={"images": sha256_array(images), "labels": sha256_array(labels)},
    )
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2) + "\n")


def read_split(directory: str | os.PathLike[str], rebuild: str = "dvc repro prepare", verify: bool = False) -> Split:
    """Read a split written by `write_split`; `verify=True` also checks the sha256 of both arrays."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"dataset split {directory} is missing (no meta.json); run `{rebuild}` to build it")
    meta = read_json(meta_path, rebuild)
    try:
        images = np.load(directory / "images.npy", allow_pickle=False)
        labels = np.load(directory / "labels.npy", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise UserError(f"dataset split {directory} is unreadable ({err}); run `{rebuild}` to rebuild it") from err
    if images.dtype != np.uint8 or images.ndim != 4 or len(labels) != len(images) or len(images) != meta.get("n"):
        raise UserError(
            f"dataset split {directory} does not match its meta.json (images {images.dtype} {images.shape}, "
            f"labels {labels.shape}, meta n={meta.get('n')}); run `{rebuild}` to rebuild it"
        )
    if verify and (
        sha256_array(images) != meta["sha256"]["images"] or sha256_array(labels) != meta["sha256"]["labels"]
    ):
        raise UserError(f"dataset split {directory} fails its sha256 check; run `{rebuild}` to rebuild it")
    return Split(images=images, labels=labels.astype(np.int64), meta=meta)


# ----------------------------------------------------------------------------------------------- temp dirs


@contextlib.contextmanager
def temp_dir(prefix: str = "sslbench-") -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


# ----------------------------------------------------------------------------------------------- embeddings

EMBED_REBUILD = "dvc repro embed@{method}"
# the sha256 of every table of a method's embedding folder, written last by the embed stage: the evaluate stage
# depends on this one file instead of the folder (~100 tables for DVC to walk on every call;
# docs/decisions.md) and checks the tables against it before reading them (`verify_embeddings`)
EMBED_MANIFEST = "manifest.json"
EMBED_TABLES = "*/*.parquet"  # a method folder's tables: <dataset>/<split>.parquet
STOCHASTIC_SPACES = ("none", "h", "z")
# storage type of the float columns: float16 halves the tables on disk (~50 GB -> ~25 GB per ImageNet method); readers
# always return float32 (docs/decisions.md, "Embedding tables in float16")
EMBED_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Embeddings:
    """A cached embedding table (docs/datasets.md).

    embedding: float32 (N, D), the downstream representation; mu/logvar: float32 (N, S) of the stochastic space
    (Bayes models only, else None); meta: the Parquet key-value metadata (method, dataset, split, dim, ...).
    """

    index: np.ndarray
    label: np.ndarray
    embedding: np.ndarray
    mu: np.ndarray | None
    logvar: np.ndarray | None
    meta: dict[str, str]

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])


def embeddings_path(data_root: str | os.PathLike[str], method: str, dataset: str, split: str) -> Path:
    return Path(data_root) / "embeddings" / method / dataset / f"{split}.parquet"


def _embedding_schema(dim: int, stochastic_dim: int | None, dtype: str = "float32") -> Any:
    import pyarrow as pa

    value = pa.float16() if dtype == "float16" else pa.float32()
    fields = [
        pa.field("index", pa.int64()),
        pa.field("label", pa.int32()),
        pa.field("embedding", pa.list_(value, dim)),
    ]
    if stochastic_dim is not None:
        fields += [
            pa.field("mu", pa.list_(value, stochastic_dim)),
            pa.field("logvar", pa.list_(value, stochastic_dim)),
        ]
    return pa.schema(fields)


class EmbeddingWriter:
    """Stream embedding batches into one Parquet file, atomically (temp file, renamed on `close`).

    Use as a context manager; an exception inside the block removes the temp file and leaves no output. `dtype`
    `float16` stores the float columns rounded to half precision (recorded in the metadata as `dtype`; a value
    beyond float16's range is an error); the default float32 tables are written exactly as before.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        method: str,
        dataset: str,
        split: str,
        dim: int,
        stochastic_space: str = "none",
        stochastic_dim: int | None = None,
        encoder_sha256: str = "",
        dtype: str = "float32",
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if dtype not in EMBED_DTYPES:
            raise ValueError(f"dtype must be one of {EMBED_DTYPES}, got {dtype!r}")
        if stochastic_space not in STOCHASTIC_SPACES:
            raise ValueError(f"stochastic_space must be one of {STOCHASTIC_SPACES}, got {stochastic_space!r}")
        if (stochastic_space == "none") != (stochastic_dim is None):
            raise ValueError("stochastic_dim is required exactly when stochastic_space is not 'none'")
        self.path = Path(path)
        self.dim = dim
        self.stochastic_dim = stochastic_dim
        meta = {
            "method": method,
            "dataset": dataset,
            "split": split,
            "dim": str(dim),
            "stochastic_space": stochastic_space,
            "stochastic_dim": str(stochastic_dim or 0),
            "encoder_sha256": encoder_sha256,
        }
        if dtype != "float32":
            meta["dtype"] = dtype
        self.dtype = dtype
        self.schema = _embedding_schema(dim, stochastic_dim, dtype).with_metadata(
            {f"sslbench.{k}": v for k, v in meta.items()}
        )
        self._pa = pa
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self.rows = 0

    def _column(self, values: np.ndarray, width: int) -> Any:
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != width:
            raise ValueError(f"expected a (N, {width}) array, got {values.shape}")
        if self.dtype == "float16":
            with np.errstate(over="ignore"):  # overflow is reported below, with the value
                half = values.astype(np.float16)
            if not np.array_equal(np.isfinite(half), np.isfinite(values)):
                raise UserError(
                    f"{self.path}: embedding values up to {np.abs(values[np.isfinite(values)]).max():.3g} exceed "
                    "float16's range (65504). A trained encoder's features stay far below it, so this one has "
                    "probably diverged (see its training log, reports/pretrain/live/<method>/); to store such values "
                    "anyway, set embed.dtype=float32"
                )
            flat = self._pa.array(half.reshape(-1), type=self._pa.float16())
        else:
            flat = self._pa.array(values.reshape(-1), type=self._pa.float32())
        return self._pa.FixedSizeListArray.from_arrays(flat, width)

    def write(
        self,
        index: np.ndarray,
        label: np.ndarray,
        embedding: np.ndarray,
        mu: np.ndarray | None = None,
        logvar: np.ndarray | None = None,
    ) -> None:
        columns = [
            self._pa.array(np.asarray(index, dtype=np.int64)),
            self._pa.array(np.asarray(label, dtype=np.int32)),
            self._column(embedding, self.dim),
        ]
        if self.stochastic_dim is not None:
            if mu is None or logvar is None:
                raise ValueError("a stochastic embedding table needs mu and logvar")
            columns += [self._column(mu, self.stochastic_dim), self._column(logvar, self.stochastic_dim)]
        self._writer.write_table(self._pa.Table.from_arrays(columns, schema=self.schema))
        self.rows += len(index)

    def close(self) -> None:
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self._writer.close()
        self._ctx.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


def write_embedding_manifest(method_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Write `<method_dir>/manifest.json`: {"sha256": {<dataset>/<split>.parquet: sha256}} of every table there."""
    files = sha256_manifest(files_under(method_dir, EMBED_TABLES))
    write_json(Path(method_dir) / EMBED_MANIFEST, {"sha256": files})
    return files


def verify_embeddings(method_dir: str | os.PathLike[str], method: str) -> None:
    """Check every table of a method's embedding folder against its manifest: the same files, the same bytes.

    Raises `UserError` naming the folder or file and `dvc repro embed@<method>`: a missing manifest (a folder from
    before manifests, or an interrupted copy), a table missing, added or changed since the embed stage wrote it.
    """
    method_dir = Path(method_dir)
    rebuild = EMBED_REBUILD.format(method=method)
    manifest = read_json(method_dir / EMBED_MANIFEST, rebuild)
    listed = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        raise UserError(f"{method_dir / EMBED_MANIFEST} has no `sha256` table; run `{rebuild}` to rebuild it")
    mismatch = manifest_mismatch(files_under(method_dir, EMBED_TABLES), listed)
    if mismatch is None:
        return
    rel, kind = mismatch
    manifest_path = method_dir / EMBED_MANIFEST
    state = {"unlisted": f"is not in the manifest ({manifest_path})", "missing": f"is missing ({manifest_path})",
             "changed": f"changed since `{rebuild}` wrote them (sha256 differs from {manifest_path})"}[kind]
    raise UserError(f"embeddings {method_dir / rel} {state}; run `{rebuild}`")


def read_embeddings(
    path: str | os.PathLike[str],
    *,
    method: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    dim: int | None = None,
) -> Embeddings:
    """Read and validate one embedding table; each given expectation is checked against the metadata.

    The metadata and schema are checked from the footer before any data is read; the rows are then decoded batch
    by batch straight into preallocated arrays, so the peak memory is the table plus a bounded buffer (~0.3 GiB for
    64 MiB row groups): an ImageNet-sized 1.28M x 2048 table needs 9.8 GiB, not three times that
    (`pq.read_table` + `combine_chunks` held about 3x; measured in benchmarks/probe_memory.py). Float16 tables
    (`EmbeddingWriter(dtype="float16")`) are returned as float32 like the others.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    parts = path.parts
    rebuild = EMBED_REBUILD.format(method=method or (parts[-3] if len(parts) >= 3 else "<method>"))
    corrupt = "embeddings {path} are truncated or corrupt ({err}); delete the file and run `{rebuild}`"
    if not path.is_file():
        raise UserError(f"embeddings {path} are missing; run `{rebuild}` to build them")
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering would read every column chunk at once
        schema, n = parquet.schema_arrow, parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as err:
        raise UserError(corrupt.format(path=path, err=err, rebuild=rebuild)) from err
    raw = schema.metadata or {}
    meta = {k.decode()[len("sslbench.") :]: v.decode() for k, v in raw.items() if k.startswith(b"sslbench.")}
    required = {"method", "dataset", "split", "dim", "stochastic_space", "stochastic_dim"}
    names = set(schema.names)
    if not required <= meta.keys() or not {"index", "label", "embedding"} <= names:
        raise UserError(f"embeddings {path} lack the sslbench schema or metadata; run `{rebuild}`")
    for key, want in (("method", method), ("dataset", dataset), ("split", split), ("dim", dim)):
        if want is not None and meta[key] != str(want):
            raise UserError(
                f"embeddings {path} have {key}={meta[key]!r} but {want!r} was expected; "
                f"the file belongs to another run: run `{rebuild}`"
            )
    width = getattr(schema.field("embedding").type, "list_size", -1)
    if width != int(meta["dim"]):
        raise UserError(f"embeddings {path}: column width {width} != dim {meta['dim']}; run `{rebuild}`")
    stochastic = meta["stochastic_space"] != "none"
    if stochastic and not {"mu", "logvar"} <= names:
        raise UserError(f"embeddings {path} are stochastic but lack mu/logvar; run `{rebuild}`")
    widths = {"embedding": width}
    if stochastic:
        widths.update(mu=int(meta["stochastic_dim"]), logvar=int(meta["stochastic_dim"]))
    index, label = np.empty(n, np.int64), np.empty(n, np.int64)
    out = {name: np.empty((n, w), np.float32) for name, w in widths.items()}
    row = 0
    try:
        rows_per_batch = max(256, (8 << 20) // (4 * sum(widths.values())))  # ~8 MiB decoded per batch
        for batch in parquet.iter_batches(batch_size=rows_per_batch, columns=["index", "label", *widths]):
            m = batch.num_rows
            if row + m > n:
                raise ValueError(f"more rows than the footer's {n}")
            index[row : row + m] = batch.column("index").to_numpy()
            label[row : row + m] = batch.column("label").to_numpy()
            for name, w in widths.items():
                flat = batch.column(name).flatten().to_numpy(zero_copy_only=False)
                out[name][row : row + m] = flat.reshape(m, w)
            row += m
        if row != n:
            raise ValueError(f"{row} rows decoded, the footer says {n}")
    except (pa.ArrowException, OSError, ValueError) as err:
        raise UserError(corrupt.format(path=path, err=err, rebuild=rebuild)) from err
    return Embeddings(
        index=index,
        label=label,
        embedding=out["embedding"],
        mu=out.get("mu"),
        logvar=out.get("logvar"),
        meta=meta,
    )
