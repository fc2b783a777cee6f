"""Corrupted test sets: the 19 ImageNet-C corruptions x 5 severities (Hendrycks & Dietterich, ICLR 2019).

Two sources, one on-disk format (`data/corrupted/<dataset>/<corruption>/<severity>/`, docs/datasets.md):

- **generated** from the study's test split with `imagecorruptions` (the maintained `imagecorruptions-imaug` fork of
  bethgelab's package, same import name). Its severity constants are ImageNet-C's, so a generated set is
  "<dataset> with ImageNet-C corruptions", never "CIFAR-10-C" (which used milder constants,
  hendrycks/robustness `ImageNet-C/create_c/make_cifar_c.py`).
- **located** on disk: ImageNet-C (`<root>/<corruption>/<severity>/<wnid>/<name>.JPEG`, written as an index) or
  CIFAR-10-C (`<root>/<corruption>.npy`, uint8 (50000, 32, 32, 3), five severity blocks of 10000 in order 1..5,
  plus `<root>/labels.npy`).

Reproducibility. Every image is corrupted under its own seed, derived from (study seed, corruption, severity,
source index) with `numpy.random.SeedSequence`, so a set is byte-identical across runs, worker counts and subset
sizes. Most corruptions draw from NumPy's legacy global RNG (`np.random.seed` reaches them); two do not:
`glass_blur` shuffles pixels in a numba-compiled loop whose RNG is numba's own (seeded only through the function's
`seed` argument, else drawn from a fresh `default_rng()`), and `impulse_noise` calls
`skimage.util.random_noise(..., rng=seed)` (a fresh `default_rng(seed)`). Both get the per-image seed explicitly.

Resolution. `imagecorruptions.corrupt` rejects images below 32 px. Below `min_size` the policy `upsample` resizes
the image so that its shorter side is `min_size` (bicubic), corrupts it, and resizes it back (box filter, i.e. area
averaging, the anti-aliased downsampling); the policy `error` refuses. The caller logs which policy applies.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# the 19 corruptions in ImageNet-C order, their groups and the 15 of mCE (`COMMON`), defined in corruption_names
from sslbench.data.corruption_names import COMMON, CORRUPTION_GROUPS, CORRUPTIONS, SEVERITIES
from sslbench.data.corruption_names import EXTRA as EXTRA
from sslbench.data.corruption_names import GROUP_OF as GROUP_OF
from sslbench.data.splits import SplitSource
from sslbench.errors import UserError, unknown_choice
from sslbench.io import files_under, manifest_mismatch, read_json, sha256_manifest

log = logging.getLogger("sslbench.corrupt")

MIN_SIZE = 32  # imagecorruptions.corrupt: "width and height must be at least 32 pixels"
RESIZE_POLICIES = ("upsample", "error")
SOURCES = ("generate", "imagenet_c", "cifar10_c")
CIFAR10_C_BLOCK = 10000
CORRUPT_REBUILD = "dvc repro corrupt"
MANIFEST = "sha256"  # key of the family meta.json that lists the sha256 of every set file

CIFAR10_C_HELP = (
    "CIFAR-10-C (Hendrycks & Dietterich 2019) from https://zenodo.org/records/2535967 (CIFAR-10-C.tar), extracted so "
    "that <root>/<corruption>.npy (uint8 (50000, 32, 32, 3), severities 1..5 in blocks of 10000) and "
    "<root>/labels.npy exist"
)
IMAGENET_C_HELP = (
    "ImageNet-C (Hendrycks & Dietterich 2019) from https://zenodo.org/records/2235448 (blur.tar, digital.tar, "
    "noise.tar, weather.tar, extra.tar), extracted so that <root>/<corruption>/<severity>/<wnid>/<image>.JPEG exist"
)


# ----------------------------------------------------------------------------------------------- names, checks


def resolve_corruptions(spec: str | Sequence[str]) -> list[str]:
    """Names from a spec: `all` (19), `common` (the 15 of mCE), a group name, one corruption name, or a list.

    Raises:
        UserError: an unknown name (listing the 19 corruptions and the presets), or an empty list.
    """
    presets = {"all": CORRUPTIONS, "common": COMMON, **CORRUPTION_GROUPS}
    names = [spec] if isinstance(spec, str) else [str(s) for s in spec]
    out: list[str] = []
    for name in names:
        if name in presets:
            out.extend(presets[name])
        elif name in CORRUPTIONS:
            out.append(name)
        else:
            raise UserError(
                f"unknown corruption {name!r}; valid corruptions: {', '.join(CORRUPTIONS)} "
                f"(or a preset: {', '.join(presets)})"
            )
    if not out:
        raise UserError("no corruption selected; give `all`, `common`, a group or a list of corruption names")
    return [c for c in CORRUPTIONS if c in set(out)]  # canonical order, no duplicates


def resolve_severities(spec: str | int | Sequence[int | str]) -> list[int]:
    """Severities from a spec: `all` (1..5), one integer or a list of integers in 1..5.

    Raises:
        UserError: a severity outside 1..5 (or not an integer), or an empty list.
    """
    if isinstance(spec, str) and spec == "all":
        return list(SEVERITIES)
    values = list(spec) if isinstance(spec, Sequence) and not isinstance(spec, str) else [spec]
    out: set[int] = set()
    for value in values:
        try:
            severity = int(value)
        except (TypeError, ValueError):
            severity = -1
        if severity not in SEVERITIES or str(severity) != str(value).strip():
            raise UserError(f"severity {value!r} is not valid; severities are integers 1..5 (or `all`)")
        out.add(severity)
    if not out:
        raise UserError("no severity selected; give `all`, an integer in 1..5 or a list of them")
    return sorted(out)


def image_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """The per-image seed: a 32-bit draw of `SeedSequence([seed, corruption number, severity, index])`."""
    entropy = [int(seed), CORRUPTIONS.index(corruption), int(severity), int(index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


SUBSETS = ("first", "random", "robustbench")
ROBUSTBENCH_HELP = (
    "RobustBench's list of the 5,000 ImageNet validation images it evaluates ImageNet-C on, "
    "`robustbench/helper_files/imagenet_test_image_ids.txt` (github.com/RobustBench/robustbench; also installed by "
    "`pip install robustbench`)"
)


def robustbench_list(configured: str) -> Path:
    """The image list of `corrupt.subset=robustbench`: the file `configured`, or when it is "" the copy inside an
    installed `robustbench` package (found without importing it). `UserError` naming the fix when neither exists."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise UserError(f"corrupt.subset_list {path} is missing: point it at {ROBUSTBENCH_HELP}")
        return path
    import importlib.util

    spec = importlib.util.find_spec("robustbench")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "helper_files" / "imagenet_test_image_ids.txt"
        if path.is_file():
            return path
    raise UserError(f"corrupt.subset=robustbench needs {ROBUSTBENCH_HELP}; no installed robustbench package holds "
                    "it: set corrupt.subset_list=<path of that file>")


