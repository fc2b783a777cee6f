"""Refusals: each a one-line `UserError` that names the file and the fix, with nothing run and nothing written."""

from __future__ import annotations

import argparse
import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sslbench.checkpoints import FORMATS, allowed_names, import_encoder, load_checkpoint, read_weights
from sslbench.checkpoints.formats import select_prefix, strip_prefix
from sslbench.errors import UserError
from sslbench.models.encoder import EncoderSpec
from tests.checkpoints import sources as S


class _Planted:
    """Unpickling this object creates `marker` (what an attacker's payload would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


@dataclasses.dataclass
class TrainConfig:
    """A custom class a training script might pickle beside the weights."""

    lr: float = 0.1


def _refuse(path: Path, fmt: str, match: str, **kwargs: object) -> str:
    before = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
    with pytest.raises(UserError) as info:
        import_encoder(path, fmt, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert __import__("re").search(match, message), message
    after = sorted(p.name for p in path.parent.iterdir()) if path.parent.is_dir() else []
    assert after == before  # nothing written
    return message


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("r18") / "resnet18.pth"
    torch.save(S.resnet("resnet18", seed=30, fc=True).state_dict(), path)
    return path


def test_unknown_format_lists_the_valid_ones(r18_file: Path) -> None:
    with pytest.raises(UserError) as info:
        import_encoder(r18_file, "dinov2")
    message = str(info.value)
    assert "unknown checkpoint format 'dinov2'" in message and "\n" not in message
    assert all(name in message for name in FORMATS)


def test_unknown_branch(r18_file: Path) -> None:
    with pytest.raises(UserError, match="format 'torchvision' has no branch 'student'; valid branches: backbone"):
        import_encoder(r18_file, "torchvision", branch="student")


def test_file_of_another_backbone(r18_file: Path) -> None:
    message = _refuse(r18_file, "torchvision", r"does not fit the encoder \(backbone=resnet50",
                      spec=EncoderSpec(backbone="resnet50", stem="imagenet"))
    assert "165 missing keys (" in message and "shape mismatches (layer1.0.conv1.weight (64, 64, 3, 3)" in message
    assert "the file holds a resnet18 with a 7x7 (ImageNet) stem" in message
    g = torch.Generator().manual_seed(0)
    deeper = {f"layer{i}.{j}.conv1.weight": torch.randn(2, 2, 3, 3, generator=g) for i, n in
              zip(range(1, 5), (3, 4, 6, 3), strict=True) for j in range(n)}
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), **deeper}, r18_file.parent / "resnet34.pth")
    _refuse(r18_file.parent / "resnet34.pth", "torchvision", "holds ResNet-34; sslbench rebuilds resnet18 and "
            "resnet50 only")


def test_container_of_another_format_gets_a_hint(tmp_path: Path) -> None:
    net = S.resnet("resnet18", seed=31)
    torch.save(S.lightning_container(S.with_prefix(net.state_dict(), "backbone."), net), tmp_path / "x.ckpt")
    _refuse(tmp_path / "x.ckpt", "dino", r"not a flat state_dict .*looks like a `solo_learn` file")
    _refuse(tmp_path / "x.ckpt", "moco", r"has no `module.encoder_q.` keys|has no 'state_dict'|encoder_q")


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_pickled_payload_is_refused_without_running(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    state = {"conv1.weight": torch.zeros(1), "payload": _Planted(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    message = _refuse(path, "torchvision", r"pickles `.*`, which is not on sslbench's allow-list")
    assert "nothing in it ran" in message and "torch.save" in message
    assert not marker.exists()


def test_a_custom_class_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}, "config": TrainConfig()}, path)
    _refuse(path, "solo_learn", r"pickles `tests\.checkpoints\.test_safety\.TrainConfig`.*weights_only=False")


def test_allowed_harmless_types_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.pth"
    obj = {"args": argparse.Namespace(lr=0.1), "lr": np.float64(0.5), "n": np.int64(3), "a": np.arange(3.0),
           "d": np.dtype("float32"), "w": torch.ones(2)}
    torch.save(obj, path)
    loaded = load_checkpoint(path)
    assert loaded["args"].lr == 0.1 and loaded["lr"] == 0.5 and loaded["a"].tolist() == [0.0, 1.0, 2.0]
    names = allowed_names()
    assert "argparse.Namespace" in names and "mmengine.logging.history_buffer.HistoryBuffer" in names
    assert not any(n.startswith(("os.", "posix.", "subprocess.", "builtins.eval", "builtins.exec")) for n in names)


def test_missing_folder_and_empty_files(tmp_path: Path) -> None:
    _refuse(tmp_path / "nope.pth", "dino", "does not exist; check the path")
    (tmp_path / "folder").mkdir()
    _refuse(tmp_path / "folder", "dino", "is a folder")
    (tmp_path / "empty.pth").write_bytes(b"")
    _refuse(tmp_path / "empty.pth", "dino", "is empty; download it again")


def test_truncated_files(tmp_path: Path, r18_file: Path) -> None:
    data = r18_file.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _refuse(tmp_path / "cut.pth", "torchvision", "truncated")
    legacy = tmp_path / "legacy.pth"
    torch.save(torch.load(r18_file, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    legacy.write_bytes(data[: len(data) // 2])
    _refuse(legacy, "torchvision", "truncated or corrupt.*download it again")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("weights: see the README\n")
    _refuse(tmp_path / "notes.txt", "torchvision", "is not a PyTorch checkpoint")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    _refuse(tmp_path / "arrays.npz", "torchvision", "zip archive but not a torch.save file")
    with zipfile.ZipFile(tmp_path / "bundle.zip", "w") as z:
        z.writestr("readme.txt", "hi")
    _refuse(tmp_path / "bundle.zip", "torchvision", "zip archive but not a torch.save file")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    _refuse(tmp_path / "list.pth", "torchvision", "the file is a list, not a state_dict")


def test_prefixes_are_stripped_only_at_the_start() -> None:
    assert strip_prefix("momentum_backbone.conv1.weight", "backbone.") is None
    assert strip_prefix("backbone.backbone.x", "backbone.") == "backbone.x"
    dropped: dict[str, int] = {}
    state = {"backbone.conv1.weight": torch.zeros(1), "momentum_backbone.conv1.weight": torch.ones(1),
             "head.backbone.w": torch.ones(1)}
    kept = select_prefix(state, "backbone.", dropped)
    assert list(kept) == ["conv1.weight"] and float(kept["conv1.weight"]) == 0.0
    assert dropped == {"momentum_backbone": 1, "head": 1}


def test_read_weights_records_provenance(r18_file: Path) -> None:
    from sslbench.checkpoints import file_sha256

    weights = read_weights(r18_file, "torchvision")
    assert weights.sha256 == file_sha256(r18_file) and len(weights.sha256) == 64
    with pytest.raises(UserError, match="does not exist"):
        file_sha256(r18_file.parent / "missing.pth")
