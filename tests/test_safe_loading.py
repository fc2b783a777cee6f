"""Safe loading everywhere (docs/reliability.md): nothing a user did not produce is unpickled, YAML is loaded
safely, archives are extracted only through the checked extractor. A static scan of the package plus the two places
that read torch files (`encoder.pt`, `last.ckpt`), fed a file whose unpickling would run code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sslbench.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src" / "sslbench"


class _Planted:
    """Unpickling this object creates `marker` (what an attacker's payload would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_package_uses_only_safe_loaders() -> None:
    sources = {p.relative_to(SRC): p.read_text() for p in SRC.rglob("*.py")}
    assert len(sources) > 30
    for path, code in sources.items():
        for call in re.findall(r"torch\.load\((?:[^()]|\([^()]*\))*\)", code):
            assert "weights_only=True" in call, f"{path}: {call}"
        for call in re.findall(r"np\.load\((?:[^()]|\([^()]*\))*\)", code):
            assert "allow_pickle=False" in call, f"{path}: {call}"
        assert not re.search(r"yaml\.(load|unsafe_load|full_load|load_all)\(", code), path
        assert not re.search(r"pickle\.loads?\(|\bjoblib\b|\bdill\b|read_pickle|torch\.jit\.load", code), path
        if "extractall(" in code:  # only behind the member checks of safe_extract
            assert path == Path("data/download.py"), path


def test_planted_encoder_is_refused_without_running_it(tmp_path: Path) -> None:
    from sslbench.models.encoder import Encoder, EncoderSpec, load_encoder, save_encoder

    model_dir = tmp_path / "models" / "simclr"
    save_encoder(Encoder(EncoderSpec(backbone="convnet", width=8)), model_dir, {})
    marker = tmp_path / "pwned"
    torch.save({"backbone.weight": _Planted(marker)}, model_dir / "encoder.pt")
    with pytest.raises(UserError, match=r"encoder.pt is unreadable as plain weights \(UnpicklingError\).*pretrain"):
        load_encoder(model_dir, "simclr")
    assert not marker.exists()


def test_planted_checkpoint_is_refused_without_running_it(tmp_path: Path) -> None:
    from sslbench.training.checkpoint import resume_state as _resume_state

    marker, ckpt = tmp_path / "pwned", tmp_path / "last.ckpt"
    torch.save({"global_step": 3, "sslbench_config": {}, "loops": _Planted(marker)}, ckpt)
    with pytest.raises(UserError, match=r"last.ckpt is unreadable as a plain checkpoint.*delete it to start"):
        _resume_state(ckpt, {}, "simclr")
    assert not marker.exists()
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UserError, match="truncated or not written by this stage"):
        _resume_state(ckpt, {}, "simclr")
    torch.save([1, 2], ckpt)
    with pytest.raises(UserError, match="not a checkpoint of this stage"):
        _resume_state(ckpt, {}, "simclr")
    torch.save({"global_step": 5, "sslbench_config": {"a": 1}}, ckpt)
    assert _resume_state(ckpt, {"a": 1}, "simclr") == {"global_step": 5}
