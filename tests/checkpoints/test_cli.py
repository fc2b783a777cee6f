"""`python -m sslbench.checkpoints export`: one line out, or one error line and exit status 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslbench.checkpoints import import_encoder
from sslbench.checkpoints.__main__ import main
from sslbench.models.encoder import Encoder, EncoderSpec, save_encoder


def test_export_then_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    source = Encoder(EncoderSpec(backbone="resnet18", stem="cifar", image_size=16)).eval()
    save_encoder(source, tmp_path / "m", {})
    assert main(["export", str(tmp_path / "m"), str(tmp_path / "out.pth")]) == 0
    assert "format torchvision" in capsys.readouterr().out
    back = import_encoder(tmp_path / "out.pth", "torchvision", source.spec)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(back(x).embedding, source(x).embedding)


def test_missing_encoder_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "out.pth")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and not (tmp_path / "out.pth").exists()
