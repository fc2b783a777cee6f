import numpy as np
import pytest

from sslbench.data import shapes
from sslbench.data.embedded import ShapesConfig
from sslbench.errors import UserError


def test_same_seed_gives_byte_identical_arrays() -> None:
    names = list(shapes.SHAPES)[:10]
    a = shapes.generate(3, {"train": 50, "test": 20}, names, 32)
    b = shapes.generate(3, {"train": 50, "test": 20}, names, 32)
    for split in a:
        assert a[split][0].tobytes() == b[split][0].tobytes()
        assert np.array_equal(a[split][1], b[split][1])


def test_different_seed_or_split_gives_different_images() -> None:
    names = list(shapes.SHAPES)[:10]
    a = shapes.generate(0, {"train": 30, "test": 30}, names, 32)
    b = shapes.generate(1, {"train": 30}, names, 32)
    assert not np.array_equal(a["train"][0], b["train"][0])
    assert not np.array_equal(a["train"][0], a["test"][0])


def test_split_size_change_leaves_other_splits_alone() -> None:
    names = list(shapes.SHAPES)[:4]
    a = shapes.generate(0, {"train": 30, "test": 10}, names, 16)
    b = shapes.generate(0, {"train": 60, "test": 10}, names, 16)
    assert np.array_equal(a["test"][0], b["test"][0])


@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_format_and_balance(size: int) -> None:
    names = list(shapes.SHAPES)[:5]
    images, labels = shapes.generate(0, {"train": 100}, names, size)["train"]
    assert images.dtype == np.uint8 and images.shape == (100, size, size, 3)
    assert np.bincount(labels).tolist() == [20] * 5
    # the shape is drawn: images are not constant and classes differ on average
    assert images.std() > 10


def test_every_shape_covers_a_reasonable_area() -> None:
    grid = np.linspace(-1, 1, 101)
    u, v = np.meshgrid(grid, grid)
    for name, inside in shapes.SHAPES.items():
        frac = inside(u, v).mean()
        assert 0.08 < frac < 0.7, name


def test_label_is_shape_not_colour() -> None:
    # a linear classifier on mean colour must not predict the shape: colour is a nuisance
    from sklearn.linear_model import LogisticRegression

    names = list(shapes.SHAPES)[:10]
    data = shapes.generate(0, {"train": 1000, "test": 500}, names, 32)
    feats = {s: data[s][0].reshape(len(data[s][0]), -1, 3).mean(1) for s in data}
    clf = LogisticRegression(max_iter=500).fit(feats["train"], data["train"][1])
    assert clf.score(feats["test"], data["test"][1]) < 0.25


def test_shapes_config_rejects_impossible_sizes() -> None:
    with pytest.raises(UserError, match="n_classes"):
        ShapesConfig(n_classes=14, n_heldout=4)
    with pytest.raises(UserError, match="n_train"):
        ShapesConfig(n_train=0)


def test_noise_textures_deterministic() -> None:
    a = shapes.generate_noise_textures(0, {"test": 10}, 32)
    b = shapes.generate_noise_textures(0, {"test": 10}, 32)
    assert a["test"][0].tobytes() == b["test"][0].tobytes()
