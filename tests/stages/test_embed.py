"""`embed@<method>`: every split of the study -> Parquet, streamed, atomic, with clear errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from sslbench import embedding
from sslbench.data.corruptions import write_summary
from sslbench.errors import UserError
from sslbench.io import EMBED_MANIFEST, read_embeddings, read_split, sha256_file, verify_embeddings, write_split
from sslbench.models.encoder import Encoder, EncoderSpec, load_encoder, save_encoder
from sslbench.stages import embed

# a small copy of the tiny study: (dataset, split) -> images kept
CAPS = {"shapes": {"train": 200, "val": 60, "test": 80}, "shapes_heldout": {"val": 30, "test": 30},
        "noise_textures": {"val": 30, "test": 30}, "digits": {"train": 80, "val": 40, "test": 40}}
CORRUPT_INDEX = np.array([7, 3, 50, 11])
MODELS = {"simclr": "none", "barlow_twins_bayes_h": "h", "barlow_twins_bayes_z": "z"}
EXPECTED = sorted(
    [f"{d}/{s}.parquet" for d, splits in CAPS.items() for s in splits]
    + ["shapes_c/gaussian_noise_2.parquet", "shapes_c/contrast_5.parquet"]
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # the test machine's 2 cores are shared by several processes: small tensor ops run much faster on one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overrides(root: Path, method: str, *extra: str) -> list[str]:
    return [f"paths.data={root / 'data'}", f"paths.models={root / 'models'}", f"paths.reports={root / 'reports'}",
            f"method={method}", "embed.batch_size=64", *extra]


def compose_cfg(name: str, over: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfg = compose(config_name=name, overrides=over)
    GlobalHydra.instance().clear()
    return cfg


def build_study(root: Path, tiny_data: Path) -> Path:
    """Copy a subsample of the tiny study, add two fake corrupted sets and three random-init encoders."""
    for dataset, splits in CAPS.items():
        for split, n in splits.items():
            src = read_split(tiny_data / "datasets" / dataset / split)
            write_split(root / "data" / "datasets" / dataset / split, src.images[:n], src.labels[:n], src.meta)
    test = read_split(root / "data" / "datasets" / "shapes" / "test")
    for corruption, severity in (("gaussian_noise", 2), ("contrast", 5)):
        images = (255 - test.images[CORRUPT_INDEX]).astype(np.uint8)
        write_split(root / "data" / "corrupted" / "shapes" / corruption / str(severity), images,
                    test.labels[CORRUPT_INDEX], {"index": CORRUPT_INDEX.tolist(), "classes": test.classes})
    write_family(root)
    for i, (name, space) in enumerate(MODELS.items()):
        torch.manual_seed(i)
        encoder = Encoder(EncoderSpec(stochastic_space=space, projector_dims=[32, 16]))
        save_encoder(encoder, root / "models" / name, {"method": name})
    return root


def write_family(root: Path) -> None:
    """The family meta.json with the manifest of the set files, as the `corrupt` stage writes it after its sets."""
    write_summary(root / "data" / "corrupted" / "shapes",
                  {"name": "shapes_c", "corruptions": ["gaussian_noise", "contrast"], "severities": [2, 5],
                   "index": CORRUPT_INDEX.tolist()})


@pytest.fixture(scope="session")
def embedded_study(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small study with `simclr` and `bayes_h` embedded (also imported by the probe tests)."""
    root = build_study(tmp_path_factory.mktemp("embedded"), tiny_data)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for method in ("simclr", "barlow_twins_bayes_h"):
        embed.run(compose_cfg("embed", overrides(root, method)))
    torch.set_num_threads(threads)
    return root


def test_embed_writes_every_split_with_schema_and_metadata(embedded_study: Path) -> None:
    out = embedded_study / "data" / "embeddings" / "simclr"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet")) == EXPECTED
    assert not list(out.parent.glob(".*tmp*")), "no temporary folder may remain"
    # the manifest that evaluate@<method> declares and checks: every table, by sha256
    manifest = json.loads((out / EMBED_MANIFEST).read_text())["sha256"]
    assert sorted(manifest) == EXPECTED
    assert manifest["shapes/test.parquet"] == sha256_file(out / "shapes" / "test.parquet")
    verify_embeddings(out, "simclr")
    sha = sha256_file(embedded_study / "models" / "simclr" / "encoder.pt")
    test = read_embeddings(out / "shapes" / "test.parquet", method="simclr", dataset="shapes", split="test", dim=256)
    assert test.meta["encoder_sha256"] == sha and test.meta["stochastic_space"] == "none" and test.mu is None
    images = read_split(embedded_study / "data" / "datasets" / "shapes" / "test")
    np.testing.assert_array_equal(test.index, np.arange(80))
    np.testing.assert_array_equal(test.label, images.labels)
    # the cached embedding is the eval-mode encoder's output on the unaugmented image
    encoder, _ = load_encoder(embedded_study / "models" / "simclr")
    with torch.inference_mode():
        x = torch.from_numpy(images.images[[0, 41, 79]]).permute(0, 3, 1, 2).float() / 255
        direct = encoder(x).embedding.numpy()
    np.testing.assert_allclose(test.embedding[[0, 41, 79]], direct, rtol=1e-4, atol=1e-5)


