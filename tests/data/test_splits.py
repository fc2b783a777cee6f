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
