"""Multi-process correctness of every method in conf/method/ (the other helpers' methods are covered automatically).

Two CPU processes (gloo, torch.multiprocessing spawn), each on half of a batch, must give the same parameter gradients
as one process on the whole batch, once the per-rank gradients are averaged as DDP does. Configuration:
- BN-free: every BatchNorm is put in eval mode (running statistics), because SyncBatchNorm only runs on GPUs; the
  test then checks what the losses gather (negatives, batch statistics, Sinkhorn marginals, centres);
- the views are drawn once for the whole batch and each rank takes its half, so both settings see the same crops;
- Gaussian sampling noise (Bayes-H/Z) is switched to zero (`torch.randn*` patched), since the two halves cannot draw
  the same noise as the whole; the test checks the gathering, not the sampler;
- 16 px views, batch 8, no Trainer (global step 0); float32, so the tolerance is 2e-3 of the gradient scale.
The processes are spawned once and loop over all methods, to pay the import cost once.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sslbench.training import config as pretrain

CONF = Path(pretrain.__file__).parents[1] / "conf" / "method"
METHODS = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem not in ("random_init", "published"))
BATCH, SIZE = 8, 16


_CONFIGS: dict[str, Any] = {}


def _build(method: str) -> tuple[Any, list[torch.Tensor], torch.Tensor]:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    if method not in _CONFIGS:
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="sslbench.conf", version_base="1.3"):
            _CONFIGS[method] = compose("pretrain", [f"method={method}", f"dataset.image_size={SIZE}"])
    cfg = _CONFIGS[method]
    torch.manual_seed(0)
    build = instantiate(cfg.method.module, _partial_=True, _convert_="all")
    module = build(encoder=pretrain.encoder_spec(cfg), views=instantiate(pretrain.views_config(cfg), _convert_="all"),
                   num_classes=10, optim=pretrain.optim_config(cfg), batch_size=BATCH)
    module.train()
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=gen)
    labels = torch.randint(0, 10, (BATCH,), generator=gen)
    torch.manual_seed(2)
    with torch.no_grad():
        views = module.views(images)
    return module, views, labels


def _grads(module: Any, views: list[torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    module.zero_grad(set_to_none=True)
    module.loss_step(views, labels).loss.backward()
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _zero_noise() -> None:
    def zeros(*args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.pop("generator", None)
        return torch.zeros(*args, **kwargs)

    torch.randn = zeros  # type: ignore[assignment]
    torch.randn_like = torch.zeros_like  # type: ignore[assignment]


def _worker(rank: int, world: int, port: int, methods: list[str], out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    _zero_noise()
    reference = {}
    for method in methods:  # one process, whole batch (torch.distributed not initialised)
        module, views, labels = _build(method)
        reference[method] = _grads(module, views, labels)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    report: dict[str, Any] = {}
    half = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for method in methods:
        try:
            module, views, labels = _build(method)
            grads = _grads(module, [v[half] for v in views], labels[half])
            ref = reference[method]
            missing = sorted(set(ref) ^ set(grads))
            # error relative to the parameter's gradient scale, floored at 1e-3 of the largest gradient of the model
            # (some true gradients are ~0, e.g. VICReg's last bias, where only float noise remains)
            floor = 1e-3 * max(float(r.abs().max()) for r in ref.values())
            worst = 0.0
            for name, g in grads.items():
                dist.all_reduce(g)
                g /= world  # what DDP does
                if name in ref:
                    scale = max(float(ref[name].abs().max()), floor)
                    worst = max(worst, float((g - ref[name]).abs().max()) / scale)
            report[method] = {"rel_err": worst, "missing": missing, "n": len(grads)}
        except Exception as err:  # reported per method by the test
            report[method] = {"error": f"{type(err).__name__}: {err}"}
    if rank == 0:
        Path(out).write_text(json.dumps(report))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp") / "report.json"
    mp.spawn(_worker, args=(2, _free_port(), METHODS, str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


@pytest.mark.skipif(sys.platform == "win32", reason="gloo spawn test targets POSIX")
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_give_the_single_process_gradients(report: dict[str, Any], method: str) -> None:
    result = report[method]
    assert "error" not in result, result.get("error")
    assert not result["missing"], f"parameters with a gradient in only one setting: {result['missing']}"
    assert result["n"] > 0
    # float32 sums in another order differ by ~1e-4 of the gradient scale; a gather without gradients or a wrong
    # world-size scaling gives errors of 0.5 or more
    assert result["rel_err"] < 2e-3, f"{method}: relative gradient error {result['rel_err']:.2e}"
