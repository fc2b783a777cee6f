"""The `corrupt` stage: generated sets (byte-identical reruns), SSIM report, small images, bad inputs, and the
located sources in their real layouts (CIFAR-10-C, ImageNet-C)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from sslbench.data import corruptions as C
from sslbench.data.splits import write_index
from sslbench.errors import UserError
from sslbench.io import read_split, sha256_file, split_dir, write_split
from sslbench.stages import corrupt


def _study(tiny_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "datasets" / "shapes", data / "datasets" / "shapes")
    return data


def _overrides(data: Path, reports: Path, *extra: str) -> list[str]:
    return [f"paths.data={data}", f"paths.reports={reports}", "corrupt.samples=false", *extra]


def test_generated_sets_are_complete_and_byte_identical(compose, tiny_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = _study(tiny_data, tmp_path)
    cfg = compose("corrupt", _overrides(data, tmp_path / "r", "corrupt.n_images=4", "corrupt.workers=2"))
    out = corrupt.run(cfg)
    assert out["sets"] == 95 and out["n_images"] == 4
    root = data / "corrupted" / "shapes"
    family = json.loads((root / "meta.json").read_text())
    assert family["corruptions"] == list(C.CORRUPTIONS) and family["severities"] == [1, 2, 3, 4, 5]
    assert "ImageNet-C corruptions" in family["name"] and "CIFAR-10-C" not in family["name"]
    test = read_split(split_dir(data, "shapes", "test"))
    index = np.asarray(family["index"])
    assert len(index) == 4 and index.tolist() == sorted(index.tolist())
    first = {}
    for c in C.CORRUPTIONS:
        for s in range(1, 6):
            split = read_split(root / c / str(s), verify=True)
            assert split.meta["index"] == index.tolist() and split.meta["corruption"] == c
            assert split.meta["severity"] == s and split.meta["seed"] == 0 and split.meta["group"] == C.GROUP_OF[c]
            assert split.images.shape == (4, 32, 32, 3) and np.array_equal(split.labels, test.labels[index])
            first[(c, s)] = (root / c / str(s) / "images.npy").read_bytes()
    assert not np.array_equal(read_split(root / "fog" / "5").images, test.images[index])
    with open(tmp_path / "r" / "corrupt" / "ssim.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 95 and {r["corruption"] for r in rows} == set(C.CORRUPTIONS)
    noise = {int(r["severity"]): float(r["ssim_mean"]) for r in rows if r["corruption"] == "gaussian_noise"}
    assert 1 > noise[1] > noise[5] > 0  # more noise, less similar
    assert (tmp_path / "r" / "corrupt" / "ssim.png").read_bytes()[:4] == b"\x89PNG"
    # a second run, in this process, of the two corruptions numpy's seed does not reach: the same bytes
    again = ["corrupt.n_images=4", "corrupt.workers=1", "corrupt.corruptions=[glass_blur,impulse_noise]"]
    corrupt.run(compose("corrupt", _overrides(data, tmp_path / "r", *again)))
    for c in ("glass_blur", "impulse_noise"):
        for s in range(1, 6):
            assert (root / c / str(s) / "images.npy").read_bytes() == first[(c, s)], (c, s)


def test_small_images_are_resized_and_said_so(compose, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    write_split(split_dir(data, "shapes", "test"), images, np.arange(5) % 2, {"classes": ["a", "b"]})
    base = _overrides(data, tmp_path / "r", "corrupt.corruptions=[glass_blur,fog]", "corrupt.severities=2",
                      "corrupt.workers=1")
    with caplog.at_level(logging.WARNING, logger="sslbench.corrupt"):
        corrupt.run(compose("corrupt", base))
    said = [r.getMessage() for r in caplog.records]
    for name in ("glass_blur", "fog"):
        assert any(name in m and "corrupt.resize=upsample" in m and "16x16" in m for m in said), said
    split = read_split(data / "corrupted" / "shapes" / "fog" / "2")
    assert split.images.shape == (5, 16, 16, 3) and split.meta["resize"]["applied"]
    shutil.rmtree(data / "corrupted")
    with pytest.raises(UserError, match="below corrupt.min_size=32"):
        corrupt.run(compose("corrupt", [*base, "corrupt.resize=error"]))
    assert not (data / "corrupted").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("corrupt.corruptions=[fog,fogg]", "unknown corruption 'fogg'; valid corruptions: gaussian_noise, shot_noise"),
        ("corrupt.severities=6", "severity 6 is not valid; severities are integers 1..5"),
        ("corrupt.severities=[0,1]", "severity 0 is not valid"),
        ("corrupt.n_images=0", "corrupt.n_images must be a positive integer or `all`"),
        ("corrupt.resize=crop", "unknown corrupt.resize 'crop'"),
        ("corrupt.workers=0", "corrupt.workers must be >= 1"),
        ("corrupt.min_size=16", "corrupt.min_size must be >= 32"),
    ],
)
def test_bad_inputs_fail_before_work(compose, tmp_path: Path, override: str, message: str) -> None:  # type: ignore[no-untyped-def]
    cfg = compose("corrupt", _overrides(tmp_path / "data", tmp_path / "r", override))
    with pytest.raises(UserError, match=message):
        corrupt.run(cfg)
    assert not tmp_path.joinpath("data").exists() and not tmp_path.joinpath("r").exists()


def test_cifar10_c_is_located_in_its_real_layout(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, raw = tmp_path / "data", tmp_path / "raw" / "CIFAR-10-C"
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 10000)
    test_images = np.zeros((10000, 32, 32, 3), np.uint8)
    test_images[:, 8:24, 8:24] = 200
    write_split(split_dir(data, "cifar10", "test"), test_images, labels, {"classes": [str(i) for i in range(10)]})
    raw.mkdir(parents=True)
    np.save(raw / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    for name in ("fog", "zoom_blur"):
        array = np.lib.format.open_memmap(raw / f"{name}.npy", mode="w+", dtype=np.uint8, shape=(50000, 32, 32, 3))
        for severity in range(1, 6):  # a sparse file; each image says where it came from
            block = slice((severity - 1) * 10000, severity * 10000)
            array[block, 0, 0, 0] = severity
            array[block, 0, 0, 1] = np.arange(10000) % 256
            array[block, 0, 0, 2] = np.arange(10000) // 256
        array.flush()
        del array
    base = _overrides(data, tmp_path / "r", "dataset=cifar10", "corrupt.corruptions=[fog,zoom_blur]",
                      "corrupt.severities=[2,5]", "corrupt.n_images=6", f"corrupt.root={raw}")
    out = corrupt.run(compose("corrupt", base))
    assert out["name"] == "CIFAR-10-C" and out["sets"] == 4
    family = json.loads((data / "corrupted" / "cifar10" / "meta.json").read_text())
    index = np.asarray(family["index"])
    for name in ("fog", "zoom_blur"):
        for severity in (2, 5):
            split = read_split(data / "corrupted" / "cifar10" / name / str(severity))
            assert (split.images[:, 0, 0, 0] == severity).all()
            rows = split.images[:, 0, 0, 1].astype(int) + 256 * split.images[:, 0, 0, 2].astype(int)
            assert rows.tolist() == index.tolist() and split.meta["index"] == index.tolist()
            assert np.array_equal(split.labels, labels[index])
    with pytest.raises(UserError, match=r"snow.npy is missing. Get CIFAR-10-C .*zenodo"):
        corrupt.run(compose("corrupt", [*base, "corrupt.corruptions=[fog,snow]"]))


def _imagenet_with_c(tmp_path: Path, n: int = 4) -> tuple[Path, Path]:
    """ImageNet validation images `val/<wnid>/ILSVRC2012_val_<k>.JPEG` (k = 1..n) prepared as the test split, and
    their ImageNet-C gaussian_noise at severities 1 and 3; returns (data folder, ImageNet-C root)."""
    from PIL import Image

    data, imagenet, inc = tmp_path / "data", tmp_path / "imagenet", tmp_path / "ImageNet-C"
    wnids = ["n01440764", "n01443537"]
    rows, rng = [], np.random.default_rng(0)
    for k in range(n):
        wnid, name = wnids[k % 2], f"ILSVRC2012_val_{k + 1:08d}.JPEG"
        path = imagenet / "val" / wnid / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
        rows.append((f"val/{wnid}/{name}", k % 2))
        for severity in (1, 3):
            target = inc / "gaussian_noise" / str(severity) / wnid / name
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(target)
    write_index(split_dir(data, "imagenet", "test"), rows, {"root": str(imagenet), "classes": wnids, "image_size": 32})
    return data, inc


def test_imagenet_c_is_located_in_its_real_layout(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, inc = _imagenet_with_c(tmp_path)
    base = _overrides(data, tmp_path / "r", "dataset=imagenet", "corrupt.corruptions=gaussian_noise",
                      "corrupt.severities=[1,3]", "corrupt.n_images=all", f"corrupt.root={inc}")
    assert corrupt.run(compose("corrupt", base))["name"] == "ImageNet-C"
    source = C.open_corrupted(data, "imagenet", "gaussian_noise", 3)
    assert source.meta["index"] == [0, 1, 2, 3] and source.labels.tolist() == [0, 1, 0, 1]
    assert source.images(np.arange(4)).shape == (4, 32, 32, 3)
    with open(source.directory / "index.csv") as fh:
        assert next(csv.DictReader(fh))["path"] == "gaussian_noise/3/n01440764/ILSVRC2012_val_00000001.JPEG"
    with open(tmp_path / "r" / "corrupt" / "ssim.csv") as fh:
        assert [r["severity"] for r in csv.DictReader(fh)] == ["1", "3"]
    with pytest.raises(UserError, match=r"ImageNet-C not found: .*gaussian_noise/1 is missing.*<wnid>"):
        corrupt.run(compose("corrupt", [*base, f"corrupt.root={tmp_path / 'nowhere'}"]))


def test_robustbench_subset_takes_its_listed_images_in_list_order(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`corrupt.subset=robustbench`: the images RobustBench evaluates ImageNet-C on, read from its list
    (`<wnid>/<file name>` per line, no final newline in the published file), the first `n_images` of it."""
    data, inc = _imagenet_with_c(tmp_path, n=6)
    listed = tmp_path / "imagenet_test_image_ids.txt"
    listed.write_text("n01443537/ILSVRC2012_val_00000006.JPEG\nn01440764/ILSVRC2012_val_00000003.JPEG\n"
                      "n01443537/ILSVRC2012_val_00000002.JPEG")
    base = _overrides(data, tmp_path / "r", "dataset=imagenet", "corrupt.corruptions=gaussian_noise",
                      "corrupt.severities=3", f"corrupt.root={inc}", "corrupt.subset=robustbench",
                      f"corrupt.subset_list={listed}")
    assert corrupt.run(compose("corrupt", [*base, "corrupt.n_images=all"]))["n_images"] == 3
    assert C.open_corrupted(data, "imagenet", "gaussian_noise", 3).meta["index"] == [1, 2, 5]
    family = json.loads((data / "corrupted" / "imagenet" / "meta.json").read_text())
    assert family["subset"] == {"name": "robustbench", "list": str(listed), "sha256": sha256_file(listed)}
    corrupt.run(compose("corrupt", [*base, "corrupt.n_images=2"]))  # the first two of the list, as RobustBench
    assert C.open_corrupted(data, "imagenet", "gaussian_noise", 3).meta["index"] == [2, 5]

    listed.write_text("n01440764/ILSVRC2012_val_00000003.JPEG\nn01440764/ILSVRC2012_val_00000099.JPEG\n")
    with pytest.raises(UserError, match=r"1 of the 2 images .*ILSVRC2012_val_00000099.JPEG.* not in the test split"):
        corrupt.run(compose("corrupt", [*base, "corrupt.n_images=all"]))
    with pytest.raises(UserError, match=r"corrupt.subset_list .*missing.*imagenet_test_image_ids.txt"):
        corrupt.run(compose("corrupt", [*base, f"corrupt.subset_list={tmp_path / 'absent.txt'}"]))


