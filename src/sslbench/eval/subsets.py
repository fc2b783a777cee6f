"""Class-balanced label subsets for semi-supervised evaluation (1% / 10%, as in SimCLR and stochastic SSL).

A `fraction` subset keeps, in every class c with n_c training examples, k_c = round(fraction * n_c) of them
(round half up), drawn uniformly without replacement. Every class keeps the same fraction of its examples, so the
subset has the train set's class balance (exactly balanced when the train set is, as for `shapes`, CIFAR-10 and
nearly for ImageNet), like the SimCLR / stochastic-SSL 1% and 10% ImageNet subsets.

Fixed by seed and nested: each class's examples are put in one random order drawn from (seed, class) only, and a
subset takes the first k_c of them, so the same seed gives the same subset for every method, and the 1% subset is
contained in the 10% one.

A class left without examples (k_c = 0) is an error naming the class, unless `min_per_class` >= 1 is given: the
documented fallback then keeps max(k_c, min_per_class) examples (capped at n_c) of every class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sslbench.errors import UserError


def fraction_tag(fraction: float) -> str:
    """The metric-key tag of a fraction: 0.01 -> `1pct`, 0.1 -> `10pct`, 0.002 -> `0.2pct`."""
    return f"{round(100 * fraction, 6):g}pct"


def class_balanced_subset(
    labels: np.ndarray,
    fraction: float,
    *,
    seed: int,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    min_per_class: int = 0,
) -> np.ndarray:
    """Row indices (sorted, int64) of a class-balanced `fraction` subset of `labels`.

    Args:
        labels: (N,) integer class labels in [0, num_classes).
        fraction: in (0, 1].
        seed: fixes the per-class random order (the same for every fraction).
        num_classes: every class in [0, num_classes) must get at least one example.
        class_names: names used in error messages (default: the class numbers).
        min_per_class: fallback floor per class; 0 = raise when a class would get no example.
    Raises:
        UserError: a class gets no example (naming the class, its count and the fix) or a bad fraction.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"a label-subset fraction must lie in (0, 1], got {fraction}")
    if min_per_class < 0:
        raise UserError(f"min_per_class must be >= 0, got {min_per_class}")
    if class_names is not None and len(class_names) != num_classes:
        raise UserError(
            f"the train split holds {len(class_names)} classes but dataset.num_classes={num_classes}; evaluate "
            "through `sslbench.stages.evaluate`, which counts the classes on disk (splits.classes_on_disk)"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"labels outside 0..{num_classes - 1} (dataset.num_classes={num_classes}); run `dvc repro "
                        "prepare` and embed again")
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    picked: list[np.ndarray] = []
    empty: list[str] = []
    for c in range(num_classes):
        rows = np.flatnonzero(labels == c)
        k = int(np.floor(fraction * len(rows) + 0.5))
        k = min(len(rows), max(k, min_per_class))
        if k == 0:
            empty.append(f"{names[c]!r} ({len(rows)} training examples)")
            continue
        order = np.random.default_rng([seed, 104729, c]).permutation(len(rows))
        picked.append(rows[order[:k]])
    if empty:
        raise UserError(
            f"a {fraction_tag(fraction)} label subset leaves class(es) {', '.join(empty)} without examples; "
            "use a larger fraction, a larger train set, or the fallback probe.semisup.min_per_class=1"
        )
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)
