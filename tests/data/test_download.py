"""Downloads (checksums, mirrors, rollback) and archive extraction (members escaping the target are refused).

`download.fetch` is the only function that touches the network; every test here replaces it."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import urllib.error
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from sslbench.data import download
from sslbench.data.download import Resource, UnsafeArchiveError, safe_extract
from sslbench.data.real import REAL_DATASETS, RealContext
from sslbench.data.splits import open_split
from sslbench.errors import UserError
from tests.data import fixtures_real as fx


def _md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def _tar_of(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)
    return archive


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


class _Server:
    """A stand-in for the network: serves local files by URL, records the URLs asked for."""

    def __init__(self, files: Mapping[str, Path | bytes | Exception]) -> None:
        self.files = files
        self.asked: list[str] = []

    def __call__(self, url: str, dest: Path) -> None:
        self.asked.append(url)
        body = self.files.get(url, urllib.error.URLError("unreachable"))
        if isinstance(body, Exception):
            raise body
        dest.write_bytes(body if isinstance(body, bytes) else body.read_bytes())


def _ctx(tmp_path: Path, download_on: bool = True) -> RealContext:
    data = tmp_path / "data"
    return RealContext(data, data / "raw", download=download_on, image_size=32, seed=0)


@pytest.fixture
def cifar_archive(tmp_path: Path) -> tuple[Path, fx.ArrayTruth]:
    source = tmp_path / "publisher"
    truth = fx.write_cifar10(source)
    return _tar_of(source / "cifar10", tmp_path / "cifar-10-binary.tar.gz"), truth


# ----------------------------------------------------------------------------------------------- download flow


def test_download_verifies_extracts_and_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               cifar_archive: tuple[Path, fx.ArrayTruth]) -> None:
    archive, truth = cifar_archive
    url = download.RESOURCES["cifar10"][0].urls[0]
    monkeypatch.setitem(download.RESOURCES, "cifar10", (Resource((url,), archive.name, _md5(archive), True),))
    server = _Server({url: archive})
    monkeypatch.setattr(download, "fetch", server)
    ctx = _ctx(tmp_path)
    REAL_DATASETS["cifar10"](ctx)
    folder = ctx.raw_root / "cifar10"
    assert server.asked == [url]
    assert sorted(p.name for p in folder.iterdir()) == ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]
    test = open_split(ctx.data_root, "cifar10", "test")
    assert (test.images(slice(None)) == truth.test_x).all() and test.labels.tolist() == truth.test_y.tolist()
    REAL_DATASETS["cifar10"](ctx)  # located now: no second download
    assert server.asked == [url]


def test_present_archive_is_reused_not_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               cifar_archive: tuple[Path, fx.ArrayTruth]) -> None:
    archive, _ = cifar_archive
    url = download.RESOURCES["cifar10"][0].urls[0]
    monkeypatch.setitem(download.RESOURCES, "cifar10", (Resource((url,), archive.name, _md5(archive), True),))
    server = _Server({})
    monkeypatch.setattr(download, "fetch", server)
    ctx = _ctx(tmp_path)
    (ctx.raw_root / "cifar10").mkdir(parents=True)
    (ctx.raw_root / "cifar10" / archive.name).write_bytes(archive.read_bytes())
    REAL_DATASETS["cifar10"](ctx)
    assert server.asked == [] and len(open_split(ctx.data_root, "cifar10", "train")) == 10


def test_partial_copy_fetches_only_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Places365 with file lists and train images present but no val images: only val_256.tar is fetched."""
    ctx = _ctx(tmp_path)
    truth = fx.write_places365(ctx.raw_root)
    val = ctx.raw_root / "places365" / "val_256"
    archive = tmp_path / "val_256.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(val, arcname="val_256")
    for f in val.iterdir():
        f.unlink()
    val.rmdir()
    res = {r.filename: r for r in download.RESOURCES["places365"]}
    monkeypatch.setitem(download.RESOURCES, "places365", (
        res["filelist_places365-standard.tar"],
        Resource(res["val_256.tar"].urls, "val_256.tar", _md5(archive), True, res["val_256.tar"].creates),
        res["train_256_places365standard.tar"],
    ))
    server = _Server({res["val_256.tar"].urls[0]: archive})
    monkeypatch.setattr(download, "fetch", server)
    REAL_DATASETS["places365"](ctx)
    assert server.asked == [res["val_256.tar"].urls[0]]
    test = open_split(ctx.data_root, "places365", "test")
    assert [truth.identify(img)[1] for img in test.images(slice(None))] == test.labels.tolist() == [2, 0, 1, 1]


