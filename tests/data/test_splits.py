"""Dataset splits are checked against the sha256 their meta.json records: once per process, again when a file
changes, and by the stages that read them as commands (pretrain, embed)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sslbench.data import splits
from sslbench.data.splits import open_split, sha256_rows
from sslbench.errors import UserError
from sslbench.io import sha256_array

Compose = Callable[..., Any]


def _copy(tiny_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_data / "datasets", data / "datasets")
    return data


def _damage(path: Path) -> None:
    """Flip the last byte: the same size, another content (what a disk error or a stray write leaves)."""
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_row_chunks_hash_like_the_whole_array() -> None:
    array = np.random.default_rng(0).integers(0, 255, (37, 4, 4, 3), dtype=np.uint8)
    assert sha256_rows(array, chunk_bytes=100) == sha256_rows(array) == sha256_array(array)
    assert sha256_rows(array[:0]) == sha256_array(array[:0])


def test_checked_once_per_process_and_again_after_a_change(tiny_data: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    data = _copy(tiny_data, tmp_path)
    calls: list[int] = []
    monkeypatch.setattr(splits, "sha256_rows", lambda a, *k: calls.append(len(a)) or sha256_rows(a, *k))
    for _ in range(3):
        assert len(open_split(data, "shapes", "train")) == 200
    assert calls == [200, 200]  # images and labels, the first time only
    images = data / "datasets" / "shapes" / "train" / "images.npy"
    os.utime(images, ns=(1, 1))  # another file state (here the same bytes): checked again, and passes
    open_split(data, "shapes", "train")
    assert len(calls) == 4
    _damage(images)
    with pytest.raises(UserError, match=r"dataset split .*shapes/train fails its sha256 check: .*images\.npy is not "
                                        r"the file `meta\.json` records .*run `dvc repro prepare`"):
        open_split(data, "shapes", "train")


def test_pretrain_and_embed_refuse_a_damaged_split(compose: Compose, tiny_data: Path, tmp_path: Path) -> None:
    from sslbench.stages import embed, pretrain

    data = _copy(tiny_data, tmp_path)
    models, reports = tmp_path / "models", tmp_path / "reports"
    paths = [f"paths.data={data}", f"paths.models={models}", f"paths.reports={reports}"]
    pretrain.run(compose("pretrain", ["method=random_init", *paths, "pretrain.held_batch=16",
                                      "dataset.image_size=16"]))
    _damage(data / "datasets" / "shapes" / "train" / "labels.npy")  # a label changed, the file the same size
    with pytest.raises(UserError, match=r"shapes/train fails its sha256 check: .*labels\.npy"):
        embed.run(compose("embed", ["method=random_init", *paths, "embed.device=cpu"]))
    assert not (data / "embeddings").exists()
    with pytest.raises(UserError, match=r"shapes/train fails its sha256 check: .*labels\.npy"):
        pretrain.run(compose("pretrain", ["method=simclr", *paths, "pretrain.epochs=1", "pretrain.batch_size=64"]))
    assert not (models / "simclr").exists() and not (reports / "pretrain" / "live" / "simclr").exists()


def test_center_crop_view_is_imagenet_cs_resize_256_centre_crop_224(tmp_path: Path) -> None:
    """The ImageNet splits' view equals torchvision's Resize(256) + CenterCrop(224) (the pipeline that produced
    ImageNet-C), for landscape and portrait images; an index split with `view: center_crop` decodes with it."""
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(0)
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    for w, h in ((500, 375), (333, 500), (60, 40)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert np.array_equal(splits.center_crop_view(img, 224), np.asarray(reference(img)))
        assert splits.center_crop_view(img, 112).shape == (112, 112, 3)
    img = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    img.save(tmp_path / "a.png")
    for view, want in (("center_crop", splits.center_crop_view(img, 64)),
                       ("squash", np.asarray(img.resize((64, 64), Image.Resampling.BILINEAR)))):
        splits.write_index(tmp_path / "data" / "datasets" / view / "test", [("a.png", 0)],
                           {"root": str(tmp_path), "classes": ["x"], "image_size": 64, "view": view})
        assert np.array_equal(open_split(tmp_path / "data", view, "test").images(slice(None))[0], want)


def test_classes_on_disk_sets_num_classes_to_the_prepared_classes(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from sslbench.errors import UserError
    from sslbench.io import split_dir, write_split

    cfg = OmegaConf.create({"paths": {"data": str(tmp_path)},
                            "dataset": {"name": "imagenet", "train": "train", "num_classes": 1000}})
    OmegaConf.set_struct(cfg, True)
    assert splits.classes_on_disk(cfg) == 1000  # not prepared yet: the config as it is
    write_split(split_dir(tmp_path, "imagenet", "train"), np.zeros((3, 4, 4, 3), np.uint8), np.arange(3),
                {"classes": ["n01", "n02", "n03"]})
    assert splits.classes_on_disk(cfg) == 3 and cfg.dataset.num_classes == 3
    cfg.dataset.num_classes = 2
    with pytest.raises(UserError, match=r"holds 3 classes but dataset.num_classes=2 .*remove the extra classes"):
        splits.classes_on_disk(cfg)
