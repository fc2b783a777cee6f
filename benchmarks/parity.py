"""Learning parity with lightly (github.com/lightly-ai/lightly): sslbench's SSL methods against lightly's modules.

    python benchmarks/parity.py --steps 300,1000 --seeds 0,1 --out reports/parity.json
    python benchmarks/parity.py --methods dino,swav --steps 500 --heads ours [hydra overrides of the pretrain config]
    python benchmarks/parity.py --smoke          # a handful of steps and a tiny probe (the test)
    python benchmarks/parity.py --merge seed0.json seed1.json   # one table from runs of one seed each

For every method that lightly implements (SimCLR, SimSiam, BYOL, Barlow Twins, SwAV, DINO, VICReg), trains two
models side by side and probes their backbones:
- ours: the method built by `build_method`, exactly as the pretrain stage builds it, and trained as the stage trains
  it (`benchmarks/calibrate.py`'s `train_step`: views reseeded per step, the method's hooks, the stage's optimizer and
  schedule from `SSLMethod.optimizer_and_schedule`);
- lightly: the same sslbench backbone (same initial weights for a seed) under lightly's heads, losses and momentum /
  temperature utilities (`lightly.models.modules`, `lightly.loss`, `lightly.models.utils`, `lightly.utils.scheduler`),
  wired as lightly's examples wire them: head widths of lightly's examples (`--heads lightly`, the input width being
  the backbone's; `--heads ours` takes sslbench's widths instead), the loss hyper-parameters and schedules of the
  sslbench method config (temperatures, momentum, prototypes frozen for the same steps, DINO's teacher temperature
  warm-up in whole epochs as lightly's `DINOLoss(epoch=...)` does).
Both sides share everything else: the views (sslbench's transforms, with the same random draws at every step), the
batches (same order), the optimizer and schedule (`sslbench.methods.base.build_optimizer`: the stage's SGD/AdamW,
weight decay on weights only, warm-up + cosine over the largest step count), NHWC weights, and the probe: a logistic
regression (C = 0.1) on the standardised backbone features of the train split, scored on the val split (never test),
at step 0 and at every step count of `--steps`. Same-resolution views go through the backbone in one batch on both
sides (as sslbench does; lightly's examples run one forward per view, so BatchNorm sees one view at a time there).

The table gives, per step count and method, each side's val accuracy (mean over seeds), the difference ours - lightly
and two noises of that difference: the spread of the per-seed differences (sample sd / sqrt(seeds); '-' for one
seed) and the binomial standard error of the two val accuracies (sqrt(p(1-p)/n_val) each, combined, / sqrt(seeds)).
Needs `dvc repro prepare` first (or `--data` pointing at a prepared data folder).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from calibrate import _Clock, attach_clock, load_split, probe, train_step, warmup_steps
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch import nn

from sslbench.accel import prepare_module
from sslbench.methods.base import build_optimizer
from sslbench.methods.swav import multi_crop_features
from sslbench.models.encoder import Encoder
from sslbench.training.config import build_method, encoder_spec, optim_config, views_config

METHODS = ("simclr", "simsiam", "byol", "barlow_twins", "swav", "dino", "vicreg")


# ---------------------------------------------------------------------------------------------- lightly's side


def _widths(cfg: Any, heads: str) -> dict[str, Any]:
    """Head widths: lightly's examples' (input = the backbone's width) or those of the sslbench method config."""
    m = cfg.method.module
    if heads == "ours":
        if cfg.method.name == "dino":
            return {"hidden": m.hidden_dim, "bottleneck": m.bottleneck_dim, "out": m.out_dim}
        if cfg.method.name in ("simsiam", "byol"):
            return {"proj": list(m.projector_dims), "pred": list(m.predictor_dims)}
        if cfg.method.name == "swav":
            return {"proj": list(m.projector_dims), "prototypes": m.n_prototypes}
        return {"proj": list(m.projector_dims)}
    # the sizes of lightly's examples (examples/pytorch/<method>.py, written for a 512-feature ResNet-18)
    return {
        "simclr": {"proj": [512, 128]},
        "simsiam": {"proj": [512, 128], "pred": [64, 128]},
        "byol": {"proj": [1024, 256], "pred": [1024, 256]},
        "barlow_twins": {"proj": [2048, 2048]},
        "swav": {"proj": [512, 128], "prototypes": 512},
        "dino": {"hidden": 512, "bottleneck": 64, "out": 2048},
        "vicreg": {"proj": [2048, 2048]},
    }[cfg.method.name]


class LightlyModel(nn.Module):
    """sslbench's backbone (`encoder`, probed) with lightly's heads and loss for one method; `loss(views, step)`.

    `per_epoch` steps make an epoch (DINO's teacher temperature and last-layer freeze, SwAV's frozen prototypes);
    `total` steps make the run (momentum schedules).
    """

    def __init__(self, cfg: Any, heads: str, per_epoch: int, total: int) -> None:
        super().__init__()
        from lightly import loss as ll
        from lightly.models import modules as lm
        from lightly.models.modules import heads as heads_mod
        from lightly.models.utils import deactivate_requires_grad

        self.name, self.per_epoch, self.total = str(cfg.method.name), per_epoch, total
        self.encoder = Encoder(encoder_spec(cfg))
        m, w, d = cfg.method.module, _widths(cfg, heads), self.encoder.feature_dim
        self.n_global = int(m.get("n_global_views", 2))
        self.criterion: nn.Module
        if self.name == "simclr":
            self.projector = lm.SimCLRProjectionHead(d, w["proj"][0], w["proj"][1])
            self.criterion = ll.NTXentLoss(temperature=float(m.temperature))
        elif self.name == "simsiam":
            self.projector = lm.SimSiamProjectionHead(d, w["proj"][0], w["proj"][1])
            self.predictor = lm.SimSiamPredictionHead(w["proj"][1], w["pred"][0], w["pred"][1])
            self.criterion = ll.NegativeCosineSimilarity()
        elif self.name == "byol":
            self.projector = lm.BYOLProjectionHead(d, w["proj"][0], w["proj"][1])
            self.predictor = lm.BYOLPredictionHead(w["proj"][1], w["pred"][0], w["pred"][1])
            self.criterion = ll.NegativeCosineSimilarity()
            self.momentum_base = float(m.momentum_base)
        elif self.name == "barlow_twins":
            self.projector = lm.BarlowTwinsProjectionHead(d, w["proj"][0], w["proj"][1])
            self.criterion = ll.BarlowTwinsLoss(lambda_param=float(m.lambda_offdiag))
        elif self.name == "vicreg":
            self.projector = heads_mod.VICRegProjectionHead(d, w["proj"][0], w["proj"][1], num_layers=2)
            self.criterion = ll.VICRegLoss(float(m.sim_coeff), float(m.std_coeff), float(m.cov_coeff))
        elif self.name == "swav":
            self.projector = lm.SwaVProjectionHead(d, w["proj"][0], w["proj"][1])
            frozen = int(float(m.freeze_prototypes_epochs) * per_epoch)
            self.prototypes = lm.SwaVPrototypes(w["proj"][1], int(w["prototypes"]), n_steps_frozen_prototypes=frozen)
            self.criterion = ll.SwaVLoss(temperature=float(m.temperature), sinkhorn_iterations=int(
                m.sinkhorn_iterations), sinkhorn_epsilon=float(m.epsilon))
        elif self.name == "dino":
            self.projector = lm.DINOProjectionHead(d, int(w["hidden"]), int(w["bottleneck"]), int(w["out"]),
                                                   freeze_last_layer=math.ceil(float(m.freeze_last_layer_epochs)))
            self.criterion = ll.DINOLoss(
                output_dim=int(w["out"]), warmup_teacher_temp=float(m.warmup_teacher_temp),
                teacher_temp=float(m.teacher_temp),
                warmup_teacher_temp_epochs=math.ceil(float(m.warmup_teacher_temp_epochs)),
                student_temp=float(m.student_temp), center_momentum=float(m.center_momentum))
            self.momentum_base = float(m.momentum_teacher)
        else:
            raise ValueError(f"lightly has no {self.name}")
        if self.name in ("byol", "dino"):  # the EMA target / teacher: backbone and projector, the online weights
            self.target_encoder = copy.deepcopy(self.encoder)
            # a new head loaded with the online one's weights (a weight-normalised layer cannot be deep-copied)
            self.target_projector = copy.deepcopy(self.projector) if self.name == "byol" else lm.DINOProjectionHead(
                d, int(w["hidden"]), int(w["bottleneck"]), int(w["out"]))
            self.target_projector.load_state_dict(self.projector.state_dict())
            deactivate_requires_grad(self.target_encoder)
            deactivate_requires_grad(self.target_projector)

    def loss(self, views: list[torch.Tensor], step: int) -> torch.Tensor:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        epoch = step // self.per_epoch
        b = views[0].shape[0]
        if self.name in ("byol", "dino"):  # lightly's examples update the target at the start of the step
            momentum = cosine_schedule(step, self.total, self.momentum_base, 1.0)
            update_momentum(self.encoder, self.target_encoder, m=momentum)
            update_momentum(self.projector, self.target_projector, m=momentum)
        if self.name in ("simclr", "barlow_twins", "vicreg"):
            z = self.projector(self.encoder.features(torch.cat(views)))
            return self.criterion(z[:b], z[b:])
        if self.name in ("simsiam", "byol"):
            z = self.projector(self.encoder.features(torch.cat(views)))
            p = self.predictor(z)
            if self.name == "byol":
                with torch.no_grad():
                    z = self.target_projector(self.target_encoder.features(torch.cat(views)))
            z = z.detach()
            return 0.5 * (self.criterion(p[:b], z[b:]) + self.criterion(p[b:], z[:b]))
        features = multi_crop_features(self.encoder, views)  # same-resolution views in one batch, as sslbench
        if self.name == "swav":
            self.prototypes.normalize()
            z = F.normalize(self.projector(torch.cat(features)), dim=1)
            scores = list(self.prototypes(z, step).chunk(len(views)))
            return self.criterion(scores[: self.n_global], scores[self.n_global :])
        # dino: the teacher sees the global crops, the student every crop
        student = list(self.projector(torch.cat(features)).chunk(len(views)))
        with torch.no_grad():
            t = self.target_projector(self.target_encoder.features(torch.cat(views[: self.n_global])))
        return self.criterion(list(t.chunk(self.n_global)), student, epoch=epoch)

    def after_backward(self, step: int) -> None:
        if self.name == "dino":
            self.projector.cancel_last_layer_gradients(current_epoch=step // self.per_epoch)


# ---------------------------------------------------------------------------------------------- the runs


@dataclass
class Result:
    method: str
    impl: str  # ours | lightly
    seed: int
    step: int
    probe: float  # val accuracy of the logistic probe
    loss: float  # mean SSL loss of the steps since the previous probe (nan at step 0)
    seconds: float


def run_one(cfg: Any, impl: str, seed: int, steps: list[int], train: tuple[torch.Tensor, np.ndarray],
            val: tuple[torch.Tensor, np.ndarray], probe_train: tuple[torch.Tensor, np.ndarray], heads: str,
            max_iter: int) -> list[Result]:
    batch = int(cfg.pretrain.batch_size)
    total, per_epoch = max(steps), len(train[1]) // batch
    warmup = warmup_steps(optim_config(cfg), per_epoch, total)
    torch.manual_seed(seed)  # the backbone's initial weights: the same on both sides (each builds it first)
    model: Any
    if impl == "ours":
        model = build_method(cfg)
        model.view_seed = seed
        attach_clock(model, per_epoch, total)
        opt, sched = model.optimizer_and_schedule(total, warmup)
    else:
        model = LightlyModel(cfg, heads, per_epoch, total)
        views_fn = instantiate(views_config(cfg), _convert_="all")
        _Clock.step, _Clock.per_epoch = 0, max(1, per_epoch)
        params = [p for p in model.parameters() if p.requires_grad]
        opt, sched = build_optimizer(params, [], optim_config(cfg), batch, total, warmup)
    prepare_module(model, channels_last=bool(cfg.pretrain.channels_last), compile_backend=None)
    model.train()
    rng = np.random.default_rng(seed)
    name = str(cfg.method.name)
    start = time.perf_counter()
    results = [Result(name, impl, seed, 0, probe(model, probe_train, val, max_iter), float("nan"), 0.0)]
    losses: list[float] = []
    while _Clock.step < total:
        order = rng.permutation(len(train[1]))
        for k in range(0, len(order) - batch + 1, batch):
            idx = order[k : k + batch]
            if impl == "ours":
                losses.append(train_step(model, opt, sched, train[0][idx], torch.from_numpy(train[1][idx])))
            else:
                s = _Clock.step
                # the stage's reseeding (view_seed, step, rank 0): the same augmentations as ours at this step
                state = np.random.SeedSequence([seed, s, 0]).generate_state(2)
                torch.manual_seed(int(state[0]) << 32 | int(state[1]))
                images = train[0][idx].permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
                with torch.no_grad():
                    views = views_fn(images.div_(255))
                loss = model.loss(views, s)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"lightly {name}: non-finite loss {loss.item()} at step {s}")
                opt.zero_grad()
                loss.backward()
                model.after_backward(s)
                opt.step()
                sched.step()
                losses.append(float(loss.item()))
                _Clock.step += 1
            if _Clock.step in steps:
                acc = probe(model, probe_train, val, max_iter)
                results.append(Result(name, impl, seed, _Clock.step, acc, float(np.mean(losses)),
                                      time.perf_counter() - start))
                print(f"  {name:13s} {impl:7s} seed {seed} step {_Clock.step:5d} loss {np.mean(losses):8.4f} "
                      f"probe {acc:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
                losses.clear()
            if _Clock.step >= total:
                break
    return results


def table(results: list[Result], n_val: int) -> list[dict[str, Any]]:
    """One row per (step, method): mean probe of each side over seeds, the difference and its noises."""
    rows = []
    for step in sorted({r.step for r in results}):
        for method in dict.fromkeys(r.method for r in results):
            by = {impl: {r.seed: r for r in results if r.method == method and r.step == step and r.impl == impl}
                  for impl in ("ours", "lightly")}
            seeds = sorted(set(by["ours"]) & set(by["lightly"]))
            if not seeds:
                continue
            ours = np.array([by["ours"][s].probe for s in seeds])
            theirs = np.array([by["lightly"][s].probe for s in seeds])
            diff = ours - theirs
            n = len(seeds)
            binom = math.sqrt(float(np.mean(ours * (1 - ours) + theirs * (1 - theirs))) / n_val / n)
            rows.append({
                "step": step, "method": method, "seeds": seeds, "ours": ours.tolist(), "lightly": theirs.tolist(),
                "ours_mean": float(ours.mean()), "lightly_mean": float(theirs.mean()), "diff": float(diff.mean()),
                "seed_se": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else None, "binomial_se": binom,
                "loss_ours": float(np.mean([by["ours"][s].loss for s in seeds])),
                "loss_lightly": float(np.mean([by["lightly"][s].loss for s in seeds])),
            })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'step':>5s} {'method':13s} {'ours':>6s} {'lightly':>7s} {'diff':>7s} {'seed_se':>7s} {'binom_se':>8s}"
          f"  per seed (ours/lightly)")
    for r in rows:
        se = "-" if r["seed_se"] is None else f"{r['seed_se']:.3f}"
        per = " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(r["ours"], r["lightly"], strict=True))
        print(f"{r['step']:5d} {r['method']:13s} {r['ours_mean']:6.3f} {r['lightly_mean']:7.3f} {r['diff']:+7.3f} "
              f"{se:>7s} {r['binomial_se']:8.3f}  {per}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", default="300,1000", help="step counts to probe at (the schedule spans the largest)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--heads", choices=("lightly", "ours"), default="lightly",
                        help="lightly's head widths: those of lightly's examples (lightly) or sslbench's (ours)")
    parser.add_argument("--data", default="data")
    parser.add_argument("--probe-train", type=int, default=0, help="train images of the probe (0: all)")
    parser.add_argument("--probe-iter", type=int, default=300, help="max_iter of the logistic regression")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 seed, a 200-image probe of 50 iterations")
    parser.add_argument("--out", help="write the results and the table here (JSON)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="no training: print the table of the results in these --out files (e.g. one per seed)")
    args, overrides = parser.parse_known_args()
    if args.merge:
        loaded = [json.loads(Path(f).read_text()) for f in args.merge]
        merged = [Result(**r) for payload in loaded for r in payload["results"]]
        print_table(table(merged, int(loaded[0]["n_val"])))
        return
    if args.smoke:
        args.steps, args.seeds, args.probe_train, args.probe_iter = "3", "0", 200, 50
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"not implemented by lightly or unknown: {sorted(unknown)} (choose from {METHODS})")
    steps = sorted({int(s) for s in args.steps.split(",")})
    seeds = [int(s) for s in args.seeds.split(",")]
    results: list[Result] = []
    t0 = time.perf_counter()
    with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
        cfgs = {m: compose("pretrain", [f"method={m}", *overrides]) for m in methods}
    first = cfgs[methods[0]]
    train, val = load_split(args.data, first, first.dataset.train), load_split(args.data, first, first.dataset.val)
    probe_train = train if not args.probe_train else (train[0][: args.probe_train], train[1][: args.probe_train])
    if args.smoke:
        val = (val[0][:100], val[1][:100])
    print(f"parity: {len(train[1])} train images, probe on {len(probe_train[1])} train / {len(val[1])} val; "
          f"steps {steps}, seeds {seeds}, heads {args.heads}, overrides {overrides}", flush=True)
    rows: list[dict[str, Any]] = []
    for seed in seeds:  # seed-major: an interrupted run still covers every method
        for method in methods:
            for impl in ("ours", "lightly"):
                results.extend(run_one(cfgs[method], impl, seed, steps, train, val, probe_train, args.heads,
                                       args.probe_iter))
            rows = table(results, len(val[1]))
            if args.out:  # rewritten after every pair of runs
                out = Path(args.out)
                out.parent.mkdir(parents=True, exist_ok=True)
                payload = {"steps": steps, "seeds": seeds, "heads": args.heads, "overrides": overrides,
                           "n_val": len(val[1]), "results": [asdict(r) for r in results], "table": rows}
                out.write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n")
    print_table(rows)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