def select_listed(test_paths: Sequence[str], listed: Path, n_images: int | None) -> np.ndarray:
    """Sorted rows of the test images named in `listed` (lines `<wnid>/<file name>`, matched by file name), the
    first `n_images` lines of it (all when None), as RobustBench takes the first N of its list."""
    names = [Path(line.strip()).name for line in listed.read_text().splitlines() if line.strip()]
    wanted = names if n_images is None else names[:n_images]
    row_of = {Path(p).name: i for i, p in enumerate(test_paths)}
    missing = [name for name in wanted if name not in row_of]
    if missing:
        raise UserError(
            f"{len(missing)} of the {len(wanted)} images of {listed} ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}) are not in the test split: the list names ImageNet validation "
            "images, which must be the study's test split (dataset=imagenet, the full validation set)"
        )
    return np.sort(np.fromiter((row_of[name] for name in wanted), np.int64, len(wanted)))


def select_indices(n_total: int, n_images: int | None, subset: str, seed: int) -> np.ndarray:
    """Sorted source indices of the images to corrupt: all (`n_images` None), the first N, or N drawn at random.

    `random` draws without replacement from `default_rng(seed)`; the result does not depend on anything else.
    """
    if subset not in ("first", "random"):
        raise unknown_choice("subset", subset, ("first", "random"))
    if n_images is not None and n_images < 1:
        raise UserError(f"corrupt.n_images must be >= 1 or `all`, got {n_images}")
    if n_images is None or n_images >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if subset == "first":
        return np.arange(n_images, dtype=np.int64)
    picked = np.random.default_rng(seed).choice(n_total, size=n_images, replace=False)
    return np.sort(picked).astype(np.int64)


