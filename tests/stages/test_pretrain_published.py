"""`pretrain@<name>` of a published encoder (`method: published`): the weights file is imported, not trained."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from sslbench.checkpoints import export_encoder, file_sha256
from sslbench.errors import UserError
from sslbench.models.encoder import Encoder, EncoderSpec, load_encoder, save_encoder
from sslbench.stages import pretrain

Compose = Callable[..., Any]
MEAN, STD = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]


@pytest.fixture
def published(tmp_path: Path) -> tuple[Encoder, Path]:
    """A ResNet-18 (CIFAR stem) in torchvision's layout, as a publisher would ship it."""
    torch.manual_seed(0)
    source = Encoder(EncoderSpec(backbone="resnet18", stem="cifar", image_size=16, mean=MEAN, std=STD)).eval()
    save_encoder(source, tmp_path / "source", {})
    out = export_encoder(tmp_path / "source" / "encoder.pt", tmp_path / "weights" / "resnet18.pth")
    assert out.format == "torchvision"
    return source, out.path


def _overrides(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["method=published", "method.name=pub", f"paths.data={data}", f"paths.models={out / 'models'}",
            f"paths.reports={out / 'reports'}", "pretrain.held_batch=16", "pretrain.progress_bar=false",
            f"method.weights.path={weights}", "method.weights.format=torchvision",
            f"method.encoder.mean={MEAN}", f"method.encoder.std={STD}", "method.encoder.image_size=16", *extra]


def test_imported_encoder_embeds_like_the_source(compose: Compose, tiny_data: Path, tmp_path: Path,
                                                  published: tuple[Encoder, Path]) -> None:
    source, weights = published
    pin = f"method.weights.sha256={file_sha256(weights)}"
    metrics = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path, weights, pin)))
    assert metrics["pretrain/steps"] == 0
    imported, _ = load_encoder(tmp_path / "models" / "pub")
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (imported(x).embedding - source(x).embedding).abs().max().item() <= 1e-6
    config = yaml.safe_load((tmp_path / "models" / "pub" / "config.yaml").read_text())
    assert config["imported"]["format"] == "torchvision" and config["imported"]["sha256"] == file_sha256(weights)
    assert config["method"]["name"] == "pub" and config["encoder"]["mean"] == MEAN
    assert (tmp_path / "reports" / "pretrain" / "pub.json").is_file()


def test_an_unpinned_or_changed_file_is_refused_with_nothing_written(
        compose: Compose, tiny_data: Path, tmp_path: Path, published: tuple[Encoder, Path]) -> None:
    _, weights = published
    with pytest.raises(UserError, match=rf"methods.pub.weights.sha256 is not set: .*`sha256: {file_sha256(weights)}`"):
        pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path, weights)))
    with pytest.raises(UserError, match="has sha256 .* but methods.pub.weights.sha256 pins 00ff: the file changed"):
        pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path, weights, "method.weights.sha256=00ff")))
    with pytest.raises(UserError, match="unknown checkpoint format 'torchvisio'; valid .*torchvision"):
        pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path, weights, "method.weights.format=torchvisio")))
    assert not (tmp_path / "models").exists() and not (tmp_path / "reports" / "pretrain" / "pub.json").exists()
