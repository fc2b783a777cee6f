"""Checksum-verified downloads and archive extraction that refuses members escaping the target folder.

Why not torchvision's `download_and_extract_archive`: torchvision 0.29 extracts with a plain `tarfile.extractall`
/ `zipfile.extractall` and does not refuse absolute members, `..` members or links that point outside the target,
and it leaves a file that failed its MD5 check on disk. Here:

- `fetch(url, dest)` is the one function that touches the network (tests replace it);
- `download_all(resources, folder, dataset)` fetches into a staging folder inside `folder`, verifies each file's
  MD5 (or SHA-256), extracts archives, and only then moves the results into `folder`. Any failure (checksum
  mismatch, refused archive member, network error) removes the staging folder and every folder it created, so a
  failed download leaves nothing behind;
- `safe_extract(archive, target)` checks *every* member before writing anything (see `check_member` and
  `check_link` for the rules) and extracts tar archives with Python's `data` filter as a second line of defence.

URLs and checksums of every downloadable dataset live in `RESOURCES`, next to where they came from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sslbench.errors import UserError
from sslbench.progress import progress

log = logging.getLogger("sslbench.download")

USER_AGENT = "sslbench-dataset-download/0.1"
TIMEOUT_S = 60.0


class NetworkError(UserError):
    """The network could not be reached or a server refused (the dataset may still be placed by hand)."""


class ChecksumError(UserError):
    """A downloaded file did not match its published checksum (the file has been deleted)."""


class UnsafeArchiveError(UserError):
    """An archive member would land outside the target folder (nothing has been extracted)."""


@dataclass(frozen=True)
class Resource:
    """One published file: `urls` (mirrors tried in order), the local `filename`, its checksum as
    `"md5:<hex>"` or `"sha256:<hex>"`, whether it is an archive to extract (`.tar`, `.tar.gz`, `.tgz`, `.zip`), and
    `creates`: paths that extracting it puts in the dataset folder, in any accepted spelling (when one exists already,
    the resource is skipped, so a partly present copy does not fetch again, e.g., Places365's 24 GB of train images).
    """

    urls: tuple[str, ...]
    filename: str
    checksum: str
    extract: bool = False
    creates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        algo, _, digest = self.checksum.partition(":")
        if algo not in ("md5", "sha256") or not digest:
            raise ValueError(f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {self.checksum!r}")


def _one(url: str, filename: str, checksum: str, extract: bool = False,
         creates: tuple[str, ...] = ()) -> Resource:
    return Resource((url,), filename, checksum, extract, creates)


# Checksums: torchvision 0.29 (`torchvision.datasets.<Class>` attributes, cross-checked in
# tests/data/test_download.py) where it has the dataset; CIFAR binary versions from the CIFAR page
# (https://www.cs.toronto.edu/~kriz/cifar.html); TinyImageNet's zip as published with the CS231n course files;
# SUN397's Partitions.zip as pinned by torchvision's (since removed) prototype datasets.
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_PLACES = "http://data.csail.mit.edu/places/places365/"
_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "cifar10": (
        _one("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz",
             "md5:c32a1d4ab5d03f1284b67883e8d87530", extract=True),
    ),
    "cifar100": (
        _one("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "cifar-100-binary.tar.gz",
             "md5:03b5dce01913d631647c71ecec9e9cb8", extract=True),
    ),
    "svhn": (
        _one("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "train_32x32.mat",
             "md5:e26dedcc434d2e4c54c9b2d4a06d8373"),
        _one("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "test_32x32.mat",
             "md5:eb5a983be6a315427106f1b164d9cef3"),
    ),
    "stl10": (
        _one("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "stl10_binary.tar.gz",
             "md5:91f7769df0f17e558f3565bffb0c7dfb", extract=True),
    ),
    "mnist": tuple(
        Resource(tuple(m + name for m in _MNIST_MIRRORS), name, f"md5:{md5}")
        for name, md5 in (
            ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        )
    ),
    "tinyimagenet": (
        _one("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "tiny-imagenet-200.zip",
             "md5:90528d7ca1a48142e341f4ef8d21d0de", extract=True),
    ),
    "dtd": (
        _one("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", "dtd-r1.0.1.tar.gz",
             "md5:fff73e5086ae6bdbea199a49dfb8a4c1", extract=True),
    ),
    "flowers102": (
        _one(_FLOWERS + "102flowers.tgz", "102flowers.tgz", "md5:52808999861908f626f3c1f4e79d11fa",
             extract=True, creates=("jpg",)),
        _one(_FLOWERS + "imagelabels.mat", "imagelabels.mat", "md5:e0620be6f572b9609742df49c70aed4d"),
        _one(_FLOWERS + "setid.mat", "setid.mat", "md5:a5357ecc9cb78c4bef273ce3793fc85c"),
    ),
    "sun397": (
        _one("http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz", "SUN397.tar.gz",
             "md5:8ca2778205c41d23104230ba66911c7a", extract=True, creates=("SUN397",)),
        _one("https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip", "Partitions.zip",
             "sha256:e3311ea5f812d4cc6faef194688343d1111f6cd6f70f2c62f393c2b8d6ba1ec9", extract=True),
    ),
    "places365": (
        _one(_PLACES + "filelist_places365-standard.tar", "filelist_places365-standard.tar",
             "md5:35a0585fee1fa656440f3ab298f8479c", extract=True, creates=("places365_train_standard.txt",)),
        _one(_PLACES + "val_256.tar", "val_256.tar", "md5:e27b17d8d44f4af9a78502beb927f808",
             extract=True, creates=("val_256",)),
        _one(_PLACES + "train_256_places365standard.tar", "train_256_places365standard.tar",
             "md5:53ca1c756c3d1e7809517cc47c5561c5", extract=True,
             creates=("data_256", "data_256_standard")),
    ),
}


# ----------------------------------------------------------------------------------------------- network


def fetch(url: str, dest: Path) -> None:
    """Stream `url` into `dest` with a progress bar (a few log lines when not on a terminal: `sslbench.progress`).
    The only network access of the package (tests replace it).

    Raises OSError (urllib's URLError/HTTPError included) when the network or the server fails.
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))