# ----------------------------------------------------------------------------------------------- generation


def _resize(image: np.ndarray, width: int, height: int, downsample: bool) -> np.ndarray:
    from PIL import Image

    method = Image.Resampling.BOX if downsample else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((width, height), method))


_CORRUPT: list[Any] = []


class _Cv2ReadOnce:
    """OpenCV as imagecorruptions' module sees it, except that `imread` reads each file once per process.

    `frost` decodes one of six packaged frost photographs (up to 900x600 px) on every call, ~75% of its time and
    the largest single cost of a corrupted family; the decoded arrays never change, so a copy of the first read is
    returned (byte-identical output, tested). Every other attribute is OpenCV's own.
    """

    def __init__(self, cv2: Any) -> None:
        self._cv2 = cv2
        self._read: dict[tuple[str, tuple[Any, ...]], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cv2, name)

    def imread(self, path: Any, *args: Any) -> Any:
        key = (str(path), args)
        if key not in self._read:
            self._read[key] = self._cv2.imread(path, *args)
        image = self._read[key]
        return None if image is None else image.copy()


def _corrupt_fn() -> Any:
    """`imagecorruptions.corrupt`, set up once per process for speed without changing any output:

    - numba's on-disk cache for glass_blur's kernel: the library compiles it at first use (two signatures, ~4 s
      each on a 2-core CPU) in every process; numba's standard cache (next to the package, or under
      NUMBA_CACHE_DIR) stores the same machine code and loads it in ~0.1 s. Where no cache folder is writable,
      numba compiles as before;
    - frost's packaged images are decoded once (`_Cv2ReadOnce`).
    """
    if not _CORRUPT:
        from imagecorruptions import corrupt, corruptions

        kernel = getattr(corruptions, "_shuffle_pixels_njit_glass_blur", None)
        with contextlib.suppress(Exception):  # numba raises RuntimeError (or others) where it cannot cache
            if kernel is not None:
                kernel.enable_caching()
        if not isinstance(corruptions.cv2, _Cv2ReadOnce):
            corruptions.cv2 = _Cv2ReadOnce(corruptions.cv2)
        _CORRUPT.append(corrupt)
    return _CORRUPT[0]


def _corrupt_seeded(image: np.ndarray, corruption: str, severity: int, seed: int, min_size: int,
                    resize: str) -> np.ndarray:
    """`corrupt_image` without saving the global RNG state (the callers do, once)."""
    corrupt = _corrupt_fn()
    height, width = image.shape[:2]
    small = min(height, width) < min_size
    if small and resize != "upsample":
        raise UserError(
            f"{corruption}: images of {height}x{width} px are below corrupt.min_size={min_size} "
            f"(imagecorruptions needs >= {MIN_SIZE} px); set corrupt.resize=upsample"
        )
    work = image
    if small:
        scale = min_size / min(height, width)
        work = _resize(image, round(width * scale), round(height * scale), downsample=False)
    kwargs: dict[str, Any] = {"seed": seed} if corruption in ("glass_blur", "impulse_noise") else {}
    np.random.seed(seed)  # noqa: NPY002 - imagecorruptions draws from NumPy's legacy global RNG
    try:
        with np.errstate(invalid="raise") if corruption == "spatter" else contextlib.nullcontext():
            out = corrupt(np.ascontiguousarray(work), severity=severity, corruption_name=corruption, **kwargs)
    except FloatingPointError:
        # spatter (severities 1-3) scales its liquid mask by the mask's maximum; when no liquid passes the
        # threshold (common on small images) that is 0/0 and the library returns NaN cast to uint8, i.e. an
        # undefined (in practice black) image. No liquid means nothing to draw: the image is returned unchanged.
        out = work.copy()
    if out.shape != work.shape:
        raise RuntimeError(f"imagecorruptions {corruption} returned shape {out.shape} for an image of {work.shape}")
    if small:
        out = _resize(out, width, height, downsample=True)
    return np.ascontiguousarray(out, dtype=np.uint8)