def test_corrupted_sets_are_indexed_by_source_test_image(embedded_study: Path) -> None:
    out = embedded_study / "data" / "embeddings" / "simclr"
    c = read_embeddings(out / "shapes_c" / "contrast_5.parquet", dataset="shapes_c", split="contrast_5")
    np.testing.assert_array_equal(c.index, CORRUPT_INDEX)
    clean = read_embeddings(out / "shapes" / "test.parquet")
    np.testing.assert_array_equal(c.label, clean.label[CORRUPT_INDEX])
    assert not np.allclose(c.embedding, clean.embedding[CORRUPT_INDEX])  # inverted images embed differently


def test_bayes_h_tables_carry_mu_and_logvar(embedded_study: Path) -> None:
    t = read_embeddings(embedded_study / "data" / "embeddings" / "barlow_twins_bayes_h" / "digits" / "val.parquet")
    assert t.meta["stochastic_space"] == "h" and t.mu is not None and t.logvar is not None
    np.testing.assert_array_equal(t.embedding, t.mu)  # Bayes-H: the representation is mu
    assert t.logvar.shape == (40, 256) and np.all(t.logvar <= 2 * np.log(5.0) + 1e-5)


def test_bayes_z_embeds_h_and_keeps_z_statistics(tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = build_study(tmp_path, tiny_data)
    monkeypatch.setattr(embedding, "ROW_GROUP_BYTES", 64 * 4 * (256 + 32))  # 64 rows per row group: streamed writes
    with caplog.at_level(logging.INFO, logger="sslbench.embed"):
        embed.run(compose_cfg("embed", overrides(root, "barlow_twins_bayes_z", "dataset.transfer=[]")))
    assert any("embedded 10 tables (2 corrupted)" in r.message for r in caplog.records)
    import pyarrow.parquet as pq

    path = root / "data" / "embeddings" / "barlow_twins_bayes_z" / "shapes" / "train.parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups == 4  # 200 rows in groups of 64
    t = read_embeddings(path)
    assert t.dim == 256 and t.mu is not None and t.mu.shape == (200, 16) and t.meta["stochastic_dim"] == "16"
    np.testing.assert_array_equal(t.index, np.arange(200))


def test_missing_model_or_split_fails_before_writing(tmp_path: Path, tiny_data: Path) -> None:
    root = build_study(tmp_path, tiny_data)
    with pytest.raises(UserError, match=r"models/byol/config.yaml is missing; run `dvc repro pretrain@byol`"):
        embed.run(compose_cfg("embed", overrides(root, "byol")))
    (root / "data" / "datasets" / "digits" / "val" / "meta.json").unlink()
    with pytest.raises(UserError, match=r"datasets/digits/val is missing; run `dvc repro prepare`"):
        embed.run(compose_cfg("embed", overrides(root, "simclr")))
    with pytest.raises(ConfigCompositionException, match="You must specify 'method'"):  # Hydra lists them
        compose_cfg("embed", overrides(root, "simclr")[:-2])
    assert not (root / "data" / "embeddings").exists()


def test_bad_corrupted_index_and_midway_failure_leave_nothing(tmp_path: Path, tiny_data: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_study(tmp_path, tiny_data)
    bad = root / "data" / "corrupted" / "shapes" / "contrast" / "5"
    src = read_split(bad)
    write_split(bad, src.images, src.labels, {"index": [0, 1, 2, 999]})
    # a set changed behind the family manifest (the only corrupted-set file dvc.yaml declares) is refused
    with pytest.raises(UserError, match=r"contrast/5/meta.json differs from the sha256 in the family manifest"
                                        r".*run `dvc repro corrupt`"):
        embed.run(compose_cfg("embed", overrides(root, "simclr")))
    write_family(root)
    with pytest.raises(UserError, match=r"contrast/5: .*index.*run `dvc repro corrupt`"):
        embed.run(compose_cfg("embed", overrides(root, "simclr")))
    write_split(bad, src.images, src.labels, {"index": CORRUPT_INDEX.tolist()})
    write_family(root)
    calls = []

    def failing(*args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return 0

    monkeypatch.setattr(embedding, "embed_split", failing)
    with pytest.raises(RuntimeError, match="killed"):
        embed.run(compose_cfg("embed", overrides(root, "simclr")))
    assert not (root / "data" / "embeddings" / "simclr").exists()
    assert list((root / "data" / "embeddings").iterdir()) == []


def test_float16_tables_on_request_and_a_bad_dtype_refused(tmp_path: Path, tiny_data: Path,
                                                          embedded_study: Path) -> None:
    import pyarrow.parquet as pq

    root = build_study(tmp_path, tiny_data)
    with pytest.raises(UserError, match=r"embed.dtype='float64' is not a storage type: use one of float32, float16"):
        embed.run(compose_cfg("embed", overrides(root, "simclr", "embed.dtype=float64")))
    assert not (root / "data" / "embeddings").exists()
    embed.run(compose_cfg("embed", overrides(root, "simclr", "embed.dtype=float16", "dataset.transfer=[]")))
    half = root / "data" / "embeddings" / "simclr" / "shapes" / "train.parquet"
    full = embedded_study / "data" / "embeddings" / "simclr" / "shapes" / "train.parquet"
    assert half.stat().st_size < full.stat().st_size
    assert "float16" in str(pq.read_schema(half))  # stored in half precision
    a, b = read_embeddings(half), read_embeddings(full)
    assert a.embedding.dtype == np.float32  # read back as float32
    np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-3, atol=1e-3)
