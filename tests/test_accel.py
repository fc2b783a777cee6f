"""Device, precision and process settings (`sslbench.accel`): bad input stops before any work with the key and the
fix; the GPU model options keep the weights' meaning; the CPU SyncBatchNorm equals one process's BatchNorm."""

from __future__ import annotations

import copy
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sslbench.accel import (
    CPUSyncBatchNorm,
    Hardware,
    convert_cpu_sync_batchnorm,
    prepare_module,
    release_module,
    resolve_settings,
    revert_cpu_sync_batchnorm,
)
from sslbench.errors import UserError

CPU = Hardware()
ONE_A100 = Hardware(cuda_devices=1, cuda_capability=(8, 0), cuda_name="A100")
TWO_V100 = Hardware(cuda_devices=2, cuda_capability=(7, 0), cuda_name="V100")
DEFAULTS: dict[str, Any] = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto",
                            "precision": "32-true", "sync_batchnorm": True, "batch_size": 64}


def settings(hardware: Hardware = CPU, env: dict[str, str] | None = None, **kw: Any) -> Any:
    return resolve_settings(**{**DEFAULTS, **kw}, hardware=hardware, env=env or {})


def test_defaults_are_one_cpu_process_in_fp32() -> None:
    s = settings()
    assert (s.accelerator, s.devices, s.num_nodes, s.strategy, s.precision, s.sync_batchnorm) == (
        "cpu", 1, 1, "auto", "32-true", "none")
    assert s.trainer_kwargs()["sync_batchnorm"] is False


def test_auto_values_resolve_against_the_hardware() -> None:
    assert settings(accelerator="auto").accelerator == "cpu"
    s = settings(TWO_V100, accelerator="auto", devices="auto")
    assert (s.accelerator, s.devices, s.strategy, s.sync_batchnorm) == ("gpu", 2, "ddp", "torch")
    assert settings(TWO_V100, accelerator="cuda", devices=-1).devices == 2
    assert settings(accelerator="cpu", devices="auto").devices == 1
    assert settings(ONE_A100, accelerator="gpu", precision="bf16").precision == "bf16-mixed"
    assert settings(ONE_A100, accelerator="gpu", precision="bf16-mixed").trainer_kwargs()["sync_batchnorm"] is False


def test_two_cpu_processes_use_ddp_and_the_cpu_sync_batchnorm() -> None:
    s = settings(devices=2, strategy="ddp")
    assert (s.world_size, s.sync_batchnorm) == (2, "cpu")
    assert s.trainer_kwargs()["sync_batchnorm"] is False  # torch's SyncBatchNorm would fail on CPU tensors
    assert settings(devices=2, sync_batchnorm=False).sync_batchnorm == "none"