def corrupt_image(
    image: np.ndarray, corruption: str, severity: int, seed: int, *, min_size: int = MIN_SIZE,
    resize: str = "upsample",
) -> np.ndarray:
    """Corrupt one uint8 (H, W, 3) image under the given seed (deterministic); returns uint8 (H, W, 3).

    The global NumPy RNG state is saved and restored, so calling this does not disturb the caller's RNG.

    Raises:
        UserError: the image is smaller than `min_size` and `resize` is `error`.
        RuntimeError: imagecorruptions returned another shape than the input's.
    """
    state = np.random.get_state()  # noqa: NPY002
    try:
        return _corrupt_seeded(image, corruption, severity, seed, min_size, resize)
    finally:
        np.random.set_state(state)  # noqa: NPY002


def corrupt_batch(
    images: np.ndarray, index: np.ndarray, corruption: str, severity: int, *, seed: int, min_size: int = MIN_SIZE,
    resize: str = "upsample",
) -> np.ndarray:
    """Corrupt a uint8 (N, H, W, 3) batch; image i uses `image_seed(seed, corruption, severity, index[i])`.

    Like `corrupt_image`, it leaves the caller's global RNG state as it found it.
    """
    out = np.empty_like(images)
    state = np.random.get_state()  # noqa: NPY002
    try:
        for row, (image, i) in enumerate(zip(images, index, strict=True)):
            out[row] = _corrupt_seeded(image, corruption, severity, image_seed(seed, corruption, severity, int(i)),
                                       min_size, resize)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    return out


@dataclass(frozen=True)
class _Job:
    seed: int
    min_size: int
    resize: str


_WORKER: dict[str, Any] = {}


def _init_worker(images: np.ndarray, index: np.ndarray, job: _Job, pooled: bool = True) -> None:
    if pooled:  # one process per core already: keep OpenCV from starting its own thread pool in each worker
        with contextlib.suppress(ImportError):
            import cv2

            cv2.setNumThreads(1)
    _WORKER.update(images=images, index=index, job=job)


def _work(task: tuple[str, int, int, int]) -> tuple[str, int, int, np.ndarray]:
    corruption, severity, start, stop = task
    job: _Job = _WORKER["job"]
    out = corrupt_batch(
        _WORKER["images"][start:stop], _WORKER["index"][start:stop], corruption, severity, seed=job.seed,
        min_size=job.min_size, resize=job.resize,
    )
    return corruption, severity, start, out


def _warm_up(corruptions: Sequence[str]) -> None:
    """Compile (or load) glass_blur's numba kernel once, with the on-disk cache on, so that every worker loads it
    instead of compiling it. Severity 3 has an all-integer constant tuple, hence a second signature."""
    if "glass_blur" in corruptions:
        for severity in (1, 3):
            corrupt_image(np.zeros((MIN_SIZE, MIN_SIZE, 3), np.uint8), "glass_blur", severity, 0)


