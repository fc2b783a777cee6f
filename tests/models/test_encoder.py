from pathlib import Path

import pytest
import torch

from sslbench.errors import UserError
from sslbench.models.backbones import build_backbone
from sslbench.models.encoder import Encoder, EncoderSpec, load_encoder, save_encoder


@pytest.mark.parametrize(
    ("name", "stem", "dim"),
    [("convnet", "cifar", 256), ("resnet18", "cifar", 512), ("resnet18", "tinyimagenet", 512)],
)
def test_backbones_shapes(name: str, stem: str, dim: int) -> None:
    net, feature_dim = build_backbone(name, stem=stem)
    assert feature_dim == dim
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, dim)
    assert isinstance(net.last_block, torch.nn.Module)


def test_widened_representation() -> None:
    net, dim = build_backbone("convnet", out_dim=512)
    assert dim == 512 and net(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_unknown_backbone_lists_choices() -> None:
    with pytest.raises(UserError, match="valid backbones: convnet, resnet18"):
        build_backbone("resnet7")


@pytest.mark.parametrize("space", ["none", "h", "z"])
def test_save_load_round_trip(tmp_path: Path, space: str) -> None:
    enc = Encoder(EncoderSpec(stochastic_space=space, projector_dims=[32, 16])).eval()
    save_encoder(enc, tmp_path / "m", {"method": "x"})
    loaded, config = load_encoder(tmp_path / "m")
    x = torch.rand(3, 3, 32, 32)
    a, b = enc(x), loaded(x)
    assert torch.equal(a.embedding, b.embedding)
    assert config["method"] == "x" and config["encoder"]["stochastic_space"] == space


def test_load_rejects_other_backbone_and_corrupt_file(tmp_path: Path) -> None:
    save_encoder(Encoder(EncoderSpec(backbone="resnet18")), tmp_path / "m", {})
    cfg = (tmp_path / "m" / "config.yaml").read_text().replace("backbone: resnet18", "backbone: convnet")
    (tmp_path / "m" / "config.yaml").write_text(cfg)
    with pytest.raises(UserError, match="does not match the encoder"):
        load_encoder(tmp_path / "m", "simclr")
    (tmp_path / "m" / "encoder.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable.*dvc repro pretrain@simclr"):
        load_encoder(tmp_path / "m", "simclr")


def test_missing_model_names_stage(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dvc repro pretrain@byol"):
        load_encoder(tmp_path / "byol")