def file_digest(path: Path, algo: str) -> str:
    digest = hashlib.new(algo, usedforsecurity=False) if algo == "md5" else hashlib.new(algo)
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, checksum: str) -> bool:
    algo, _, want = checksum.partition(":")
    return path.is_file() and file_digest(path, algo) == want.lower()


# ----------------------------------------------------------------------------------------------- download


@contextmanager
def _rollback_new_dirs(folder: Path) -> Iterator[None]:
    """On failure, remove `folder` and any of its ancestors that this block created (only if left empty)."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for path in created:  # deepest first
            try:
                path.rmdir()
            except OSError:
                break
        raise


def download_all(resources: tuple[Resource, ...], folder: Path, dataset: str) -> None:
    """Fetch, verify and extract `resources` into `folder` (created if needed), all or nothing.

    A resource with a `creates` path present is skipped; one whose file is already in `folder` with the right
    checksum is not fetched again (archives are extracted from it). Raises `NetworkError` (unreachable),
    `ChecksumError` (mismatch: the file is deleted) or `UnsafeArchiveError` (a member would escape); in every case
    nothing new is left on disk.
    """
    with _rollback_new_dirs(folder):
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".sslbench-download-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for res in resources:
                present = [c for c in res.creates if (folder / c).exists()]
                if present:
                    log.info("%s: %s is present, %s not needed", dataset, folder / present[0], res.filename)
                    continue
                local = folder / res.filename
                if verify(local, res.checksum):
                    archive = local
                    log.info("%s: reusing %s (checksum ok)", dataset, local)
                else:
                    archive = staging / res.filename
                    _fetch_verified(res, archive, dataset)
                if res.extract:
                    safe_extract(archive, staging / "extracted")
            _move_into(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _fetch_verified(res: Resource, dest: Path, dataset: str) -> None:
    errors: list[str] = []
    for url in res.urls:
        log.info("%s: downloading %s", dataset, url)
        try:
            fetch(url, dest)
        except OSError as err:
            errors.append(f"{url}: {err}")
            dest.unlink(missing_ok=True)
            continue
        if not verify(dest, res.checksum):
            algo = res.checksum.partition(":")[0]
            got = file_digest(dest, algo) if dest.is_file() else "no file"
            dest.unlink(missing_ok=True)
            raise ChecksumError(
                f"{dataset}: {res.filename} downloaded from {url} fails its checksum ({algo} {got}, expected "
                f"{res.checksum}); the file was deleted. Retry later, or download it by hand and check it"
            )
        return
    raise NetworkError(f"could not download {res.filename}: " + "; ".join(errors))


def _move_into(staging: Path, folder: Path) -> None:
    """Move verified files and extracted trees from `staging` into `folder` without overwriting a folder."""
    moves: list[tuple[Path, Path]] = []
    extracted = staging / "extracted"
    for src in sorted(staging.iterdir()):
        if src != extracted:
            moves.append((src, folder / src.name))
    if extracted.is_dir():
        moves += [(src, folder / src.name) for src in sorted(extracted.iterdir())]
    for src, dst in moves:
        if dst.is_dir() and not dst.is_symlink():
            raise UserError(
                f"cannot place the downloaded {src.name!r}: {dst} already exists (an incomplete copy?); "
                "move it away and run again"
            )
    for src, dst in moves:
        os.replace(src, dst)


# ----------------------------------------------------------------------------------------------- extraction


def _parts(name: str) -> tuple[str, ...]:
    """Split an archive name on `/` and `\\`, dropping empty and `.` components."""
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def check_member(name: str, archive: Path) -> tuple[str, ...]:
    """Refuse absolute names (`/x`, `\\x`, `C:x`), `..` components and NUL; return the name's components."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: refused member with an empty or NUL name {name!r}")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: refused member with an absolute path {name!r}")
    parts = _parts(name)
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: refused member {name!r}: it contains '..'")
    if not parts:
        raise UnsafeArchiveError(f"{archive}: refused member {name!r}: it names the target folder itself")
    return parts


