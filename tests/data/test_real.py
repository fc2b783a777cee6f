"""Every real dataset, written in its official on-disk format by `fixtures_real`, read through its
`REAL_DATASETS` entry and back through `open_split`: sizes, labels, classes, pixels, split provenance, and the
offline error. No network: downloading is off, or `download.fetch` is replaced (see test_download.py)."""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sslbench.data import real
from sslbench.data.embedded import resize_batch
from sslbench.data.real import REAL_DATASETS, RealContext
from sslbench.data.splits import SplitSource, open_split
from sslbench.errors import UserError
from tests.data import fixtures_real as fx

ARRAY_WRITERS: dict[str, Callable[[Path], fx.ArrayTruth]] = {
    "cifar10": fx.write_cifar10,
    "cifar100": fx.write_cifar100,
    "svhn": fx.write_svhn,
    "stl10": fx.write_stl10,
    "mnist": fx.write_mnist,
}
FILE_WRITERS: dict[str, Callable[[Path], fx.FileTruth]] = {
    "tinyimagenet": fx.write_tinyimagenet,
    "imagenet": fx.write_imagenet,
    "dtd": fx.write_dtd,
    "flowers102": fx.write_flowers102,
    "sun397": fx.write_sun397,
    "places365": fx.write_places365,
}
LARGE = {"imagenet", "sun397", "places365"}


def _ctx(tmp_path: Path, size: int, seed: int = 0) -> RealContext:
    return RealContext(tmp_path / "data", tmp_path / "raw", download=False, image_size=size, seed=seed)


def _splits(ctx: RealContext, name: str) -> dict[str, SplitSource]:
    return {s: open_split(ctx.data_root, name, s) for s in ("train", "val", "test")}


def test_every_dataset_is_registered() -> None:
    assert set(real.SPECS) == set(ARRAY_WRITERS) | set(FILE_WRITERS) <= set(REAL_DATASETS)


# ----------------------------------------------------------------------------------------------- array formats


def _check_arrays(splits: dict[str, SplitSource], truth: fx.ArrayTruth, size: int) -> None:
    train_x = resize_batch(truth.train_x, size)
    test_x = resize_batch(truth.test_x, size)
    for split, source in splits.items():
        assert source.classes == truth.classes
        assert source.meta["format"] == "arrays" and source.meta["image_size"] == size
        images = source.images(slice(None))
        assert images.shape == (len(source), size, size, 3) and images.dtype == np.uint8
        index = np.asarray(source.meta["index"])
        ref_x, ref_y = (test_x, truth.test_y) if split == "test" else (train_x, truth.train_y)
        assert np.array_equal(images, ref_x[index]), split  # pixel content, row by row
        assert np.array_equal(source.labels, ref_y[index].astype(np.int64)), split
    # val is carved from the official train split, stratified; train + val cover it exactly once
    rows = np.concatenate([splits["train"].meta["index"], splits["val"].meta["index"]])
    assert sorted(rows.tolist()) == list(range(len(truth.train_y)))
    assert np.array_equal(splits["test"].meta["index"], np.arange(len(truth.test_y)))
    per_class = Counter(splits["val"].labels.tolist())
    assert set(per_class) == set(truth.train_y.tolist()) and set(per_class.values()) == {1}
    assert "carved from the official train split" in splits["val"].meta["origin"]
    assert "official test" in splits["test"].meta["origin"]


@pytest.mark.parametrize("name", sorted(ARRAY_WRITERS))
def test_array_datasets_round_trip(tmp_path: Path, name: str) -> None:
    native = {"stl10": 96, "mnist": 28}.get(name, 32)
    ctx = _ctx(tmp_path, native)
    truth = ARRAY_WRITERS[name](ctx.raw_root)
    REAL_DATASETS[name](ctx)
    _check_arrays(_splits(ctx, name), truth, native)


def test_cifar10_python_version_and_resizing(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, 16)
    truth = fx.write_cifar10(ctx.raw_root, python_version=True)
    REAL_DATASETS["cifar10"](ctx)
    splits = _splits(ctx, "cifar10")
    _check_arrays(splits, truth, 16)
    assert "restricted unpickler" in splits["train"].meta["format_read"]


