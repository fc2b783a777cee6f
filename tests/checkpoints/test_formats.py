"""Every format: a small random network in the publisher's own layout and container, saved with torch.save,
imported, and embedding exactly like the original (max |difference| <= 1e-6; float64 for the ViT)."""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sslbench.checkpoints import FORMATS, IMAGENET_MEAN, build_encoder, import_encoder, read_weights
from sslbench.errors import UserError
from sslbench.models.encoder import Encoder, EncoderSpec
from tests.checkpoints import sources as S

TOL = 1e-6


def embed(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder(x).embedding


def assert_same(encoder: Encoder, reference: torch.Tensor, x: torch.Tensor) -> float:
    got = embed(encoder, x)
    assert got.shape == reference.shape
    diff = float((got.double() - reference.double()).abs().max())
    assert diff <= TOL, diff
    return diff


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    return S.resnet("resnet18", seed=1)


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return S.images(64)


def test_every_format_has_a_test() -> None:
    tested = {"torchvision", "timm", "dissl", "dino", "barlow_twins", "vicreg", "swav", "moco", "mmselfsup",
              "solo_learn", "lightly", "vissl"}
    assert set(FORMATS) == tested


def test_torchvision_flat_with_classifier(tmp_path: Path, x64: torch.Tensor) -> None:
    net = S.resnet("resnet18", seed=2, fc=True)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    weights = read_weights(path, "torchvision")
    assert weights.dropped == {"fc": 2} and weights.arch is not None and weights.arch.backbone == "resnet18"
    encoder = import_encoder(path, "torchvision")
    assert encoder.spec.stem == "imagenet" and encoder.spec.mean == IMAGENET_MEAN
    assert_same(encoder, S.pooled(net, x64), x64)
    # a half-precision release without BatchNorm counters: loaded as float32, counters filled
    half = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}
    torch.save(half, tmp_path / "half.pth")
    net.load_state_dict({k: v.float() for k, v in half.items()}, strict=False)
    encoder = import_encoder(tmp_path / "half.pth", "torchvision")
    assert next(encoder.parameters()).dtype == torch.float32
    assert_same(encoder, S.pooled(net, x64), x64)


def test_timm_resnet_and_vit(tmp_path: Path, x64: torch.Tensor) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    net = S.perturb_norms(timm.create_model("resnet18", pretrained=False, num_classes=10), 4)
    torch.save(net.state_dict(), tmp_path / "timm_resnet18.pth")
    with torch.no_grad():
        ref = net.forward_head(net.forward_features(S.normalised(x64)), pre_logits=True)
    assert_same(import_encoder(tmp_path / "timm_resnet18.pth", "timm"), ref, x64)

    vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=10, img_size=128).eval()
    save_file(vit.state_dict(), str(tmp_path / "model.safetensors"))  # the hub's format
    x = S.images(128)
    with torch.no_grad():
        ref = vit.forward_head(vit.forward_features(S.normalised(x)), pre_logits=True)
    weights = read_weights(tmp_path / "model.safetensors", "timm")
    assert weights.dropped == {"head": 2}
    encoder = build_encoder(weights)
    assert (encoder.spec.backbone, encoder.spec.image_size) == ("vit_small", 128)
    assert_same(encoder, ref, x)


def test_dissl_resnet50_d8192(tmp_path: Path) -> None:
    net = S.dissl_resnet50_d8192(seed=5)
    path = tmp_path / "dissl_resnet50_d8192_e400_m6.pt"
    torch.save(net.state_dict(), path)  # the hub file: flat, fc is an Identity (no keys)
    state = torch.load(path, weights_only=True)
    assert len(state) == 320 - 2 + 18 and "fc.weight" not in state
    encoder = import_encoder(path, "dissl")
    assert (encoder.spec.out_dim, encoder.spec.out_bottleneck, encoder.embedding_dim) == (8192, 512, 8192)
    x = S.images(32)
    assert_same(encoder, S.pooled(net, x), x)


