"""Class-balanced 1% / 10% label subsets: sizes per class, fixed by seed, nested, clear error or fallback."""

from __future__ import annotations

import numpy as np
import pytest

from sslbench.errors import UserError
from sslbench.eval.subsets import class_balanced_subset, fraction_tag


def labels_with_counts(counts: list[int]) -> np.ndarray:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(0).permutation(y)


def test_per_class_counts_and_determinism() -> None:
    y = labels_with_counts([400, 400, 200, 100])
    rows = class_balanced_subset(y, 0.1, seed=0, num_classes=4)
    assert np.bincount(y[rows], minlength=4).tolist() == [40, 40, 20, 10]
    assert np.all(np.diff(rows) > 0)  # sorted, no duplicates
    np.testing.assert_array_equal(rows, class_balanced_subset(y, 0.1, seed=0, num_classes=4))
    assert not np.array_equal(rows, class_balanced_subset(y, 0.1, seed=1, num_classes=4))


def test_subsets_are_nested_across_fractions() -> None:
    y = labels_with_counts([300] * 5)
    small = class_balanced_subset(y, 0.01, seed=3, num_classes=5)
    large = class_balanced_subset(y, 0.1, seed=3, num_classes=5)
    assert len(small) == 15 and len(large) == 150 and set(small) <= set(large)
    assert len(class_balanced_subset(y, 1.0, seed=3, num_classes=5)) == 1500


def test_empty_class_is_an_error_naming_it_unless_the_fallback_is_asked() -> None:
    y = labels_with_counts([500, 30, 500])
    with pytest.raises(UserError, match=r"1pct label subset leaves class\(es\) 'cat' \(30 training examples\) "
                                        r"without examples.*min_per_class=1"):
        class_balanced_subset(y, 0.01, seed=0, num_classes=3, class_names=["dog", "cat", "cow"])
    rows = class_balanced_subset(y, 0.01, seed=0, num_classes=3, min_per_class=1)
    assert np.bincount(y[rows]).tolist() == [5, 1, 5]
    with pytest.raises(UserError, match=r"class\(es\) '3' \(0 training examples\)"):
        class_balanced_subset(y, 0.5, seed=0, num_classes=4, min_per_class=1)  # a class absent from train
    with pytest.raises(UserError, match=r"fraction must lie in \(0, 1\]"):
        class_balanced_subset(y, 0.0, seed=0, num_classes=3)


def test_fraction_tags() -> None:
    assert [fraction_tag(f) for f in (0.01, 0.1, 0.002, 1.0)] == ["1pct", "10pct", "0.2pct", "100pct"]


def test_class_names_that_disagree_with_num_classes_are_one_line_errors() -> None:
    """A copy with a subset of the classes evaluated with the config's class count: a one-line error, not an
    IndexError (the evaluate stage counts the classes on disk, `splits.classes_on_disk`)."""
    labels = np.arange(6) % 3
    with pytest.raises(UserError, match=r"holds 3 classes but dataset.num_classes=1000"):
        class_balanced_subset(labels, 0.5, seed=0, num_classes=1000, class_names=["a", "b", "c"])
    with pytest.raises(UserError, match=r"labels outside 0..1 \(dataset.num_classes=2\)"):
        class_balanced_subset(labels, 0.5, seed=0, num_classes=2)
    assert len(class_balanced_subset(labels, 0.5, seed=0, num_classes=3, class_names=["a", "b", "c"])) == 3
