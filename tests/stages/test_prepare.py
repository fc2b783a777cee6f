from pathlib import Path

import numpy as np
import pytest

from sslbench.data.splits import open_split
from sslbench.errors import UserError
from sslbench.stages import prepare
from tests.conftest import TINY_SHAPES


def test_tiny_study_data_has_every_split(tiny_data: Path) -> None:
    expected = {
        "shapes": ["test", "train", "val"],
        "shapes_heldout": ["test", "val"],
        "noise_textures": ["test", "val"],
        "digits": ["test", "train", "val"],
    }
    for name, splits in expected.items():
        assert sorted(p.name for p in (tiny_data / "datasets" / name).iterdir()) == splits
    train = open_split(tiny_data, "shapes", "train")
    assert len(train) == 200 and train.images(slice(0, 5)).shape == (5, 32, 32, 3)
    held = open_split(tiny_data, "shapes_heldout", "test")
    assert not set(held.classes) & set(train.classes)
    digits = open_split(tiny_data, "digits", "train")
    assert digits.images(np.arange(3)).shape == (3, 32, 32, 3)


def test_unknown_dataset_fails_before_work(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = compose("prepare", [f"paths.data={tmp_path}", "prepare.extra=[shapez]", *TINY_SHAPES])
    with pytest.raises(UserError, match="unknown dataset 'shapez'; valid datasets: .*digits.*shapes"):
        prepare.run(cfg)
    assert not any(tmp_path.iterdir())


def test_prepare_writes_sample_grid(compose, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = compose(
        "prepare",
        [
            f"paths.data={tmp_path / 'data'}",
            f"paths.reports={tmp_path / 'r'}",
            *TINY_SHAPES[:-1],
            "dataset.prepare=[shapes]",
        ],
    )
    prepare.run(cfg)
    assert (tmp_path / "r" / "prepare" / "shapes_train.png").stat().st_size > 1000


def test_every_dataset_is_checked_before_anything_is_written(compose, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from sslbench.data import download
    from tests.data import fixtures_real as fx

    raw = tmp_path / "raw"
    fx.write_cifar10(raw)  # the study's own dataset is there, its OOD and transfer sets are not
    overrides = [f"paths.data={tmp_path / 'data'}", f"paths.reports={tmp_path / 'reports'}", "dataset=cifar10",
                 f"prepare.root={raw}"]
    with pytest.raises(UserError) as info:
        prepare.run(compose("prepare", overrides))
    text = str(info.value)
    assert text.startswith("8 datasets of the study are not available (cifar100, tinyimagenet, mnist, svhn, dtd, "
                           "places365, flowers102, sun397); nothing was written")
    assert text.count("Expected layout under") == 8 and "prepare.download=true" in text
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()

    # downloading on: a dataset that cannot be downloaded (ImageNet) stops the stage before any download
    def no_network(url: str, dest: Path) -> None:
        raise AssertionError(f"fetched {url}")

    monkeypatch.setattr(download, "fetch", no_network)
    with pytest.raises(UserError, match="(?s)dataset 'imagenet' .*cannot be downloaded automatically"):
        prepare.run(compose("prepare", [*overrides, "dataset=imagenet", "prepare.download=true"]))
    assert sorted(p.name for p in raw.iterdir()) == ["cifar10"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()
