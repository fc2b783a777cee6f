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
