"""Time `import_encoder` per format (the figures of docs/checkpoints.md); not a test.

    .venv/bin/python -m tests.checkpoints.measure_import          # test-size files (ResNet-18 unless noted)
    .venv/bin/python -m tests.checkpoints.measure_import --full   # full-size files: ResNet-50, DISSL d8192, ViT-S/16

Each file is written in its publisher's container (as in tests/checkpoints/test_formats.py), imported once to warm
up, then `--repeat` times; the median wall time is printed with the file size and the max |difference| between the
imported encoder's embedding and the original network's (float32; 2 images).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sslbench.checkpoints import import_encoder
from tests.checkpoints import sources as S

Reference = Callable[[torch.Tensor], torch.Tensor]


def _resnet_files(tmp: Path, name: str) -> dict[str, tuple[Path, Reference, int]]:
    net = S.resnet(name, seed=1, fc=True)
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    g = torch.Generator().manual_seed(2)
    width = 2048 if name == "resnet50" else 512
    head = {"projector.0.weight": torch.randn(256, width, generator=g), "projector.0.bias": torch.zeros(256)}
    files: dict[str, object] = {
        "torchvision": net.state_dict(),
        "dino": {"teacher": S.with_prefix({**S.with_prefix(sd, "backbone."), **S.head_state(3, width, "head.")},
                                          "module."),
                 "student": S.with_prefix({**S.with_prefix(sd, "backbone."), **S.head_state(4, width, "head.")},
                                          "module."),
                 "optimizer": S.optimizer_state(net), "epoch": 100, "args": S.dino_args()},
        "barlow_twins": {"epoch": 1000, "model": S.with_prefix({**S.with_prefix(sd, "backbone."), **head}, "module."),
                         "optimizer": S.optimizer_state(net)},
        "vicreg": {"epoch": 1000, "model": S.with_prefix({**S.with_prefix(sd, "backbone."), **head}, "module."),
                   "optimizer": S.optimizer_state(net)},
        "swav": S.with_prefix({**sd, "projection_head.0.weight": head["projector.0.weight"],
                               "prototypes.weight": torch.randn(3000, 256, generator=g)}, "module."),
        "moco": {"epoch": 800, "arch": name, "optimizer": S.optimizer_state(net),
                 "state_dict": {**S.with_prefix(sd, "module.encoder_q."), **S.with_prefix(sd, "module.encoder_k."),
                                "module.queue": torch.randn(128, 65536, generator=g)}},
        "mmselfsup": {"meta": {"epoch": 200}, "state_dict": {**S.with_prefix(sd, "backbone."),
                                                             **S.with_prefix(sd, "target_net.module.0."), **head}},
        "solo_learn": S.lightning_container({**S.with_prefix(sd, "backbone."),
                                             **S.with_prefix(sd, "momentum_backbone."), **head}, net),
        "lightly": S.lightning_container({**S.with_prefix(sd, "backbone."),
                                          **S.with_prefix(sd, "teacher_backbone."), **head}, net),
        "vissl": {"phase_idx": 199, "classy_state_dict": {"base_model": {
            "model": {"trunk": S.with_prefix(sd, "_feature_blocks."), "heads": head}, "meta": {}}}},
    }
    out = {}
    for fmt, obj in files.items():
        path = tmp / f"{name}-{fmt}.pth"
        torch.save(obj, path, _use_new_zipfile_serialization=fmt != "moco")
        out[fmt] = (path, lambda x, net=net: S.pooled(net, x), 64)
    return out


def _timm_file(tmp: Path) -> tuple[Path, Reference, int]:
    import timm

    torch.manual_seed(5)
    net = S.perturb_norms(timm.create_model("resnet18", pretrained=False, num_classes=10), 6)
    path = tmp / "timm-resnet18.pth"
    torch.save(net.state_dict(), path)

    def ref(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net.forward_head(net.forward_features(S.normalised(x)), pre_logits=True)

    return path, ref, 64


def _dissl_file(tmp: Path) -> tuple[Path, Reference, int]:
    net = S.dissl_resnet50_d8192(seed=7)
    path = tmp / "dissl_resnet50_d8192.pt"
    torch.save(net.state_dict(), path)
    return path, lambda x: S.pooled(net, x), 32


def _vit_file(tmp: Path, image_size: int) -> tuple[Path, Reference, int]:
    state = S.dino_vit_small(seed=8, image_size=image_size)
    path = tmp / f"dino_vits16_{image_size}px.pth"
    torch.save(state, path)
    return path, lambda x: S.vit_reference(state, x).float(), image_size


def measure(path: Path, fmt: str, reference: Reference, size: int, repeat: int) -> tuple[float, float]:
    import_encoder(path, fmt)  # warm-up: first-use imports (timm, torchvision) and page cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        encoder = import_encoder(path, fmt)
        times.append(time.perf_counter() - start)
    x = S.images(size)
    with torch.no_grad():
        diff = float((encoder(x).embedding - reference(x)).abs().max())
    return statistics.median(times), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full-size files instead of test-size ones")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rows: list[tuple[str, str, Path, Reference, int]] = []
        if args.full:
            for fmt, (path, ref, size) in _resnet_files(tmp, "resnet50").items():
                rows.append((fmt, "ResNet-50", path, ref, size))
            rows.append(("dissl", "ResNet-50 d8192", *_dissl_file(tmp)))
            rows.append(("dino", "ViT-S/16, 224 px", *_vit_file(tmp, 224)))
        else:
            for fmt, (path, ref, size) in _resnet_files(tmp, "resnet18").items():
                rows.append((fmt, "ResNet-18", path, ref, size))
            rows.append(("timm", "ResNet-18", *_timm_file(tmp)))
            rows.append(("dissl", "ResNet-50 d8192", *_dissl_file(tmp)))
            rows.append(("dino", "ViT-S/16, 128 px", *_vit_file(tmp, 128)))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeat}")
        print("| format | network | file MB | import s | max abs diff |")
        print("|---|---|---|---|---|")
        for fmt, net, path, ref, size in rows:
            seconds, diff = measure(path, fmt, ref, size, args.repeat)
            print(f"| {fmt} | {net} | {path.stat().st_size / 2**20:.0f} | {seconds:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
