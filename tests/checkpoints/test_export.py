"""Export: an sslbench encoder's backbone in torchvision's (ResNet) or timm's (ViT) layout, loadable by those
libraries as they are, and imported back with identical embeddings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from sslbench.checkpoints import export_encoder, import_encoder
from sslbench.errors import UserError
from sslbench.models.encoder import Encoder, EncoderSpec, save_encoder
from tests.checkpoints import sources as S


def _saved(tmp_path: Path, spec: EncoderSpec, name: str = "m") -> tuple[Encoder, Path]:
    torch.manual_seed(0)
    encoder = S.perturb_norms(Encoder(spec), 1)
    assert isinstance(encoder, Encoder)
    save_encoder(encoder, tmp_path / "models" / name, {"method": name})
    return encoder, tmp_path / "models" / name / "encoder.pt"


def _embed(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder(x).embedding


@pytest.mark.parametrize(("spec", "size"), [
    (EncoderSpec(backbone="resnet18", stem="cifar"), 32),
    (EncoderSpec(backbone="resnet18", stem="tinyimagenet", out_dim=1024), 64),  # DISSL "+dim", 1x1 conv
    (EncoderSpec(backbone="resnet18", stem="imagenet", out_dim=2048, out_bottleneck=128), 64),  # hub-style bottleneck
])
def test_resnet_round_trip(tmp_path: Path, spec: EncoderSpec, size: int) -> None:
    encoder, encoder_pt = _saved(tmp_path, spec)
    out = export_encoder(encoder_pt, tmp_path / "exported.pth")
    assert out.format == "torchvision" and out.spec == spec
    state = torch.load(out.path, weights_only=True)
    assert "conv1.weight" in state and not any(k.startswith(("backbone.", "fc.")) for k in state)
    x = S.images(size)
    again = import_encoder(out.path, out.format, out.spec)
    assert torch.equal(_embed(again, x), _embed(encoder, x))
    if spec.out_dim is None:  # torchvision's own ResNet takes the file as it is (stem set, fc an identity)
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool, net.fc = nn.Identity(), nn.Identity()
        net.load_state_dict(state, strict=True)
        with torch.no_grad():
            ref = net.eval()((x - encoder.mean_) / encoder.std_)
        assert torch.equal(ref, _embed(encoder, x))


def test_vit_round_trip_through_timm(tmp_path: Path) -> None:
    import timm

    spec = EncoderSpec(backbone="vit_small", image_size=32)
    encoder, encoder_pt = _saved(tmp_path, spec)
    out = export_encoder(encoder_pt.parent, tmp_path / "vit.pth")  # the model folder works too
    assert out.format == "timm"
    net = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=4)
    net.load_state_dict(torch.load(out.path, weights_only=True), strict=True)
    x = S.images(32)
    with torch.no_grad():
        ref = net.eval()((x - encoder.mean_) / encoder.std_)
    assert torch.equal(ref, _embed(encoder, x))
    assert torch.equal(_embed(import_encoder(out.path, "timm", out.spec), x), _embed(encoder, x))


def test_bayes_z_exports_its_backbone_bayes_h_and_convnet_are_refused(tmp_path: Path) -> None:
    z = EncoderSpec(backbone="resnet18", stochastic_space="z", projector_dims=[64, 16])
    encoder, encoder_pt = _saved(tmp_path, z, "bayes_z")
    out = export_encoder(encoder_pt, tmp_path / "z.pth")
    assert out.spec.stochastic_space == "none"
    x = S.images(32)
    assert torch.equal(_embed(import_encoder(out.path, "torchvision", out.spec), x), _embed(encoder, x))
    for spec, name, match in [
        (EncoderSpec(backbone="resnet18", stochastic_space="h"), "bayes_h", "Bayes-H encoder"),
        (EncoderSpec(backbone="convnet", width=8), "convnet", "'convnet' has no published layout"),
    ]:
        _, pt = _saved(tmp_path, spec, name)
        target = tmp_path / f"{name}.pth"
        with pytest.raises(UserError, match=match) as info:
            export_encoder(pt, target)
        assert "\n" not in str(info.value) and str(pt) in str(info.value)
        assert not target.exists() and not list(tmp_path.glob(f".{name}.pth.tmp*"))
