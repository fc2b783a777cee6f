from pathlib import Path

import numpy as np
import pytest

from sslbench import io
from sslbench.errors import UserError
from sslbench.io import (
    EmbeddingWriter,
    atomic_path,
    read_embeddings,
    read_split,
    write_metrics,
    write_split,
)


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_directory(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "old").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new"]


def test_split_round_trip_and_checksum(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (7, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(7)
    write_split(tmp_path / "s", images, labels, {"classes": [str(i) for i in range(7)]})
    split = read_split(tmp_path / "s", verify=True)
    assert np.array_equal(split.images, images) and np.array_equal(split.labels, labels)
    images[0, 0, 0, 0] ^= 1
    np.save(tmp_path / "s" / "images.npy", images)
    with pytest.raises(UserError, match="sha256"):
        read_split(tmp_path / "s", verify=True)


def test_missing_split_names_rebuild(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dvc repro prepare"):
        read_split(tmp_path / "nope")


def test_metrics_keys_must_be_grouped(tmp_path: Path) -> None:
    write_metrics(tmp_path / "m.json", {"linear/top1": np.float32(0.5), "x/nan": float("nan")})
    assert '"linear/top1": 0.5' in (tmp_path / "m.json").read_text()
    with pytest.raises(ValueError):
        write_metrics(tmp_path / "n.json", {"top1": 1.0})


def _write(path: Path, n: int = 10, dim: int = 4, stochastic: bool = False) -> None:
    rng = np.random.default_rng(0)
    kw = {"stochastic_space": "h", "stochastic_dim": 3} if stochastic else {}
    with EmbeddingWriter(path, method="simclr", dataset="shapes", split="train", dim=dim, **kw) as w:  # type: ignore[arg-type]
        for start in range(0, n, 4):
            m = min(4, n - start)
            extra = {"mu": rng.normal(size=(m, 3)), "logvar": rng.normal(size=(m, 3))} if stochastic else {}
            w.write(np.arange(start, start + m), np.zeros(m), rng.normal(size=(m, dim)), **extra)


def test_embeddings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "simclr" / "shapes" / "train.parquet"
    _write(path, stochastic=True)
    emb = read_embeddings(path, method="simclr", dataset="shapes", split="train", dim=4)
    assert emb.embedding.shape == (10, 4) and emb.embedding.dtype == np.float32
    assert emb.mu is not None and emb.mu.shape == (10, 3)
    assert emb.index.tolist() == list(range(10))


def test_embeddings_mismatch_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "simclr" / "shapes" / "train.parquet"
    _write(path)
    with pytest.raises(UserError, match="method='simclr' but 'byol'"):
        read_embeddings(path, method="byol")
    with pytest.raises(UserError, match="dim"):
        read_embeddings(path, dim=8)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt.*dvc repro embed@simclr"):
        read_embeddings(path)


def test_embedding_writer_failure_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    with pytest.raises(ValueError), EmbeddingWriter(path, method="m", dataset="d", split="s", dim=4) as w:
        w.write(np.arange(2), np.zeros(2), np.zeros((2, 5)))  # wrong width
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_embedding_manifest_pins_every_table(tmp_path: Path) -> None:
    method_dir = tmp_path / "simclr"
    _write(method_dir / "shapes" / "train.parquet")
    _write(method_dir / "shapes_c" / "noise_1.parquet")
    listed = io.write_embedding_manifest(method_dir)
    assert sorted(listed) == ["shapes/train.parquet", "shapes_c/noise_1.parquet"]
    io.verify_embeddings(method_dir, "simclr")
    table = method_dir / "shapes" / "train.parquet"
    original = table.read_bytes()
    _write(table, n=11)  # rewritten behind the manifest's back
    with pytest.raises(UserError, match=r"train.parquet changed .*dvc repro embed@simclr"):
        io.verify_embeddings(method_dir, "simclr")
    table.write_bytes(original)
    _write(method_dir / "shapes" / "val.parquet")
    with pytest.raises(UserError, match="val.parquet is not in the manifest"):
        io.verify_embeddings(method_dir, "simclr")
    (method_dir / "shapes" / "val.parquet").unlink()
    (method_dir / "shapes_c" / "noise_1.parquet").unlink()
    with pytest.raises(UserError, match="noise_1.parquet is missing"):
        io.verify_embeddings(method_dir, "simclr")
    (method_dir / io.EMBED_MANIFEST).unlink()
    with pytest.raises(UserError, match=r"manifest.json is missing; run `dvc repro embed@simclr`"):
        io.verify_embeddings(method_dir, "simclr")
