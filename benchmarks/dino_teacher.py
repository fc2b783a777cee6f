"""How far DINO's teacher is from a uniform output at initialisation (docs/calibration.md, 2026-11-23).

    python benchmarks/dino_teacher.py [hydra overrides of the pretrain config, e.g. method.module.use_bn_in_head=true]

Builds DINO as the pretrain stage does, encodes the first 256 train images with the teacher, and prints the mean
pairwise cosine of the backbone features and of the l2-normalised bottleneck outputs z (1 = every image alike), and
the mean entropy of the teacher's softmax at τ_t = 0.04, uncentred and centred on the batch mean (the value the
centre's moving average approaches); ln K is the entropy of a uniform output, where the student gets no signal.
Needs `dvc repro prepare` first.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from sslbench.data.splits import open_split
from sslbench.training.config import build_method


def mean_offdiag_cos(x: torch.Tensor) -> float:
    x = F.normalize(x, dim=1)
    cos = x @ x.T
    return float(cos[~torch.eye(len(x), dtype=torch.bool)].mean())


def main() -> None:
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfg = compose("pretrain", ["method=dino", *sys.argv[1:]])
    torch.manual_seed(int(cfg.study.seed))
    module = build_method(cfg).train()
    train = open_split(cfg.paths.data, cfg.dataset.name, cfg.dataset.train)
    images = torch.from_numpy(np.array(train.images(slice(0, 256)))).permute(0, 3, 1, 2).float().div(255)
    head = module.teacher_head
    with torch.no_grad():
        h = module.teacher_encoder.features(images)
        z = F.normalize(head.mlp(h), dim=1)
        logits = F.linear(z, F.normalize(head.last_layer.weight, dim=1))
    print(f"pairwise cosine: backbone features {mean_offdiag_cos(h):.3f}, bottleneck z {mean_offdiag_cos(z):.3f}")
    for name, centre in (("uncentred", torch.zeros_like(logits[:1])), ("centred", logits.mean(0, keepdim=True))):
        p = F.softmax((logits - centre) / 0.04, dim=1)
        entropy = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
        print(f"teacher entropy, {name}: {entropy:.3f} (uniform: ln K = {math.log(logits.shape[1]):.3f})")


if __name__ == "__main__":
    main()