def test_mnist_upsampled_to_study_resolution(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, 32)
    truth = fx.write_mnist(ctx.raw_root)
    REAL_DATASETS["mnist"](ctx)
    splits = _splits(ctx, "mnist")
    _check_arrays(splits, truth, 32)
    test = splits["test"].images(slice(None))
    assert np.array_equal(test[..., 0], test[..., 2])  # grey copied into RGB


def test_carved_val_depends_on_seed_only(tmp_path: Path) -> None:
    picks = []
    for seed, run in ((0, "a"), (0, "b"), (1, "c")):
        ctx = RealContext(tmp_path / run / "data", tmp_path / "raw", False, 32, seed)
        if not (tmp_path / "raw").exists():
            fx.write_cifar100(ctx.raw_root)
        REAL_DATASETS["cifar100"](ctx)
        picks.append(open_split(ctx.data_root, "cifar100", "val").meta["index"])
    assert picks[0] == picks[1] and picks[0] != picks[2]


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch pwned",))


def test_cifar_pickle_with_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path, 32)
    fx.write_cifar10(ctx.raw_root, python_version=True)
    batch = ctx.raw_root / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": _Boom(), "labels": []}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="refused to load the global (posix|os|nt).system"):
        REAL_DATASETS["cifar10"](ctx)
    assert not (tmp_path / "pwned").exists()
    assert not (ctx.data_root / "datasets").exists()


def test_truncated_records_fail_naming_the_file(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, 32)
    fx.write_cifar10(ctx.raw_root)
    path = ctx.raw_root / "cifar10" / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="data_batch_3.bin: size .* not a whole number"):
        REAL_DATASETS["cifar10"](ctx)
    assert not (ctx.data_root / "datasets").exists()


# ----------------------------------------------------------------------------------------------- image files


def _check_files(splits: dict[str, SplitSource], truth: fx.FileTruth, size: int, large: bool,
                 val_official: bool) -> None:
    seen: dict[str, list[tuple[int, str]]] = {}
    for split, source in splits.items():
        assert source.meta["format"] == ("index" if large else "arrays")
        images = source.images(np.arange(len(source)))
        assert images.shape == (len(source), size, size, 3)
        for image, label in zip(images, source.labels, strict=True):
            official, true_label, path = truth.identify(image)
            assert label == true_label, (split, path)
            seen.setdefault(official, []).append((true_label, path))
        if truth.classes:
            assert source.classes == truth.classes
    # each official image used exactly once, in the split it belongs to
    if val_official:  # official train / val / test lists used as they are
        for split in ("train", "val", "test"):
            assert sorted(seen[split]) == truth.official(split)
            assert f"official {split}" in splits[split].meta["origin"]
    else:  # val carved from the official train split; the official test or val split is `test`
        assert sorted(seen["train"]) == truth.official("train")
        evaluation = "test" if truth.official("test") else "val"
        assert sorted(seen[evaluation]) == truth.official(evaluation)
        assert len(splits["val"]) >= len(set(splits["val"].labels.tolist())) >= 1
        assert "carved" in splits["val"].meta["origin"]


@pytest.mark.parametrize("name", sorted(FILE_WRITERS))
def test_file_datasets_round_trip(tmp_path: Path, name: str) -> None:
    ctx = _ctx(tmp_path, 16)
    truth = FILE_WRITERS[name](ctx.raw_root)
    REAL_DATASETS[name](ctx)
    splits = _splits(ctx, name)
    _check_files(splits, truth, 16, name in LARGE, val_official=name in ("dtd", "flowers102"))
    if name in LARGE:
        assert (ctx.data_root / "datasets" / name / "train" / "index.csv").is_file()
        assert Path(splits["train"].meta["root"]).is_dir()
    else:
        assert (ctx.data_root / "datasets" / name / "train" / "images.npy").is_file()