def generate_corrupted(
    images: np.ndarray,
    index: np.ndarray,
    corruptions: Sequence[str],
    severities: Sequence[int],
    *,
    seed: int,
    workers: int = 1,
    min_size: int = MIN_SIZE,
    resize: str = "upsample",
    progress: bool = True,
) -> Iterator[tuple[str, int, np.ndarray]]:
    """Yield `(corruption, severity, corrupted images)` for every pair, in order, with a progress report over images (`sslbench.progress`).

    Args:
        images: uint8 (N, H, W, 3) clean images; index: (N,) their source indices (they seed the images).
        workers: processes; 1 runs in this process. Work is split in chunks of images so that all workers stay
            busy; a set is yielded as soon as its chunks are back. The result does not depend on `workers`.

    Raises:
        UserError: unknown corruption or severity, or images below `min_size` with `resize="error"`.
    """
    from sslbench.progress import progress as progress_bar

    corruptions = resolve_corruptions(list(corruptions))
    severities = resolve_severities(list(severities))
    if resize not in RESIZE_POLICIES:
        raise unknown_choice("resize policy", resize, RESIZE_POLICIES)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(index):
        raise ValueError(f"images must be uint8 (N, H, W, 3) with one index each, got {images.shape} {images.dtype}")
    if min(images.shape[1:3]) < min_size and resize == "error":
        raise UserError(
            f"images of {images.shape[1]}x{images.shape[2]} px are below corrupt.min_size={min_size}; "
            "set corrupt.resize=upsample"
        )
    n = len(images)
    if workers < 1:
        raise UserError(f"corrupt.workers must be >= 1, got {workers}")
    chunk = max(1, min(64, -(-n // (workers * 4))))
    tasks = [(c, s, a, min(a + chunk, n)) for c in corruptions for s in severities for a in range(0, n, chunk)]
    per_set = -(-n // chunk)
    bar = progress_bar(total=n * len(corruptions) * len(severities), unit="img", desc="corrupt", disable=not progress)
    job = _Job(seed, min_size, resize)
    pending: dict[tuple[str, int], dict[int, np.ndarray]] = {}

    def collect(results: Iterator[tuple[str, int, int, np.ndarray]]) -> Iterator[tuple[str, int, np.ndarray]]:
        for corruption, severity, start, out in results:
            bar.update(len(out))
            parts = pending.setdefault((corruption, severity), {})
            parts[start] = out
            if len(parts) == per_set:
                del pending[(corruption, severity)]
                yield corruption, severity, np.concatenate([parts[k] for k in sorted(parts)])

    try:
        if workers == 1 or n == 0:
            _init_worker(images, index, job, pooled=False)
            yield from collect(_work(t) for t in tasks)
            _WORKER.clear()
        else:
            _warm_up(corruptions)  # compiles glass_blur's kernel into numba's cache, which the workers then load
            # Not `fork`: OpenCV's thread pool (frost's cv2.resize) does not survive a fork, and a worker forked
            # from a process that already ran it deadlocks. A forkserver starts clean and forks workers that have
            # imagecorruptions imported already; spawn where there is no forkserver.
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                ctx.set_forkserver_preload(["imagecorruptions", "sslbench.data.corruptions"])
            with ctx.Pool(workers, initializer=_init_worker, initargs=(images, index, job)) as pool:
                yield from collect(pool.imap(_work, tasks))
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------- layout on disk


def corrupted_root(data_root: str | os.PathLike[str], dataset: str) -> Path:
    return Path(data_root) / "corrupted" / dataset


def corrupted_dir(data_root: str | os.PathLike[str], dataset: str, corruption: str, severity: int) -> Path:
    return corrupted_root(data_root, dataset) / corruption / str(severity)


def read_corrupted_meta(data_root: str | os.PathLike[str], dataset: str) -> dict[str, Any]:
    """The summary `data/corrupted/<dataset>/meta.json`: name, source, corruptions, severities, index, seed, and
    `sha256`, the manifest of every set file (see `write_summary`)."""
    path = corrupted_root(data_root, dataset) / "meta.json"
    meta = read_json(path, CORRUPT_REBUILD)
    if not isinstance(meta, dict) or not {"corruptions", "severities", "index"} <= meta.keys():
        raise UserError(f"{path} is incomplete; run `{CORRUPT_REBUILD}`")
    if not isinstance(meta.get(MANIFEST), dict):
        raise UserError(f"{path} has no `{MANIFEST}` manifest of its set files (written by an older sslbench); "
                        f"run `{CORRUPT_REBUILD}`")
    return meta


def _set_files(root: Path) -> dict[str, Path]:
    """Every file of every set folder under `root`, keyed `<corruption>/<severity>/<file>`."""
    return files_under(root, "*/*/*")


def verify_sets(root: Path, family: dict[str, Any], sets: Iterable[tuple[str, int]] | None = None) -> None:
    """Check set files under `root` against the family manifest: those of `sets`, or every set file when None.

    The stages that read corrupted sets declare only the family `meta.json` as their DVC dependency (one file
    instead of ~400 directory entries hashed per stage on every `dvc repro`); this check is what makes that
    dependency exact: a set file that differs from, is missing from, or is absent in the manifest is refused.

    Raises:
        UserError: naming the first offending file and `dvc repro corrupt`.
    """
    manifest: dict[str, str] = family[MANIFEST]
    if sets is None:
        present = _set_files(root)
        wanted = dict(manifest)
    else:
        prefixes = tuple(f"{c}/{s}/" for c, s in sets)
        present = {k: p for k, p in _set_files(root).items() if k.startswith(prefixes)}
        wanted = {k: v for k, v in manifest.items() if k.startswith(prefixes)}
    mismatch = manifest_mismatch(present, wanted)
    if mismatch is None:
        return
    rel, kind = mismatch
    problem = {"unlisted": "is not in the family manifest", "missing": "is missing",
               "changed": "differs from the sha256 in the family manifest"}[kind]
    raise UserError(f"corrupted set file {root / rel} {problem} ({root / 'meta.json'}); run `{CORRUPT_REBUILD}`")


def open_corrupted(data_root: str | os.PathLike[str], dataset: str, corruption: str, severity: int) -> SplitSource:
    """Open one corrupted set (images.npy or index.csv form) as a `SplitSource`; its meta holds `index`. Its files
    are checked against the family manifest first (`verify_sets`)."""
    directory = corrupted_dir(data_root, dataset, corruption, severity)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise UserError(f"corrupted set {directory} is missing; run `{CORRUPT_REBUILD}` to build it")
    verify_sets(corrupted_root(data_root, dataset), read_corrupted_meta(data_root, dataset), [(corruption, severity)])
    meta = read_json(meta_path, CORRUPT_REBUILD)
    if (directory / "images.npy").is_file():
        try:
            array = np.load(directory / "images.npy", mmap_mode="r", allow_pickle=False)
            labels = np.load(directory / "labels.npy", allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as err:
            raise UserError(f"corrupted set {directory} is unreadable ({err}); run `{CORRUPT_REBUILD}`") from err
        source = SplitSource(directory, labels, meta, _array=array)
    else:
        paths, labels_list = _read_index(directory / "index.csv", Path(meta["root"]))
        source = SplitSource(directory, np.asarray(labels_list, np.int64), meta, _paths=paths)
    if len(meta.get("index", [])) != len(source):
        raise UserError(f"corrupted set {directory}: meta index does not match its images; run `{CORRUPT_REBUILD}`")
    return source


def _read_index(path: Path, root: Path) -> tuple[list[Path], list[int]]:
    if not path.is_file():
        raise UserError(f"{path.parent} has neither images.npy nor index.csv; run `{CORRUPT_REBUILD}`")
    paths: list[Path] = []
    labels: list[int] = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            paths.append(root / row["path"])
            labels.append(int(row["label"]))
    return paths, labels


# ----------------------------------------------------------------------------------------------- real sets on disk


def load_cifar10_c(
    root: Path, corruption: str, severity: int, index: np.ndarray, test_labels: np.ndarray,
    official: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows `index` of CIFAR-10-C's (corruption, severity) block: (images uint8 (n, 32, 32, 3), labels int64 (n,)).

    Row r of a severity block is CIFAR-10 test image r. Test image i of the study is official test image
    `official[i]` (the `index` its split's meta records; None: the whole test set in order, i.e. `official[i] = i`),
    so a study whose test split is part of the CIFAR-10 test set pairs too; the labels are checked against
    `labels.npy` to catch anything else.

    Raises:
        UserError: files absent (with the layout and where to get them), wrong shape, or labels that disagree.
    """
    array_path, labels_path = root / f"{corruption}.npy", root / "labels.npy"
    if not array_path.is_file() or not labels_path.is_file():
        missing = array_path if not array_path.is_file() else labels_path
        raise UserError(f"CIFAR-10-C not found: {missing} is missing. Get {CIFAR10_C_HELP}; set corrupt.root=<root>")
    array = np.load(array_path, mmap_mode="r", allow_pickle=False)
    labels = np.load(labels_path, mmap_mode="r", allow_pickle=False)
    want = (5 * CIFAR10_C_BLOCK, 32, 32, 3)
    if array.shape != want or array.dtype != np.uint8 or labels.shape != (5 * CIFAR10_C_BLOCK,):
        raise UserError(
            f"{array_path} is {array.dtype} {array.shape} (labels {labels.shape}); CIFAR-10-C files are uint8 "
            f"{want} with labels (50000,). Get {CIFAR10_C_HELP}"
        )
    if official is None:
        if len(test_labels) != CIFAR10_C_BLOCK:
            raise UserError(
                f"CIFAR-10-C pairs row i with CIFAR-10 test image i, but the study's test split has {len(test_labels)} "
                "images, not 10000, and no `index` of official rows; use the original CIFAR-10 test set as the test "
                "split (`dvc repro prepare`)"
            )
        official = np.arange(CIFAR10_C_BLOCK)
    rows = np.asarray(official, np.int64)
    if len(rows) != len(test_labels) or (len(rows) and (rows.min() < 0 or rows.max() >= CIFAR10_C_BLOCK)):
        raise UserError(
            f"CIFAR-10-C pairs row r with CIFAR-10 test image r, but the study's test split records official rows "
            f"outside 0..{CIFAR10_C_BLOCK - 1} (or not one per image); use the CIFAR-10 test set as the test split "
            "(`dvc repro prepare`)"
        )
    block = slice((severity - 1) * CIFAR10_C_BLOCK, severity * CIFAR10_C_BLOCK)
    block_labels = np.asarray(labels[block], np.int64)[rows]
    if not np.array_equal(block_labels, np.asarray(test_labels, np.int64)):
        raise UserError(
            f"the labels of {labels_path} (severity {severity}) differ from the study's CIFAR-10 test labels; the test "
            "split is not the original CIFAR-10 test set in order, so CIFAR-10-C cannot be paired with it"
        )
    return np.ascontiguousarray(array[block][rows[index]]), block_labels[index]


def imagenet_c_rows(
    root: Path, corruption: str, severity: int, index: np.ndarray, test_paths: Sequence[str],
    test_labels: np.ndarray, classes: Sequence[str],
) -> list[tuple[str, int]]:
    """Index rows (path relative to `root`, label) of ImageNet-C for the test images `index`.

    ImageNet-C corrupts the ImageNet validation images and keeps their file names, filed by WordNet id:
    test image i (path `.../<name>.JPEG`, label l) pairs with `<root>/<corruption>/<severity>/<classes[l]>/<name>.JPEG`.

    Raises:
        UserError: the corruption folder or a paired image is absent (with the layout and where to get it).
    """
    folder = root / corruption / str(severity)
    if not folder.is_dir():
        raise UserError(f"ImageNet-C not found: {folder} is missing. Get {IMAGENET_C_HELP}; set corrupt.root=<root>")
    rows: list[tuple[str, int]] = []
    for i in index:
        label = int(test_labels[i])
        rel = f"{corruption}/{severity}/{classes[label]}/{Path(test_paths[i]).name}"
        if not (root / rel).is_file():
            raise UserError(
                f"ImageNet-C image {root / rel} (paired with test image {i}, {test_paths[i]}) is missing: ImageNet-C "
                f"is built from the ImageNet validation images, which must be the study's test split. Get "
                f"{IMAGENET_C_HELP}"
            )
        rows.append((rel, label))
    return rows


def imagenet_c_clean_view(path: Path, image_size: int) -> np.ndarray:
    """A clean ImageNet image as ImageNet-C saw it (shorter side to 256, centre crop 224, as in hendrycks'
    `make_imagenet_c.py`), then resized to the study's `image_size` like the corrupted images: the SSIM reference,
    and the same view as the prepared ImageNet splits (`splits.center_crop_view`)."""
    from PIL import Image

    from sslbench.data.splits import center_crop_view

    with Image.open(path) as raw:
        img = raw.convert("RGB")
    return center_crop_view(img, image_size)


def write_summary(directory: Path, meta: dict[str, Any]) -> None:
    """Write `meta.json` of the whole corrupted family into `directory` (already inside an atomic write), after
    its sets: `meta` plus `sha256`, the manifest of every set file (`<corruption>/<severity>/<file>` -> hex), so
    that this one file pins every byte a reader of the sets gets (`verify_sets`)."""
    manifest = sha256_manifest(_set_files(directory))
    (directory / "meta.json").write_text(json.dumps({**meta, MANIFEST: manifest}, indent=2) + "\n")