def test_dino_full_checkpoint_resnet_teacher_and_student(tmp_path: Path, r18: nn.Module, x64: torch.Tensor) -> None:
    student = S.resnet("resnet18", seed=6)
    teacher = r18
    ckpt = {  # main_dino.py: the ResNet teacher has BatchNorm, hence is DDP-wrapped like the student
        "student": S.with_prefix({**S.with_prefix(student.state_dict(), "backbone."), **S.head_state(7, 512, "head.")},
                                 "module."),
        "teacher": S.with_prefix({**S.with_prefix(teacher.state_dict(), "backbone."), **S.head_state(8, 512, "head.")},
                                 "module."),
        "optimizer": S.optimizer_state(student), "epoch": 100, "args": S.dino_args(),
        "dino_loss": {"center": torch.randn(1, 64)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                        "_growth_tracker": 0},
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)
    weights = read_weights(path, "dino")
    assert weights.branch == "teacher" and weights.dropped == {"head": 8, "student": len(ckpt["student"])}
    assert_same(build_encoder(weights), S.pooled(teacher, x64), x64)
    assert_same(import_encoder(path, "dino", branch="student"), S.pooled(student, x64), x64)
    # the backbone file DINO released for torch.hub: the teacher's backbone, prefixes stripped
    torch.save(teacher.state_dict(), tmp_path / "dino_resnet18_pretrain.pth")
    assert_same(import_encoder(tmp_path / "dino_resnet18_pretrain.pth", "dino"), S.pooled(teacher, x64), x64)


