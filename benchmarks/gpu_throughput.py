"""Training throughput per method at paper settings, against the bare backbone and against lightly, in one process.

    python benchmarks/gpu_throughput.py                                  # both settings, every method, GPU if any
    python benchmarks/gpu_throughput.py --settings cifar_r18 --methods simclr,byol --channels-last --compile
    python benchmarks/gpu_throughput.py --smoke                          # tiny CPU run: checks the script only

Settings (`--settings`): `cifar_r18` = ResNet-18 with the CIFAR stem on 32 px images, `imagenet_r50` = ResNet-50
on 224 px images (multi-crop methods: 6 local crops of 96 px, as SwAV), batch 256 each (`study`: the embedded
study's CPU default, convnet_small on 32 px, batch 64); the heads and loss
hyper-parameters are the study's (`conf/method/<name>.yaml`). The input is a random uint8 batch already on the device
(data loading is not measured). Per method, three steps are timed alternately (`--repeats` times each after
`--warmup` steps; medians compared, so that other load affects all three):
- ours: views (`on_after_batch_transfer`, batched on the device) + the method's hooks + `training_step` (SSL loss and
  online probe) + backward + optimizer and schedule step, as the pretrain stage runs it minus Lightning's bookkeeping;
- backbone: forward + backward of the backbone alone over the same views (each resolution in one call): the work a
  step cannot avoid;
- lightly: lightly 1.6's implementation of the same method (its heads, loss and momentum utilities, following its
  `examples/pytorch/<method>.py` training step: one backbone call per view) on the same backbone, views and
  optimizer. Its LightningModules target the separate `pytorch_lightning` package, so the step functions are
  compared, not the modules. Methods lightly lacks (DISSL, CISSL, the Bayes variants, supervised) show "-".
Ratios: ours/backbone = images/s of ours / images/s of the backbone (1.0 = no overhead); ours/lightly > 1 = ours is
faster. `--precision bf16-mixed` (default on GPU) runs the steps under bf16 autocast, as Lightning does;
`--channels-last` and `--compile` apply the pretrain stage's options (`sslbench.accel.prepare_module`) to all three.
Bad device settings (bf16 on a GPU without it, no GPU for `--device cuda`) stop before any work, as in the stage.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn

import sslbench
from sslbench.accel import Hardware, prepare_module, resolve_settings
from sslbench.errors import UserError
from sslbench.models.encoder import Encoder

CONF = Path(sslbench.__file__).parent / "conf" / "method"
# name -> (Hydra overrides of the pretrain config, batch, overrides of multi-crop views)
SETTINGS: dict[str, tuple[list[str], int, list[str]]] = {
    "cifar_r18": (["backbone=resnet18", "backbone.stem=cifar", "dataset.image_size=32"], 256, []),
    "imagenet_r50": (["backbone=resnet50", "backbone.stem=imagenet", "dataset.image_size=224"], 256,
                     ["method.views.n_local=6", "method.views.local_size=96"]),
    "study": ([], 64, []),  # the embedded study's CPU default (convnet_small, 32 px, batch 64)
    "smoke": (["backbone=convnet_small", "backbone.width=8", "dataset.image_size=16"], 8,
              ["method.views.n_local=2", "method.views.local_size=8"]),
}
FAKE_TRAINER = {"estimated_stepping_batches": 1000, "max_epochs": 10, "global_step": 0, "global_rank": 0,
                "num_training_batches": 100, "current_epoch": 0, "world_size": 1}


# ----------------------------------------------------------------------------------------------- lightly


@dataclass
class LightlyMethod:
    """lightly's version of a method: `model` holds every module (trainable and momentum copies); `loss(views,
    step)`; `before_step(step)` (momentum updates, as lightly's examples do before the forward); `after_backward()`."""

    model: nn.Module
    loss: Callable[[list[torch.Tensor], int], torch.Tensor]
    before_step: Callable[[int], None] = field(default=lambda step: None)
    after_backward: Callable[[], None] = field(default=lambda: None)


def _frozen(module: nn.Module) -> nn.Module:
    from lightly.models.utils import deactivate_requires_grad

    copied = copy.deepcopy(module)
    deactivate_requires_grad(copied)
    return copied


def lightly_method(name: str, m: dict[str, Any], backbone: Encoder, total_steps: int) -> LightlyMethod | None:
    """The lightly counterpart of method `name` with the study's hyper-parameters `m` (`method.module`), or None."""
    from lightly import loss as LL
    from lightly.models.modules import heads as H
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    h = backbone.feature_dim
    f = backbone.features
    if name in ("simclr", "barlow_twins", "vicreg"):
        d = m["projector_dims"]
        head: nn.Module
        if name == "simclr":
            head = H.SimCLRProjectionHead(h, d[0], d[1])
            crit: nn.Module = LL.NTXentLoss(temperature=m["temperature"], gather_distributed=True)
        elif name == "barlow_twins":
            head = H.BarlowTwinsProjectionHead(h, d[0], d[1])
            crit = LL.BarlowTwinsLoss(lambda_param=m["lambda_offdiag"], gather_distributed=True)
        else:
            head = H.VICRegProjectionHead(h, d[0], d[1], num_layers=len(d))
            crit = LL.VICRegLoss(lambda_param=m["sim_coeff"], mu_param=m["std_coeff"], nu_param=m["cov_coeff"],
                                 gather_distributed=True)
        return LightlyMethod(nn.ModuleList([backbone, head, crit]),
                             lambda v, s: crit(head(f(v[0])), head(f(v[1]))))
    if name == "simsiam":
        pd, qd = m["projector_dims"], m["predictor_dims"]
        proj, pred = H.SimSiamProjectionHead(h, pd[0], pd[1]), H.SimSiamPredictionHead(pd[1], qd[0], qd[1])
        cos = LL.NegativeCosineSimilarity()

        def simsiam(v: list[torch.Tensor], s: int) -> torch.Tensor:
            z0, z1 = proj(f(v[0])), proj(f(v[1]))
            return 0.5 * (cos(pred(z0), z1.detach()) + cos(pred(z1), z0.detach()))

        return LightlyMethod(nn.ModuleList([backbone, proj, pred]), simsiam)
    if name == "byol":
        pd, qd = m["projector_dims"], m["predictor_dims"]
        proj, pred = H.BYOLProjectionHead(h, pd[0], pd[1]), H.BYOLPredictionHead(pd[1], qd[0], qd[1])
        bb_m, proj_m = _frozen(backbone), _frozen(proj)
        cos = LL.NegativeCosineSimilarity()

        def byol(v: list[torch.Tensor], s: int) -> torch.Tensor:
            p0, p1 = pred(proj(f(v[0]))), pred(proj(f(v[1])))
            with torch.no_grad():
                z0, z1 = proj_m(bb_m.features(v[0])), proj_m(bb_m.features(v[1]))
            return 0.5 * (cos(p0, z1) + cos(p1, z0))

        def byol_momentum(s: int) -> None:
            tau = cosine_schedule(s, total_steps, m["momentum_base"], m["momentum_final"])
            update_momentum(backbone, bb_m, tau)
            update_momentum(proj, proj_m, tau)

        return LightlyMethod(nn.ModuleList([backbone, proj, pred, bb_m, proj_m]), byol, byol_momentum)
    if name == "swav":
        d = m["projector_dims"]
        proj = H.SwaVProjectionHead(h, d[0], d[1])
        protos = H.SwaVPrototypes(d[1], m["n_prototypes"], n_steps_frozen_prototypes=int(
            m["freeze_prototypes_epochs"] * FAKE_TRAINER["num_training_batches"]))
        swav_loss = LL.SwaVLoss(temperature=m["temperature"], sinkhorn_iterations=m["sinkhorn_iterations"],
                                sinkhorn_epsilon=m["epsilon"], sinkhorn_gather_distributed=True)

        def swav(v: list[torch.Tensor], s: int) -> torch.Tensor:
            protos.normalize()
            out = [protos(F.normalize(proj(f(x)), dim=1), step=s) for x in v]
            n = m["n_global_views"]
            return swav_loss(out[:n], out[n:])

        return LightlyMethod(nn.ModuleList([backbone, proj, protos]), swav)
    if name == "dino":
        epochs = int(FAKE_TRAINER["max_epochs"])
        student = H.DINOProjectionHead(h, m["hidden_dim"], m["bottleneck_dim"], m["out_dim"],
                                       freeze_last_layer=int(m["freeze_last_layer_epochs"]))
        # a second head rather than a deep copy, as lightly's example (its weight-normalised layer holds a
        # computed tensor that deepcopy refuses)
        teacher = H.DINOProjectionHead(h, m["hidden_dim"], m["bottleneck_dim"], m["out_dim"])
        deactivate_requires_grad(teacher)
        bb_t = _frozen(backbone)
        dino_loss = LL.DINOLoss(output_dim=m["out_dim"], warmup_teacher_temp=m["warmup_teacher_temp"],
                                teacher_temp=m["teacher_temp"], student_temp=m["student_temp"],
                                warmup_teacher_temp_epochs=int(m["warmup_teacher_temp_epochs"]),
                                center_momentum=m["center_momentum"])

        def dino(v: list[torch.Tensor], s: int) -> torch.Tensor:
            n = m["n_global_views"]
            with torch.no_grad():
                t = [teacher(bb_t.features(x)) for x in v[:n]]
            return dino_loss(t, [student(f(x)) for x in v], epoch=s * epochs // total_steps)

        def dino_momentum(s: int) -> None:
            tau = cosine_schedule(s, total_steps, m["momentum_teacher"], 1.0)
            update_momentum(backbone, bb_t, tau)
            update_momentum(student, teacher, tau)

        return LightlyMethod(nn.ModuleList([backbone, student, bb_t, teacher, dino_loss]), dino, dino_momentum,
                             lambda: student.cancel_last_layer_gradients(current_epoch=0))
    return None


# ----------------------------------------------------------------------------------------------- measuring


def build(method: str, overrides: list[str], multi_crop: list[str], batch: int) -> tuple[Any, Any]:
    from sslbench.training.config import build_method  # imports lightning (seconds): only once there is work

    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfg = compose("pretrain", [f"method={method}", f"pretrain.batch_size={batch}", *overrides])
        if "n_local" in cfg.method.views:
            cfg = compose("pretrain", [f"method={method}", f"pretrain.batch_size={batch}", *overrides, *multi_crop])
    torch.manual_seed(0)
    return build_method(cfg), cfg


def _optimizer(params: Any, optim: Any, batch: int) -> torch.optim.Optimizer:
    lr = optim.lr * batch / 256
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=optim.weight_decay)


def measure(method: str, setting: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    overrides, default_batch, multi_crop = SETTINGS[setting]
    batch = args.batch_size or default_batch
    module, cfg = build(method, overrides, multi_crop, batch)
    size = int(cfg.dataset.image_size)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=gen).to(device)
    labels = torch.randint(0, int(cfg.dataset.num_classes), (batch,), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    compile_backend = "inductor" if args.compile else None

    module.to(device).train()
    module._trainer = SimpleNamespace(**FAKE_TRAINER)
    module.log = lambda *a, **k: None  # Lightning's logging is not part of the method's cost
    prepare_module(module, channels_last=args.channels_last, compile_backend=compile_backend)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]

    def ours() -> None:
        views, y = module.on_after_batch_transfer((images, labels), 0)
        module.on_train_batch_start((views, y), 0)
        with autocast:
            loss = module.training_step((views, y), 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        module.on_after_backward()
        opt.step()
        sched.step()
        module.on_train_batch_end(None, (views, y), 0)

    fixed_views, _ = module.on_after_batch_transfer((images, labels), 0)
    groups: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for v in fixed_views:
        groups.setdefault(tuple(v.shape[1:]), []).append(v)
    bare_inputs = [torch.cat(g) for g in groups.values()]

    def backbone() -> None:
        module.encoder.zero_grad(set_to_none=True)
        for x in bare_inputs:
            with autocast:
                out = module.encoder.features(x).float().sum()
            out.backward()

    steps: dict[str, Callable[[], None]] = {"ours": ours, "backbone": backbone}
    torch.manual_seed(0)
    lm = lightly_method(method, OmegaConf.to_container(cfg.method.module, resolve=True), Encoder(module.encoder.spec),
                        int(FAKE_TRAINER["estimated_stepping_batches"]))
    if lm is not None:
        lm.model.to(device).train()
        prepare_module(lm.model, channels_last=args.channels_last, compile_backend=compile_backend)
        lopt = _optimizer([p for p in lm.model.parameters() if p.requires_grad], module.optim, batch)
        counter = [0]

        def lightly() -> None:
            views, _ = module.on_after_batch_transfer((images, labels), 0)  # the same views as ours
            lm.before_step(counter[0])
            with autocast:
                loss = lm.loss(views, counter[0])
            lopt.zero_grad(set_to_none=True)
            loss.backward()
            lm.after_backward()
            lopt.step()
            counter[0] += 1

        steps["lightly"] = lightly

    def timed(fn: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for fn in steps.values():
            timed(fn)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for key, fn in steps.items():
            times[key].append(timed(fn))
    img_s = {k: batch / statistics.median(t) for k, t in times.items()}
    row: dict[str, Any] = {"method": method, "setting": setting, "batch": batch, "views": len(fixed_views),
                           **{f"{k}_img_s": round(v, 1) for k, v in img_s.items()},
                           "ours_over_backbone": round(img_s["ours"] / img_s["backbone"], 3),
                           "ours_over_lightly": round(img_s["ours"] / img_s["lightly"], 3) if lm else None}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="cifar_r18,imagenet_r50", help=f"comma-separated of {list(SETTINGS)}")
    parser.add_argument("--methods", default="", help="comma-separated; default: every method but random_init")
    parser.add_argument("--batch-size", type=int, default=0, help="default: the setting's (256)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="", help="32-true | bf16-mixed (default: bf16-mixed on a GPU)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones (inductor)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (setting `smoke`, 1 repeat): a check")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    # lightly's DINO head uses the deprecated torch.nn.utils.weight_norm
    warnings.filterwarnings("ignore", message=".*weight_norm` is deprecated", category=FutureWarning)
    if args.smoke:
        args.settings, args.device, args.repeats, args.warmup = "smoke", "cpu", 1, 1
    methods = args.methods.split(",") if args.methods else sorted(
        p.stem for p in CONF.glob("*.yaml") if p.stem != "random_init")
    settings = args.settings.split(",")
    unknown = sorted(set(settings) - set(SETTINGS))
    hardware = Hardware.detect()
    try:
        if unknown:
            raise UserError(f"unknown --settings {unknown}; valid: {', '.join(SETTINGS)}")
        accelerator = {"auto": "auto", "cpu": "cpu", "cuda": "gpu"}[args.device]
        args.precision = args.precision or ("bf16-mixed" if accelerator != "cpu" and hardware.cuda_devices else
                                            "32-true")
        run = resolve_settings(accelerator=accelerator, devices=1, num_nodes=1, strategy="auto",
                               precision=args.precision, sync_batchnorm=False, channels_last=args.channels_last,
                               compile=args.compile, batch_size=1, hardware=hardware, env={})
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    device = torch.device("cuda" if run.accelerator == "gpu" else "cpu")
    print(f"device {device} {hardware.cuda_name}, torch {torch.__version__}, precision {run.precision}, "
          f"channels_last {run.channels_last}, compile {run.compile}, threads {torch.get_num_threads()}")
    rows = []
    for setting in settings:
        described = " ".join(SETTINGS[setting][0]) or "the pretrain config's defaults"
        print(f"\n{setting}: {described}, batch {args.batch_size or SETTINGS[setting][1]}")
        print(f"{'method':<24}{'views':>6}{'ours img/s':>12}{'backbone img/s':>16}{'ours/backbone':>15}"
              f"{'lightly img/s':>15}{'ours/lightly':>14}")
        for method in methods:
            r = measure(method, setting, args, device)
            rows.append(r)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the method's modules are gone with `measure`'s frame
            lightly = (f"{r['lightly_img_s']:>15.1f}{r['ours_over_lightly']:>14.2f}" if "lightly_img_s" in r
                       else f"{'-':>15}{'-':>14}")
            print(f"{method:<24}{r['views']:>6}{r['ours_img_s']:>12.1f}{r['backbone_img_s']:>16.1f}"
                  f"{r['ours_over_backbone']:>15.2f}{lightly}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": str(device), "gpu": hardware.cuda_name, "torch": torch.__version__,
                                         "precision": run.precision, "channels_last": run.channels_last,
                                         "compile": run.compile, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