@pytest.mark.parametrize(("hardware", "kw", "message"), [
    (ONE_A100, {"accelerator": "gpu", "devices": 2}, r"pretrain.devices=2 but this machine has 1 visible GPU "
                                                     r"\(A100\): set pretrain.devices=1"),
    (CPU, {"accelerator": "gpu"}, r"pretrain.accelerator=gpu but no CUDA GPU is visible.*pretrain.accelerator=cpu"),
    (CPU, {"accelerator": "tpu"}, r"pretrain.accelerator='tpu' is unknown; valid: cpu, gpu, cuda, auto"),
    (CPU, {"strategy": "horovod"}, r"pretrain.strategy='horovod' is not supported; valid: auto, ddp"),
    (CPU, {"strategy": "ddp_spawn"}, r"pretrain.strategy='ddp_spawn' is not supported \(ddp_spawn .*use ddp\)"),
    (TWO_V100, {"accelerator": "gpu", "precision": "bf16-mixed"},
     r"pretrain.precision=bf16-mixed needs .* V100 has 7.0: set pretrain.precision=16-mixed .* or 32-true"),
    (CPU, {"precision": "16-mixed"}, r"16-mixed \(fp16 autocast\) runs only on GPUs: on CPU use "
                                     r"pretrain.precision=bf16-mixed or 32-true"),
    (CPU, {"precision": "64-true"}, r"pretrain.precision='64-true' is unknown; valid: 32-true, bf16-mixed"),
    (CPU, {"devices": "0,1"}, r"pretrain.devices='0,1' is invalid.*CUDA_VISIBLE_DEVICES"),
    (CPU, {"devices": 0}, r"pretrain.devices=0 is invalid"),
    (CPU, {"devices": -1}, r"pretrain.devices=-1 is invalid"),  # every GPU, but this is a CPU run
    (CPU, {"num_nodes": 0}, r"pretrain.num_nodes=0 is invalid"),
    (CPU, {"devices": 3, "batch_size": 64}, r"pretrain.batch_size=64 is not divisible by the 3 processes"),
    (CPU, {"num_nodes": 2}, r"pretrain.num_nodes=2 needs a launcher.*srun \(see slurm/pretrain.sbatch\)"),
    (Hardware(cxx_compiler=False), {"compile": True}, r"pretrain.compile=true on CPU needs a C\+\+ compiler"),
    (Hardware(cuda_devices=1, cuda_capability=(9, 0), triton=False), {"accelerator": "gpu", "compile": True},
     r"pretrain.compile=true on GPU needs the `triton` package"),
])
def test_bad_settings_name_the_key_and_the_fix(hardware: Hardware, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        settings(hardware, **kw)


def test_slurm_job_shape_must_match_devices_and_nodes() -> None:
    env = {"SLURM_NTASKS": "8", "SLURM_JOB_NAME": "pretrain", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2"}
    four = Hardware(cuda_devices=4, cuda_capability=(9, 0))
    s = settings(four, env, accelerator="gpu", devices=4, num_nodes=2, precision="bf16-mixed", batch_size=256)
    assert (s.world_size, s.strategy, s.sync_batchnorm) == (8, "ddp", "torch")
    with pytest.raises(UserError, match=r"pretrain.devices=2 but the SLURM job has --ntasks-per-node=4"):
        settings(four, env, accelerator="gpu", devices=2, num_nodes=2)
    with pytest.raises(UserError, match=r"pretrain.num_nodes=1 but the SLURM job has --nodes=2"):
        settings(four, env, accelerator="gpu", devices=4, num_nodes=1)
    # an interactive allocation (`srun --job-name=interactive`) is not a launcher: the user starts processes
    with pytest.raises(UserError, match="needs a launcher"):
        settings(four, {**env, "SLURM_JOB_NAME": "interactive"}, accelerator="gpu", devices=4, num_nodes=2)
    torchrun = {"RANK": "0", "GROUP_RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4"}
    assert settings(four, torchrun, accelerator="gpu", devices=4, num_nodes=2).world_size == 8


def test_the_stage_refuses_bad_settings_before_any_work(compose: Callable[..., Any], tmp_path: Path) -> None:
    from sslbench.stages import pretrain

    cfg = compose("pretrain", [f"paths.data={tmp_path / 'nothing'}", f"paths.models={tmp_path / 'models'}",
                               "pretrain.accelerator=gpu", "pretrain.devices=1000"])
    # the data folder does not exist either: the settings are checked first
    with pytest.raises(UserError, match=r"pretrain\.(accelerator|devices)"):
        pretrain.run(cfg)
    assert not (tmp_path / "models").exists()


# ----------------------------------------------------------------------------------------------- model options


def _encoder() -> nn.Module:
    from sslbench.models.encoder import Encoder, EncoderSpec

    torch.manual_seed(0)
    return Encoder(EncoderSpec(backbone="convnet", width=8, image_size=16)).eval()


def test_channels_last_and_compile_keep_outputs_and_state_dict_keys() -> None:
    reference, module = _encoder(), _encoder()
    x = torch.rand(4, 3, 16, 16)
    prepare_module(module, channels_last=True, compile_backend="eager")  # eager: the wiring, without a compiler
    conv = next(m for m in module.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert module.backbone._compiled_call_impl is not None
    with torch.no_grad():
        torch.testing.assert_close(module(x).embedding, reference(x).embedding, rtol=1e-5, atol=1e-5)
    assert list(module.state_dict()) == list(reference.state_dict())
    release_module(module)
    assert module.backbone._compiled_call_impl is None
    assert conv.weight.is_contiguous()


def test_batchnorm_swap_and_back_keeps_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(4 * 9, affine=False))
    plain = copy.deepcopy(model)
    weight = model[1].weight
    synced = convert_cpu_sync_batchnorm(model)
    assert isinstance(synced[1], CPUSyncBatchNorm) and isinstance(synced[3], CPUSyncBatchNorm)
    assert synced[1].weight is weight
    x = torch.rand(5, 3, 3, 3)
    # without torch.distributed it is a plain BatchNorm (batch statistics in training, running ones in eval)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced.eval()(x), plain.eval()(x))
    back = revert_cpu_sync_batchnorm(synced)
    assert type(back[1]) is nn.BatchNorm2d and type(back[3]) is nn.BatchNorm1d and back[1].weight is weight


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bn_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 3, 3, generator=gen) * 3 + 1
    w = torch.randn(8, 4, 3, 3, generator=gen)  # a fixed linear loss of the outputs
    with torch.no_grad():
        bn_weight, bn_bias = torch.rand(4, generator=gen) + 0.5, torch.randn(4, generator=gen)

    def run(module: nn.Module, inputs: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        inputs = inputs.clone().requires_grad_(True)
        y = module(inputs)
        (y * weights).sum().backward()
        return {"y": y.detach(), "dx": inputs.grad, "dw": module.weight.grad, "db": module.bias.grad,
                "mean": module.running_mean.clone(), "var": module.running_var.clone()}

    def fresh() -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            bn.weight.copy_(bn_weight)
            bn.bias.copy_(bn_bias)
        return bn

    reference = run(fresh(), x, w)  # one process, whole batch
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    half = slice(rank * 4, rank * 4 + 4)
    got = run(convert_cpu_sync_batchnorm(fresh()), x[half], w[half])
    for key in ("dw", "db"):  # each rank holds the gradient of its own share of the (summed) loss
        dist.all_reduce(got[key])
    errors = {key: float((got[key] - (reference[key][half] if key in ("y", "dx") else reference[key])).abs().max())
              for key in got}
    worst = torch.tensor(list(errors.values()))
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    if rank == 0:
        Path(out).write_text(json.dumps(dict(zip(errors, worst.tolist(), strict=True))))
    dist.destroy_process_group()


def test_cpu_sync_batchnorm_over_two_processes_equals_one_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = tmp_path / "errors.json"
    mp.spawn(_bn_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    errors = json.loads(out.read_text())
    assert set(errors) == {"y", "dx", "dw", "db", "mean", "var"}
    # float32 sums in another order: ~1e-6; per-process statistics instead of global ones give errors ~0.1-1
    assert max(errors.values()) < 1e-4, errors


# ----------------------------------------------------------------------------------------------- evaluation device


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from sslbench.accel import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(UserError, match="device=cuda was asked for but no CUDA device is available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda"
