"""Builders of the embedded datasets: generated (`shapes`, `shapes_heldout`, `noise_textures`) or shipped with an
installed package (`digits`, scikit-learn's bundled handwritten digits). No network is ever needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslbench.data import shapes
from sslbench.errors import UserError
from sslbench.io import split_dir, write_split


@dataclass(frozen=True)
class ShapesConfig:
    """Sizes of the generated `shapes` family.

    n_classes: in-distribution shape classes (the first `n_classes` of `shapes.SHAPES`).
    n_heldout: the next shape classes, never trained on: the near-OOD set `shapes_heldout`.
    n_train/n_val/n_test: images per split of `shapes`; n_ood: images per split (val, test) of the OOD sets.
    """

    n_classes: int = 10
    n_heldout: int = 4
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 1000
    n_ood: int = 500

    def __post_init__(self) -> None:
        total = len(shapes.SHAPES)
        if self.n_classes < 2 or self.n_heldout < 0 or self.n_classes + self.n_heldout > total:
            raise UserError(
                f"prepare.shapes: need n_classes >= 2 and n_classes + n_heldout <= {total} "
                f"(got {self.n_classes} + {self.n_heldout})"
            )
        for key in ("n_train", "n_val", "n_test", "n_ood"):
            if getattr(self, key) < 1:
                raise UserError(f"prepare.shapes.{key} must be >= 1, got {getattr(self, key)}")


def build_shapes(data_root: Path, seed: int, image_size: int, cfg: ShapesConfig) -> None:
    names = list(shapes.SHAPES)[: cfg.n_classes]
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    for split, (images, labels) in shapes.generate(seed, sizes, names, image_size).items():
        meta = {"dataset": "shapes", "split": split, "classes": names, "source": "generated", "seed": seed}
        write_split(split_dir(data_root, "shapes", split), images, labels, meta)


def build_shapes_heldout(data_root: Path, seed: int, image_size: int, cfg: ShapesConfig) -> None:
    names = list(shapes.SHAPES)[cfg.n_classes : cfg.n_classes + cfg.n_heldout]
    if not names:
        raise UserError("shapes_heldout needs prepare.shapes.n_heldout >= 1")
    sizes = {"val": cfg.n_ood, "test": cfg.n_ood}
    for split, (images, labels) in shapes.generate(seed + 1, sizes, names, image_size).items():
        meta = {"dataset": "shapes_heldout", "split": split, "classes": names, "source": "generated", "seed": seed}
        write_split(split_dir(data_root, "shapes_heldout", split), images, labels, meta)


def build_noise_textures(data_root: Path, seed: int, image_size: int, cfg: ShapesConfig) -> None:
    sizes = {"val": cfg.n_ood, "test": cfg.n_ood}
    for split, (images, labels) in shapes.generate_noise_textures(seed, sizes, image_size).items():
        meta = {"dataset": "noise_textures", "split": split, "classes": ["texture"], "source": "generated",
                "seed": seed}
        write_split(split_dir(data_root, "noise_textures", split), images, labels, meta)


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 (N, h, w, C) to (N, size, size, C) with PIL."""
    from PIL import Image

    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = [np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)) for img in images]
    return np.stack(out)


def build_digits(data_root: Path, seed: int, image_size: int, cfg: ShapesConfig) -> None:
    """scikit-learn's 1797 8x8 digits (0-16 grey levels) -> RGB uint8 at `image_size`; stratified 60/20/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    grey = np.round(bunch.images / 16.0 * 255).astype(np.uint8)
    images = resize_batch(np.repeat(grey[..., None], 3, axis=-1), image_size)
    labels = bunch.target.astype(np.int64)
    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, test_size=0.4, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    classes = [str(c) for c in range(10)]
    for split, sel in (("train", train), ("val", val), ("test", test)):
        sel = np.sort(sel)
        meta = {"dataset": "digits", "split": split, "classes": classes, "source": "sklearn.datasets.load_digits",
                "seed": seed, "index": sel.tolist()}
        write_split(split_dir(data_root, "digits", split), images[sel], labels[sel], meta)


EMBEDDED = {
    "shapes": build_shapes,
    "shapes_heldout": build_shapes_heldout,
    "noise_textures": build_noise_textures,
    "digits": build_digits,
}