def test_robustbench_subset_needs_an_imagenet_test_split(compose, tiny_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = _study(tiny_data, tmp_path)
    listed = tmp_path / "ids.txt"
    listed.write_text("n01440764/ILSVRC2012_val_00000001.JPEG")
    cfg = compose("corrupt", _overrides(data, tmp_path / "r", "corrupt.subset=robustbench",
                                        f"corrupt.subset_list={listed}"))
    with pytest.raises(UserError, match=r"corrupt.subset=robustbench .*ImageNet validation"):
        corrupt.run(cfg)
    assert not (data / "corrupted").exists()


def test_a_failed_run_leaves_nothing(compose, tiny_data: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = _study(tiny_data, tmp_path)
    real = C.generate_corrupted

    def fails_midway(*args, **kwargs):  # type: ignore[no-untyped-def]
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise UserError("the fourth set failed")
            yield item

    monkeypatch.setattr(C, "generate_corrupted", fails_midway)
    cfg = compose("corrupt", _overrides(data, tmp_path / "r", "corrupt.n_images=2", "corrupt.workers=1"))
    with pytest.raises(UserError, match="the fourth set failed"):
        corrupt.run(cfg)
    assert not (data / "corrupted").exists()  # not even the empty folder that held the temporary sets
    assert not (tmp_path / "r").exists()


def test_an_empty_corrupt_root_follows_prepare_root(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`corrupt.root: ""` looks in `<prepare.root>/ImageNet-C` (`CIFAR-10-C`), where the presets' headers tell users
    to put them; `data/raw/...` when `prepare.root` is empty too; an explicit `corrupt.root` wins."""
    data = tmp_path / "data"
    base = [f"paths.data={data}"]
    for dataset, folder in (("imagenet", "ImageNet-C"), ("cifar10", "CIFAR-10-C")):
        assert corrupt.located_root(compose("corrupt", [*base, f"dataset={dataset}"])) == data / "raw" / folder
        cfg = compose("corrupt", [*base, f"dataset={dataset}", "prepare.root=/datasets"])
        assert corrupt.located_root(cfg) == Path("/datasets") / folder
        cfg = compose("corrupt", [*base, f"dataset={dataset}", "prepare.root=/datasets", "corrupt.root=/elsewhere"])
        assert corrupt.located_root(cfg) == Path("/elsewhere")


def test_the_prepare_section_of_the_corrupt_config_is_the_prepare_stages() -> None:
    """conf/corrupt.yaml repeats `prepare:` (read for `prepare.root`) so that params.yaml's whole section composes
    there: its keys and defaults must stay those of conf/prepare.yaml."""
    import yaml

    conf = Path(corrupt.__file__).resolve().parents[1] / "conf"
    ours = yaml.safe_load((conf / "corrupt.yaml").read_text())["prepare"]
    assert ours == yaml.safe_load((conf / "prepare.yaml").read_text())["prepare"]


def test_cifar10_c_pairs_a_partial_test_split_by_its_official_rows(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A test split that is part of the CIFAR-10 test set (its meta `index`: official rows) pairs row by row, in
    CIFAR-10-C's published layout found under `prepare.root`."""
    from tests.data.fixtures_real import write_cifar10, write_cifar10_c

    raw, data = tmp_path / "raw", tmp_path / "data"
    truth = write_cifar10(raw)
    write_cifar10_c(raw / "CIFAR-10-C", truth, ["fog"])
    official = np.arange(len(truth.test_y))[::-1].copy()  # the split's row i is official test image official[i]
    write_split(split_dir(data, "cifar10", "test"), truth.test_x[official], truth.test_y[official],
                {"classes": [str(i) for i in range(10)], "index": official.tolist()})
    out = corrupt.run(compose("corrupt", _overrides(data, tmp_path / "r", "dataset=cifar10", f"prepare.root={raw}",
                                                    "corrupt.corruptions=fog", "corrupt.severities=2",
                                                    "corrupt.n_images=all")))
    assert out["name"] == "CIFAR-10-C" and out["sets"] == 1
    split = read_split(data / "corrupted" / "cifar10" / "fog" / "2")
    assert np.array_equal(split.images, (truth.test_x[official].astype(np.int64) + 80) % 256)
    assert np.array_equal(split.labels, truth.test_y[official])