def test_checksum_mismatch_deletes_and_leaves_nothing_in_data(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url = download.RESOURCES["cifar10"][0].urls[0]
    monkeypatch.setattr(download, "fetch", _Server({url: b"not the published archive"}))
    ctx = _ctx(tmp_path)
    with pytest.raises(download.ChecksumError, match="cifar-10-binary.tar.gz .* fails its checksum .*deleted"):
        REAL_DATASETS["cifar10"](ctx)
    assert not ctx.data_root.exists(), _files_under(ctx.data_root)


def test_second_file_mismatch_rolls_back_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = download.RESOURCES["svhn"]
    good = tmp_path / "train_32x32.mat"
    good.write_bytes(b"pretend mat")
    monkeypatch.setitem(download.RESOURCES, "svhn", (Resource(train.urls, train.filename, _md5(good)), test))
    monkeypatch.setattr(download, "fetch", _Server({train.urls[0]: good, test.urls[0]: b"corrupt"}))
    ctx = _ctx(tmp_path)
    (ctx.data_root / "keep").mkdir(parents=True)  # an existing data/ is left as it was
    with pytest.raises(UserError, match="test_32x32.mat .* fails its checksum"):
        REAL_DATASETS["svhn"](ctx)
    assert _files_under(ctx.data_root) == [ctx.data_root / "keep"]


def test_unreachable_network_gives_the_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "fetch", _Server({}))
    ctx = _ctx(tmp_path)
    with pytest.raises(UserError) as info:
        REAL_DATASETS["tinyimagenet"](ctx)
    text = str(info.value)
    assert "dataset 'tinyimagenet'" in text and "download failed" in text and "unreachable" in text
    assert "train/<wnid>/images/<wnid>_<i>.JPEG" in text and "prepare.root=" in text
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in text
    assert not ctx.data_root.exists()


def test_imagenet_is_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = _Server({})
    monkeypatch.setattr(download, "fetch", server)
    with pytest.raises(UserError, match="(?s)cannot be downloaded automatically.*image-net.org"):
        REAL_DATASETS["imagenet"](_ctx(tmp_path))
    assert server.asked == []


def test_mirrors_are_tried_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publisher = tmp_path / "publisher"
    truth = fx.write_mnist(publisher)
    files = {}
    resources = []
    for res in download.RESOURCES["mnist"]:
        body = publisher / "mnist" / res.filename
        if not body.exists():  # the fixture keeps the test files unzipped; the mirrors serve them gzipped
            import gzip

            body.write_bytes(gzip.compress((publisher / "mnist" / res.filename[:-3]).read_bytes()))
            (publisher / "mnist" / res.filename[:-3]).unlink()
        resources.append(Resource(res.urls, res.filename, _md5(body)))
        files[res.urls[1]] = body  # first mirror down, second up
    monkeypatch.setitem(download.RESOURCES, "mnist", tuple(resources))
    server = _Server(files)
    monkeypatch.setattr(download, "fetch", server)
    ctx = _ctx(tmp_path)
    REAL_DATASETS["mnist"](ctx)
    assert server.asked[:2] == list(resources[0].urls)
    assert open_split(ctx.data_root, "mnist", "test").labels.tolist() == truth.test_y.tolist()


