"""Device, precision and process settings of a training run, checked before any work starts (docs/gpu.md).

`resolve_settings(...)` is a pure function of the requested `pretrain.*` values, the machine (`Hardware`, detected
once by `Hardware.detect()`) and the environment variables of a cluster launcher; it returns the `RunSettings` that
build the Lightning `Trainer`, or raises a `UserError` naming the key and the fix:
- `accelerator`: `cpu`, `gpu` (alias `cuda`) or `auto` (gpu when a CUDA device is visible, else cpu);
- `devices`: processes per node: a count >= 1, `-1` (every visible GPU) or `auto` (every visible GPU; 1 on CPU). A
  list of GPU ids is refused: pick GPUs with `CUDA_VISIBLE_DEVICES`;
- `strategy`: `auto` (DDP when devices x num_nodes > 1), `ddp`, `ddp_find_unused_parameters_true`. `ddp_spawn` is
  refused: the spawned processes would train copies whose history never reaches the process that writes outputs;
- `precision`: `32-true`, `bf16-mixed` (GPU: compute capability >= 8.0, Ampere or newer; CPU: autocast to bfloat16,
  correct everywhere and fast only on CPUs with native bfloat16), `16-mixed` (GPU only, fp16 with loss scaling);
- `num_nodes > 1` needs a launcher that tells each node who it is (SLURM's `srun`, `torchrun`, or MASTER_ADDR +
  NODE_RANK); without one every node would wait for the others forever. Under SLURM, `--ntasks-per-node` must equal
  `devices` and `--nodes` must equal `num_nodes` (see `slurm/pretrain.sbatch`);
- the global batch must split evenly over the processes.

SyncBatchNorm (`sync_batchnorm`): BatchNorm statistics over the global batch when several processes train. torch's
`SyncBatchNorm` runs only on GPUs (its kernels are CUDA-only), so on CPU processes (gloo) the stage swaps in
`CPUSyncBatchNorm` below through a Lightning layer-sync plugin (as `Trainer(sync_batchnorm=True)` does on GPUs); it
all-reduces the per-channel sums with autograd, so the forward and backward of a multi-process run equal the
single-process ones up to float summation order.

`prepare_module` applies the GPU options that touch the model: `channels_last` (convolution weights in NHWC, so that
activations follow; faster convolutions on tensor-core GPUs) and `torch.compile` of every backbone (`nn.Module.compile`,
which keeps the state_dict keys, so checkpoints and `encoder.pt` are unchanged); `release_module` undoes both before
the encoder is evaluated on CPU and saved.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from sslbench.errors import UserError

ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


@dataclass(frozen=True)
class Hardware:
    """What the machine offers. `cuda_capability` is that of device 0, (0, 0) without CUDA."""

    cuda_devices: int = 0
    cuda_capability: tuple[int, int] = (0, 0)
    cuda_name: str = ""
    cxx_compiler: bool = True  # inductor's CPU backend compiles C++
    triton: bool = True  # inductor's GPU backend

    @classmethod
    def detect(cls) -> Hardware:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return cls(
            cuda_devices=n,
            cuda_capability=torch.cuda.get_device_capability(0) if n else (0, 0),
            cuda_name=torch.cuda.get_device_name(0) if n else "",
            cxx_compiler=shutil.which(os.environ.get("CXX", "g++")) is not None,
            triton=importlib.util.find_spec("triton") is not None,
        )

    @property
    def cuda_bf16(self) -> bool:
        """Native bfloat16 (Ampere, sm_80, or newer); older GPUs only emulate it, slower than fp32."""
        return self.cuda_capability >= (8, 0)


@dataclass(frozen=True)
class RunSettings:
    """Resolved, checked settings. `sync_batchnorm` is `none`, `torch` (GPU) or `cpu` (`CPUSyncBatchNorm`)."""

    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    precision: str
    sync_batchnorm: str
    channels_last: bool
    compile: bool

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def trainer_kwargs(self) -> dict[str, Any]:
        """The arguments of `lightning.Trainer` for device, processes and precision (with `sync_batchnorm == "cpu"`
        the caller adds a layer-sync plugin that applies `convert_cpu_sync_batchnorm`)."""
        return {"accelerator": self.accelerator, "devices": self.devices, "num_nodes": self.num_nodes,
                "strategy": self.strategy, "precision": self.precision,
                "sync_batchnorm": self.sync_batchnorm == "torch"}


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _launcher(env: Mapping[str, str]) -> str | None:
    """The cluster launcher that started this process, as Lightning detects it."""
    if "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "slurm"
    if all(k in env for k in ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")):
        return "torchrun"
    if "MASTER_ADDR" in env and "NODE_RANK" in env:
        return "manual"
    return None


def resolve_settings(
    *, accelerator: Any, devices: Any, num_nodes: Any, strategy: Any, precision: Any, sync_batchnorm: bool,
    channels_last: bool = False, compile: bool = False, batch_size: int, hardware: Hardware,
    env: Mapping[str, str] | None = None,
) -> RunSettings:
    """Check the requested `pretrain.*` device settings against `hardware`; see the module docstring.

    Raises:
        UserError: naming the offending `pretrain.<key>` and how to fix it.
    """
    env = dict(os.environ) if env is None else env
    gpus = hardware.cuda_devices
    acc = str(accelerator).lower()
    if acc not in ACCELERATORS:
        raise UserError(f"pretrain.accelerator={accelerator!r} is unknown; valid: {', '.join(ACCELERATORS)}")
    if acc == "auto":
        acc = "gpu" if gpus else "cpu"
    acc = "gpu" if acc == "cuda" else acc
    if acc == "gpu" and not gpus:
        raise UserError("pretrain.accelerator=gpu but no CUDA GPU is visible (torch.cuda.is_available() is False): "
                        "set pretrain.accelerator=cpu (or auto), or run on a GPU machine")

    n = _int(devices)
    if str(devices) == "auto":
        n = gpus if acc == "gpu" else 1
    elif n == -1 and acc == "gpu":
        n = gpus
    if n is None or n < 1:
        raise UserError(f"pretrain.devices={devices!r} is invalid: give a number of processes per node (>= 1), "
                        "-1 or auto (every visible GPU); choose GPUs with CUDA_VISIBLE_DEVICES")
    if acc == "gpu" and n > gpus:
        raise UserError(f"pretrain.devices={n} but this machine has {gpus} visible GPU{'s' * (gpus != 1)} "
                        f"({hardware.cuda_name}): set pretrain.devices={gpus} (or -1 for all of them)")
    nodes = _int(num_nodes)
    if nodes is None or nodes < 1:
        raise UserError(f"pretrain.num_nodes={num_nodes!r} is invalid: give a number of machines >= 1")

    strat = str(strategy)
    if strat not in STRATEGIES:
        hint = (" (ddp_spawn trains in spawned copies whose history never reaches the process that writes the "
                "outputs; use ddp)" if strat.startswith("ddp_spawn") else "")
        raise UserError(f"pretrain.strategy={strategy!r} is not supported{hint}; valid: {', '.join(STRATEGIES)}")
    world = n * nodes
    if strat == "auto":
        strat = "ddp" if world > 1 else "auto"

    prec = _PRECISION_ALIASES.get(str(precision), str(precision))
    if prec not in PRECISIONS:
        raise UserError(f"pretrain.precision={precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    if prec == "16-mixed" and acc == "cpu":
        raise UserError("pretrain.precision=16-mixed (fp16 autocast) runs only on GPUs: on CPU use "
                        "pretrain.precision=bf16-mixed or 32-true")
    if prec == "bf16-mixed" and acc == "gpu" and not hardware.cuda_bf16:
        major, minor = hardware.cuda_capability
        raise UserError(f"pretrain.precision=bf16-mixed needs a GPU with native bfloat16 (compute capability >= 8.0, "
                        f"Ampere or newer); {hardware.cuda_name or 'this GPU'} has {major}.{minor}: set "
                        "pretrain.precision=16-mixed (fp16 with loss scaling) or 32-true")

    if compile and acc == "cpu" and not hardware.cxx_compiler:
        raise UserError("pretrain.compile=true on CPU needs a C++ compiler (g++ or $CXX) for torch.compile's "
                        "inductor backend: install one or set pretrain.compile=false")
    if compile and acc == "gpu" and not hardware.triton:
        raise UserError("pretrain.compile=true on GPU needs the `triton` package (shipped with CUDA builds of "
                        "torch): install it or set pretrain.compile=false")

    launcher = _launcher(env)
    if nodes > 1 and launcher is None:
        raise UserError(f"pretrain.num_nodes={nodes} needs a launcher that starts one process per device on every "
                        "node and tells it its rank: SLURM's srun (see slurm/pretrain.sbatch), torchrun, or "
                        "MASTER_ADDR + NODE_RANK set on each node; else set pretrain.num_nodes=1")
    if launcher == "slurm":
        for key, value, slurm_key, flag in (("devices", n, "SLURM_NTASKS_PER_NODE", "--ntasks-per-node"),
                                            ("num_nodes", nodes, "SLURM_NNODES", "--nodes")):
            given = env.get(slurm_key, "")
            digits = given.split("(")[0]
            if digits.isdigit() and int(digits) != value:
                raise UserError(f"pretrain.{key}={value} but the SLURM job has {flag}={digits}: make them equal "
                                "(one task per device on every node, see slurm/pretrain.sbatch)")

    if batch_size % world:
        raise UserError(f"pretrain.batch_size={batch_size} is not divisible by the {world} processes "
                        f"(pretrain.devices x pretrain.num_nodes): choose a multiple of {world}")
    sync = "none"
    if sync_batchnorm and world > 1:
        sync = "torch" if acc == "gpu" else "cpu"
    return RunSettings(acc, n, nodes, strat, prec, sync, bool(channels_last), bool(compile))


# ----------------------------------------------------------------------------------------------- model options


def prepare_module(module: nn.Module, *, channels_last: bool, compile_backend: str | None) -> None:
    """In place: NHWC convolution weights (`channels_last`) and `nn.Module.compile` of the backbone of every
    `Encoder` inside `module` (the student and any EMA teacher), with `compile_backend` (`inductor`; None = no)."""
    from sslbench.models.encoder import Encoder

    if channels_last:
        module.to(memory_format=torch.channels_last)
    if compile_backend is not None:
        for sub in module.modules():
            if isinstance(sub, Encoder):
                sub.backbone.compile(backend=compile_backend)


def release_module(module: nn.Module) -> None:
    """Undo `prepare_module`: drop compiled forwards and return to contiguous (NCHW) weights."""
    for sub in module.modules():
        if getattr(sub, "_compiled_call_impl", None) is not None:
            sub._compiled_call_impl = None
    module.to(memory_format=torch.contiguous_format)


# ----------------------------------------------------------------------------------------------- CPU SyncBatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients over processes (each rank back-propagates its own
    loss; the sum of the ranks' losses depends on every rank's input). Written here because
    `torch.distributed.nn.functional.all_reduce` warns as deprecated from torch 2.14 and its replacement lives in a
    private module (`torch.distributed._functional_collectives`); this works the same on torch 2.11 to 2.14."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the union of the batches of all processes, for CPU tensors (gloo).

    In training with torch.distributed initialised and several processes, the per-channel sum, then the sum of
    squared deviations from the global mean, are all-reduced by `_AllReduceSum`, whose backward all-reduces the
    gradients: the same statistics and gradients as one process over the whole
    batch (and as torch's `SyncBatchNorm` on GPUs). Running statistics use the global mean and unbiased variance.
    Otherwise (eval, one process) it is a plain BatchNorm. Inputs (B, C, *), any number of trailing dimensions.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (B, C, ...), got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64)
        dist.all_reduce(count)
        total = float(count.item())
        mean = _AllReduceSum.apply(x.sum(dims)) / total
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims)) / total
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean.detach().to(self.running_mean), alpha=f)
                unbiased = var.detach() * total / max(total - 1, 1)
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var), alpha=f)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:  # None for a BatchNorm with a scale and no shift (SimCLR's projector output)
            out = out + self.bias.view(shape)
        return out.to(input.dtype)


def convert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm inside `module` becomes a `CPUSyncBatchNorm` with the same parameters and buffers."""
    return _swap_batchnorm(module, to_sync=True)


def revert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo `convert_cpu_sync_batchnorm` (the original BatchNorm classes, the same parameters and buffers)."""
    return _swap_batchnorm(module, to_sync=False)


def _swap_batchnorm(module: nn.Module, to_sync: bool) -> nn.Module:
    """Replace every BatchNorm by a `CPUSyncBatchNorm` (or back), keeping the same parameters and buffers."""
    out = module
    is_sync = isinstance(module, CPUSyncBatchNorm)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and to_sync != is_sync:
        cls = CPUSyncBatchNorm if to_sync else getattr(module, "_sslbench_original", nn.BatchNorm2d)
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if to_sync:
            out._sslbench_original = type(module)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _swap_batchnorm(child, to_sync))
    return out



# ----------------------------------------------------------------------------------------------- evaluation device

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """The device of an evaluation (`embed.device`, `probe.device`): `auto` -> `cuda` when available else `cpu`;
    `cuda` without a GPU is a `UserError`."""
    if name not in DEVICES:
        raise UserError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA device is available; use device=auto or cpu")
    return name