def check_link(name: str, target: str, archive: Path) -> None:
    """Refuse a link whose target is absolute or climbs with `..`.

    This is stricter than "points outside": a link that climbs and comes back inside is refused too. With no
    climbing links (and no member extracted through a link, see `_check_no_link_prefix`), every link resolves
    inside the folder it was created in, whatever order the members come in. Dataset archives have no such links.
    """
    if not target or target.startswith(("/", "\\")) or (len(target) > 1 and target[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: refused link {name!r} -> {target!r}: absolute target")
    if ".." in _parts(target):
        raise UnsafeArchiveError(f"{archive}: refused link {name!r} -> {target!r}: it points outside its folder")


def _check_no_link_prefix(names: list[tuple[str, ...]], links: set[tuple[str, ...]], archive: Path) -> None:
    for parts in names:
        for cut in range(1, len(parts)):
            if parts[:cut] in links:
                raise UnsafeArchiveError(
                    f"{archive}: refused member {'/'.join(parts)!r}: it would be written through the link "
                    f"{'/'.join(parts[:cut])!r}"
                )


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar (any compression) or zip archive into `target` after checking every member.

    Raises `UnsafeArchiveError` before writing anything if a member is absolute, contains `..`, is a link whose
    target is absolute or climbs with `..`, would be written through a link, or is a device/FIFO.
    """
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, target)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, target)
    else:
        raise UserError(f"{archive} is neither a tar nor a zip archive; delete it and run again")


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        names: list[tuple[str, ...]] = []
        links: set[tuple[str, ...]] = set()
        for m in members:
            parts = check_member(m.name, archive)
            names.append(parts)
            if m.issym() or m.islnk():
                check_link(m.name, m.linkname, archive)
                links.add(parts)
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: refused member {m.name!r}: not a file, folder or link")
        _check_no_link_prefix(names, links, archive)
        if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python < 3.10.12 / 3.11.4
            tar.extractall(target, members=members)
            return
        try:  # the `data` filter as a second line of defence (it also drops set-uid bits and the like)
            tar.extractall(target, members=members, filter="data")
        except tarfile.FilterError as err:
            raise UnsafeArchiveError(f"{archive}: refused by tarfile's data filter: {err}") from err


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names: list[tuple[str, ...]] = []
        links: dict[tuple[str, ...], str] = {}
        for info in infos:
            parts = check_member(info.filename, archive)
            names.append(parts)
            if _zip_is_link(info):
                link_target = zf.read(info).decode("utf-8", "replace")
                check_link(info.filename, link_target, archive)
                links[parts] = link_target
        _check_no_link_prefix(names, set(links), archive)
        for info, parts in zip(infos, names, strict=True):
            dest = target.joinpath(*parts)
            if parts in links:  # zipfile would write the link target as a file's content
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(links[parts], dest)
            elif info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)