def test_malicious_archive_in_a_download_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil = tmp_path / "dtd-r1.0.1.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        _add_tar(tar, "dtd/images/ok.jpg")
        _add_tar(tar, "../../../escaped.txt")
    url = download.RESOURCES["dtd"][0].urls[0]
    monkeypatch.setitem(download.RESOURCES, "dtd", (Resource((url,), evil.name, _md5(evil), True),))
    monkeypatch.setattr(download, "fetch", _Server({url: evil}))
    ctx = _ctx(tmp_path / "study")
    with pytest.raises(UnsafeArchiveError, match="'..'"):
        REAL_DATASETS["dtd"](ctx)
    assert not ctx.data_root.exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_checksums_match_torchvision() -> None:
    """Where torchvision has the dataset, our URLs and MD5s are its own (attributes of torchvision 0.29)."""
    tv = pytest.importorskip("torchvision.datasets")
    ours = {res.filename: (res.urls, res.checksum) for rs in download.RESOURCES.values() for res in rs}

    def same(filename: str, md5: str, url: str | None = None) -> None:
        assert ours[filename][1] == f"md5:{md5}", filename
        if url is not None:
            assert url in ours[filename][0], filename

    for url, filename, md5 in (tv.SVHN.split_list["train"], tv.SVHN.split_list["test"]):
        same(filename, md5, url)
    same("stl10_binary.tar.gz", tv.STL10.tgz_md5, tv.STL10.url)
    for filename, md5 in tv.MNIST.resources:
        same(filename, md5, tv.MNIST.mirrors[0] + filename)
    same("dtd-r1.0.1.tar.gz", tv.DTD._MD5, tv.DTD._URL)
    for filename, md5 in tv.Flowers102._file_dict.values():
        same(filename, md5, tv.Flowers102._download_url_prefix + filename)
    same("SUN397.tar.gz", tv.SUN397._DATASET_MD5, tv.SUN397._DATASET_URL)
    same(*tv.Places365._DEVKIT_META["standard"])
    same(*tv.Places365._IMAGES_META[("val", True)])
    same(*tv.Places365._IMAGES_META[("train-standard", True)])


# ----------------------------------------------------------------------------------------------- extraction


def _add_tar(tar: tarfile.TarFile, name: str, *, link: str | None = None, hard: bool = False,
             data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        info.linkname = link
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _add_zip(zf: zipfile.ZipFile, name: str, *, link: str | None = None, data: bytes = b"x") -> None:
    info = zipfile.ZipInfo(name)
    if link is not None:
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, link)
    else:
        zf.writestr(info, data)


# (members as (name, link target or None, hard link?)), what the error says
EVIL: dict[str, tuple[list[tuple[str, str | None, bool]], str]] = {
    "dotdot": ([("ok.txt", None, False), ("../x", None, False)], "contains '..'"),
    "nested_dotdot": ([("a/../../x", None, False)], "contains '..'"),
    "absolute": ([("/abs", None, False)], "absolute path"),
    "symlink_out": ([("link", "../../outside", False)], "points outside"),
    "symlink_abs": ([("link", "/etc/passwd", False)], "absolute target"),
    "through_link": ([("l", "sub", False), ("l/x", None, False)], "through the link"),
    "hardlink_out": ([("hard", "../x", True)], "points outside"),
}


@pytest.mark.parametrize(
    ("kind", "case"),  # zip has no hard links
    [("tar", c) for c in sorted(EVIL)] + [("zip", c) for c in sorted(EVIL) if c != "hardlink_out"],
)
def test_escaping_members_are_refused(tmp_path: Path, kind: str, case: str) -> None:
    members, message = EVIL[case]
    archive = tmp_path / f"evil.{kind}"
    if kind == "tar":
        with tarfile.open(archive, "w") as tar:
            for name, link, hard in members:
                _add_tar(tar, name, link=link, hard=hard)
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for name, link, _ in members:
                _add_zip(zf, name, link=link)
    target = tmp_path / "deep" / "target"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, target)
    assert _files_under(target) == []  # nothing extracted, not even the harmless members
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["deep", "target", archive.name])


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_plain_archive_with_an_inside_link_extracts(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / f"good.{kind}"
    if kind == "tar":
        with tarfile.open(archive, "w:gz") as tar:
            _add_tar(tar, "root/data/a.txt", data=b"hello")
            _add_tar(tar, "root/alias.txt", link="data/a.txt")
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            _add_zip(zf, "root/data/a.txt", data=b"hello")
            _add_zip(zf, "root/alias.txt", link="data/a.txt")
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "root" / "alias.txt").is_symlink()
    assert (tmp_path / "out" / "root" / "alias.txt").read_bytes() == b"hello"


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"plain bytes")
    with pytest.raises(UserError, match="neither a tar nor a zip"):
        safe_extract(junk, tmp_path / "out")