def test_dino_vit_small_backbone_file_and_full_checkpoint(tmp_path: Path) -> None:
    teacher, student = S.dino_vit_small(seed=9), S.dino_vit_small(seed=10)
    ckpt = {  # the ViT teacher has no BatchNorm, so DINO does not wrap it in DDP: `backbone.` without `module.`
        "student": S.with_prefix({**S.with_prefix(student, "backbone."), **S.head_state(11, 384, "head.")}, "module."),
        "teacher": {**S.with_prefix(teacher, "backbone."), **S.head_state(12, 384, "head.")},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "params": [0, 1]}]}, "epoch": 100,
        "args": S.dino_args(), "dino_loss": {"center": torch.zeros(1, 64)},
    }
    full = tmp_path / "dino_deitsmall16_pretrain_full_checkpoint.pth"
    torch.save(ckpt, full)
    x = S.images(128, n=1)
    encoder = import_encoder(full, "dino")
    assert (encoder.spec.backbone, encoder.spec.image_size) == ("vit_small", 128)
    assert_same(encoder.double(), S.vit_reference(teacher, x), x.double())  # float64: timm vs written-out math
    assert_same(import_encoder(full, "dino", branch="student").double(), S.vit_reference(student, x), x.double())
    torch.save(teacher, tmp_path / "dino_deitsmall16_pretrain.pth")  # the torch.hub backbone file
    hub = import_encoder(tmp_path / "dino_deitsmall16_pretrain.pth", "dino").double()
    assert all(torch.equal(a, b) for a, b in zip(hub.state_dict().values(), encoder.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize("fmt", ["barlow_twins", "vicreg"])
def test_barlow_twins_and_vicreg_hub_file_and_training_checkpoint(tmp_path: Path, fmt: str, x64: torch.Tensor
                                                                   ) -> None:
    # VICReg's ResNet pads by 1 and convolves with padding 2; Barlow Twins uses torchvision's ResNet as it is
    net = S.resnet("resnet18", seed=13, stem="pad_then_conv" if fmt == "vicreg" else "imagenet")
    torch.save(net.state_dict(), tmp_path / "resnet50.pth")
    assert_same(import_encoder(tmp_path / "resnet50.pth", fmt), S.pooled(net, x64), x64)
    g = torch.Generator().manual_seed(14)
    model = {**S.with_prefix(net.state_dict(), "backbone."),
             "projector.0.weight": torch.randn(64, 512, generator=g), "projector.1.weight": torch.ones(64),
             "projector.1.bias": torch.zeros(64), "projector.1.running_mean": torch.zeros(64),
             "projector.1.running_var": torch.ones(64), "projector.1.num_batches_tracked": torch.tensor(3),
             "projector.3.weight": torch.randn(32, 64, generator=g)}
    if fmt == "barlow_twins":  # the loss's BatchNorm1d(affine=False) is a module of the model
        model.update({"bn.running_mean": torch.zeros(32), "bn.running_var": torch.ones(32),
                      "bn.num_batches_tracked": torch.tensor(3)})
    torch.save({"epoch": 1000, "model": S.with_prefix(model, "module."), "optimizer": S.optimizer_state(net)},
               tmp_path / "checkpoint.pth")
    weights = read_weights(tmp_path / "checkpoint.pth", fmt)
    assert weights.dropped == ({"projector": 7, "bn": 3} if fmt == "barlow_twins" else {"projector": 7})
    assert_same(build_encoder(weights), S.pooled(net, x64), x64)


def test_swav_released_file_and_training_checkpoint(tmp_path: Path, x64: torch.Tensor) -> None:
    net = S.resnet("resnet18", seed=15, stem="pad_then_conv")
    g = torch.Generator().manual_seed(16)
    state = {**net.state_dict(), "projection_head.0.weight": torch.randn(64, 512, generator=g),
             "projection_head.0.bias": torch.zeros(64), "projection_head.3.weight": torch.randn(16, 64, generator=g),
             "prototypes.weight": torch.randn(30, 16, generator=g)}
    torch.save(S.with_prefix(state, "module."), tmp_path / "swav_800ep_pretrain.pth.tar")
    weights = read_weights(tmp_path / "swav_800ep_pretrain.pth.tar", "swav")
    assert weights.dropped == {"projection_head": 3, "prototypes": 1}
    assert_same(build_encoder(weights), S.pooled(net, x64), x64)
    torch.save({"epoch": 800, "state_dict": S.with_prefix(state, "module."), "optimizer": S.optimizer_state(net),
                "amp": {"loss_scaler0": {"loss_scale": 1024.0, "unskipped": 3}}}, tmp_path / "checkpoint.pth.tar")
    assert_same(import_encoder(tmp_path / "checkpoint.pth.tar", "swav"), S.pooled(net, x64), x64)


def test_moco_legacy_serialisation(tmp_path: Path, r18: nn.Module, x64: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(17)
    mlp = {"fc.0.weight": torch.randn(512, 512, generator=g), "fc.0.bias": torch.zeros(512),
           "fc.2.weight": torch.randn(128, 512, generator=g), "fc.2.bias": torch.zeros(128)}
    key_encoder = S.resnet("resnet18", seed=18).state_dict()
    state = OrderedDict({**S.with_prefix({**r18.state_dict(), **mlp}, "module.encoder_q."),
                         **S.with_prefix({**key_encoder, **mlp}, "module.encoder_k."),
                         "module.queue": torch.randn(128, 64, generator=g),
                         "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    # MoCo's 2020 releases predate torch's zip format: the legacy serialisation
    torch.save({"epoch": 800, "arch": "resnet18", "state_dict": state, "optimizer": S.optimizer_state(r18)}, path,
               _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02"
    weights = read_weights(path, "moco")
    assert weights.dropped == {"fc": 4, "encoder_k": len(key_encoder) + 4, "queue": 1, "queue_ptr": 1}
    assert_same(build_encoder(weights), S.pooled(r18, x64), x64)


class _HistoryBuffer:
    """Pickled under mmengine's qualified name (mmengine is not installed, and must not be imported)."""

    def __init__(self) -> None:
        self._log_history = np.array([0.5, 0.25])
        self._count_history = np.array([1, 1])
        self.max_length = 1000000


def _save_with_fake_mmengine(obj: object, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["mmengine", "mmengine.logging", "mmengine.logging.history_buffer"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    _HistoryBuffer.__module__, _HistoryBuffer.__qualname__ = names[-1], "HistoryBuffer"
    sys.modules[names[-1]].HistoryBuffer = _HistoryBuffer  # type: ignore[attr-defined]
    try:
        torch.save(obj, path)
    finally:
        _HistoryBuffer.__module__, _HistoryBuffer.__qualname__ = __name__, "_HistoryBuffer"
        for name in names:
            monkeypatch.delitem(sys.modules, name)


def test_mmselfsup_checkpoint_and_linear_eval_file(tmp_path: Path, r18: nn.Module, x64: torch.Tensor,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(19)
    target = S.resnet("resnet18", seed=20).state_dict()
    state = {**S.with_prefix(r18.state_dict(), "backbone."),
             "neck.mlp.0.weight": torch.randn(64, 512, generator=g), "neck.mlp.0.bias": torch.zeros(64),
             "head.predictor.mlp.0.weight": torch.randn(64, 64, generator=g),
             **S.with_prefix(target, "target_net.module.0."), "target_net.steps": torch.tensor(500)}
    ckpt = {  # mmengine's Runner.save_checkpoint
        "meta": {"epoch": 200, "iter": 250000, "cfg": "model = dict(type='BYOL', ...)", "seed": 0,
                 "experiment_name": "byol_resnet18", "time": "20230101_000000", "mmengine_version": "0.7.0",
                 "dataset_meta": {"classes": ("a", "b")}},
        "state_dict": OrderedDict(state),
        "message_hub": {"log_scalars": OrderedDict({"train/loss": _HistoryBuffer()}),
                        "runtime_info": OrderedDict({"epoch": 200, "iter": 250000, "max_iters": 250000,
                                                     "lr": np.float64(0.01)}),
                        "resumed_keys": OrderedDict({"epoch": True, "train/loss": True})},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.3, "params": [0, 1]}]},
        "param_schedulers": [{"begin": 0, "end": 200, "last_step": 199, "base_values": [0.3]}],
    }
    path = tmp_path / "byol_resnet18_16xb256-coslr-200e_in1k.pth"
    _save_with_fake_mmengine(ckpt, path, monkeypatch)
    assert "mmengine" not in sys.modules
    weights = read_weights(path, "mmselfsup")
    assert weights.dropped == {"neck": 2, "head": 1, "target_net": len(target) + 1}
    assert_same(build_encoder(weights), S.pooled(r18, x64), x64)
    assert "mmengine" not in sys.modules  # a stand-in took the HistoryBuffer; the package was never imported
    linear = {"meta": {"epoch": 100}, "state_dict": {**S.with_prefix(r18.state_dict(), "backbone."),
                                                     "head.fc.weight": torch.randn(10, 512, generator=g),
                                                     "head.fc.bias": torch.zeros(10)}}
    torch.save(linear, tmp_path / "linear.pth")
    weights = read_weights(tmp_path / "linear.pth", "mmselfsup")
    assert weights.dropped == {"head": 2}
    assert_same(build_encoder(weights), S.pooled(r18, x64), x64)


def test_solo_learn_lightning_checkpoint_with_its_cifar_stem(tmp_path: Path) -> None:
    net, momentum = S.resnet("resnet18", seed=21, stem="solo"), S.resnet("resnet18", seed=22, stem="solo")
    g = torch.Generator().manual_seed(23)
    heads = {"projector.0.weight": torch.randn(64, 512, generator=g), "projector.0.bias": torch.zeros(64),
             "momentum_projector.0.weight": torch.randn(64, 512, generator=g),
             "predictor.0.weight": torch.randn(64, 64, generator=g),
             "classifier.weight": torch.randn(10, 512, generator=g), "classifier.bias": torch.zeros(10),
             "momentum_classifier.weight": torch.randn(10, 512, generator=g)}
    state = {**S.with_prefix(net.state_dict(), "backbone."), **S.with_prefix(momentum.state_dict(),
                                                                               "momentum_backbone."), **heads}
    torch.save(S.lightning_container(state, net), tmp_path / "byol-cifar10.ckpt")
    weights = read_weights(tmp_path / "byol-cifar10.ckpt", "solo_learn")
    assert weights.dropped == {"momentum_backbone": len(momentum.state_dict()), "projector": 2,
                               "momentum_projector": 1, "predictor": 1, "classifier": 2, "momentum_classifier": 1}
    encoder = build_encoder(weights, weights.spec(mean=[0.4914, 0.4822, 0.4465], std=[0.247, 0.243, 0.261]))
    assert encoder.spec.stem == "cifar_pad2"  # solo-learn's 3x3 conv has padding 2, and no max-pool
    x = S.images(32)
    norm = torch.tensor(encoder.spec.mean).view(1, 3, 1, 1), torch.tensor(encoder.spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net((x - norm[0]) / norm[1])
    assert_same(encoder, ref, x)
    with pytest.raises(UserError, match=r"byol-cifar10.ckpt .*set stem='cifar_pad2' \(got 'cifar'\)"):
        build_encoder(weights, EncoderSpec(backbone="resnet18", stem="cifar"))


def test_lightly_benchmark_checkpoint_and_tutorial_file(tmp_path: Path, r18: nn.Module, x64: torch.Tensor) -> None:
    from omegaconf import OmegaConf

    teacher = S.resnet("resnet18", seed=24).state_dict()
    g = torch.Generator().manual_seed(25)
    state = {**S.with_prefix(r18.state_dict(), "backbone."), **S.with_prefix(teacher, "teacher_backbone."),
             "projection_head.layers.0.weight": torch.randn(64, 512, generator=g),
             "teacher_projection_head.layers.0.weight": torch.randn(64, 512, generator=g),
             "prediction_head.layers.0.weight": torch.randn(64, 64, generator=g),
             "online_classifier.classification_head.weight": torch.randn(10, 512, generator=g),
             "online_classifier.classification_head.bias": torch.zeros(10)}
    hparams = OmegaConf.create({"batch_size_per_device": 128, "num_classes": 10, "optim": {"lr": [0.1, 0.2]}})
    torch.save(S.lightning_container(state, r18, hyper_parameters=hparams, hparams_name="kwargs"),
               tmp_path / "byol.ckpt")  # omegaconf hyper-parameters, as Hydra-configured Lightning projects save
    weights = read_weights(tmp_path / "byol.ckpt", "lightly")
    assert weights.dropped == {"teacher_backbone": len(teacher), "projection_head": 1, "teacher_projection_head": 1,
                               "prediction_head": 1, "online_classifier": 2}
    assert_same(build_encoder(weights), S.pooled(r18, x64), x64)
    # the tutorials' file: {"resnet18_parameters": nn.Sequential(*list(resnet.children())[:-1]).state_dict()}
    sequential = nn.Sequential(*list(r18.children())[:-1])
    torch.save({"resnet18_parameters": sequential.state_dict()}, tmp_path / "model.pth")
    assert_same(import_encoder(tmp_path / "model.pth", "lightly"), S.pooled(r18, x64), x64)
    # lightly's own ResNetGenerator (CIFAR-10 benchmark) is another network: refused with a reason
    generator_like = {"0.weight": torch.zeros(64, 3, 3, 3), "2.0.shortcut.0.weight": torch.zeros(64, 64, 1, 1)}
    torch.save({"state_dict": S.with_prefix(generator_like, "backbone."), "global_step": 1}, tmp_path / "gen.ckpt")
    with pytest.raises(UserError, match="gen.ckpt .*ResNetGenerator"):
        import_encoder(tmp_path / "gen.ckpt", "lightly")


def test_vissl_classy_state_dict(tmp_path: Path, r18: nn.Module, x64: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(26)
    ckpt = {  # vissl/hooks/log_hooks.py: the checkpoint content; base_ssl_model.py: get_classy_state
        "phase_idx": 199, "iteration": 500000, "iteration_num": 500000, "train_phase_idx": 199,
        "loss": {"queue0": torch.randn(16, 8, generator=g)},
        "classy_state_dict": {
            "train": True, "phase_idx": 199, "num_updates": 500000,
            "base_model": {"model": {"trunk": S.with_prefix(r18.state_dict(), "_feature_blocks."),
                                     "heads": {"0.clf.0.weight": torch.randn(16, 512, generator=g),
                                               "0.clf.0.bias": torch.zeros(16)}},
                           "meta": {"trunk": {}, "heads": []}},
            "optimizer": {"state": {}, "param_groups": []},
        },
    }
    torch.save(ckpt, tmp_path / "model_final_checkpoint_phase199.torch")
    weights = read_weights(tmp_path / "model_final_checkpoint_phase199.torch", "vissl")
    assert weights.dropped == {"heads": 2}
    assert_same(build_encoder(weights), S.pooled(r18, x64), x64)
    torch.save({"model_state_dict": S.with_prefix(r18.state_dict(), "_feature_blocks.")}, tmp_path / "trunk.torch")
    assert_same(import_encoder(tmp_path / "trunk.torch", "vissl"), S.pooled(r18, x64), x64)