def test_tinyimagenet_uses_official_val_as_test(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, 64)
    fx.write_tinyimagenet(ctx.raw_root)
    REAL_DATASETS["tinyimagenet"](ctx)
    test = open_split(ctx.data_root, "tinyimagenet", "test")
    assert test.meta["source_split"] == "val" and "no labels" in test.meta["origin"]
    assert test.labels.tolist() == [2, 0, 1, 0, 2, 1]  # val_annotations.txt order, sorted-wnid labels
    assert test.meta["class_names"] == ["goldfish", "tabby", "barn"]


def test_arrays_and_index_give_the_same_pixels(tmp_path: Path) -> None:
    """A small set decoded at prepare time equals what `open_split` decodes from an index of the same files."""
    from sslbench.data.real_common import decode_many
    from sslbench.data.splits import write_index

    ctx = _ctx(tmp_path, 16)
    fx.write_dtd(ctx.raw_root)
    REAL_DATASETS["dtd"](ctx)
    small = open_split(ctx.data_root, "dtd", "train")
    root = Path(small.meta["root"])
    paths = sorted(p.relative_to(root).as_posix() for p in (root / "images").rglob("*.jpg"))
    write_index(tmp_path / "ix" / "datasets" / "x" / "train", [(p, 0) for p in paths],
                {"root": str(root), "classes": ["x"], "image_size": 16})
    via_index = open_split(tmp_path / "ix", "x", "train").images(slice(None))
    assert np.array_equal(via_index, decode_many(root, paths, 16, "check"))


def test_imagenet_flat_val_is_explained(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, 16)
    fx.write_imagenet(ctx.raw_root, flat_val=True)
    with pytest.raises(UserError, match="val/<wnid>/ folders"):
        REAL_DATASETS["imagenet"](ctx)


def test_missing_listed_file_is_named(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, 16)
    fx.write_sun397(ctx.raw_root)
    victim = next((ctx.raw_root / "sun397" / "SUN397" / "c" / "canyon").glob("sun_2*.jpg"))
    victim.unlink()
    with pytest.raises(UserError, match=f"missing under .*{victim.name}"):
        REAL_DATASETS["sun397"](ctx)


# ----------------------------------------------------------------------------------------------- offline


@pytest.mark.parametrize("name", sorted(real.SPECS))
def test_offline_without_local_copy_says_what_and_how(tmp_path: Path, name: str) -> None:
    ctx = _ctx(tmp_path, 32)
    with pytest.raises(UserError) as info:
        REAL_DATASETS[name](ctx)
    text = str(info.value)
    spec = real.SPECS[name]
    assert f"dataset {name!r}" in text and "downloading is off" in text
    assert f"Expected layout under {ctx.raw_root / name}" in text
    assert "prepare.root=" in text and spec.homepage in text
    first = spec.layout.strip().splitlines()[0].format(folder=ctx.raw_root / name)
    assert first in text
    assert ("prepare.download=true" in text) == (name != "imagenet")
    assert not ctx.data_root.exists()


# ----------------------------------------------------------------------------------------------- prepare stage


def test_prepare_stage_on_fixtures(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sslbench.stages import prepare

    raw = tmp_path / "datasets_on_disk"
    cifar = fx.write_cifar10(raw)
    fx.write_svhn(raw)
    overrides = [f"paths.data={tmp_path / 'data'}", f"paths.reports={tmp_path / 'reports'}", "dataset=cifar10",
                 f"prepare.root={raw}", "prepare.sample_grid=false"]  # grids cost ~8 s, tested in stages/
    with pytest.raises(UserError, match="unknown dataset 'cifar11'; valid datasets: .*cifar10, cifar100.*sun397"):
        prepare.run(compose("prepare", [*overrides, "dataset.prepare=[cifar10,cifar11]"]))
    assert not (tmp_path / "data").exists()
    done = prepare.run(compose("prepare", [*overrides, "dataset.prepare=[cifar10,svhn]"]))
    assert done == {"cifar10": {"test": 10, "train": 10, "val": 10}, "svhn": {"test": 10, "train": 10, "val": 10}}
    test = open_split(tmp_path / "data", "cifar10", "test")
    assert np.array_equal(test.images(slice(None)), cifar.test_x)
    assert not (tmp_path / "data" / "raw").exists()  # a located root is read in place, never copied
