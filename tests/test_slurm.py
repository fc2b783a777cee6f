"""`slurm/pretrain.sbatch`: run with a fake `dvc` and a 2-node x 4-GPU SLURM job's environment, it asks for a DVC
experiment whose settings compose into a pretrain config that the stage's checks accept for that job shape."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sslbench.accel import Hardware
from sslbench.stages import pretrain
from tests.conftest import REPO

SBATCH = REPO / "slurm" / "pretrain.sbatch"
JOB = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
       "SLURM_CPUS_PER_TASK": "8", "SLURM_JOB_NAME": "sslbench-pretrain"}
GPUS = Hardware(cuda_devices=4, cuda_capability=(9, 0), cuda_name="H100")


def _sbatch(tmp_path: Path, *args: str) -> list[str]:
    """Run the template as SLURM would (in the submit directory); returns the arguments it gave `dvc`."""
    bin_dir, submit = tmp_path / "bin", tmp_path / "repo"
    (submit / ".venv" / "bin").mkdir(parents=True)
    (submit / ".venv" / "bin" / "activate").write_text("")
    bin_dir.mkdir()
    fake = bin_dir / "dvc"
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp_path / "dvc_args"}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, **JOB, "SLURM_SUBMIT_DIR": str(submit), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(SBATCH), *args], env=env, check=True, capture_output=True, text=True, timeout=60)
    return (tmp_path / "dvc_args").read_text().splitlines()


def test_template_runs_a_dvc_experiment_with_srun_and_the_job_shape(
    compose: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _sbatch(tmp_path, "pretrain@simclr", "-S", "pretrain.batch_size=512")
    assert args[:3] == ["exp", "run", "pretrain@simclr"]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "-S"]
    values = dict(s.split("=", 1) for s in sets)
    assert values["pretrain.launcher"] == "srun"
    assert (values["pretrain.devices"], values["pretrain.num_nodes"], values["pretrain.num_workers"]) == ("4", "2", "7")
    assert values["pretrain.batch_size"] == "512"  # the caller's options come last and win
    # every other setting is a valid override of the pretrain config, and the stage accepts it for this job
    cfg = compose("pretrain", [s for s in sets if not s.startswith("pretrain.launcher=")])
    for key, value in JOB.items():
        monkeypatch.setenv(key, value)
    settings = pretrain.run_settings(cfg, GPUS)
    assert (settings.accelerator, settings.world_size, settings.strategy) == ("gpu", 8, "ddp")
    assert (settings.precision, settings.sync_batchnorm, settings.channels_last) == ("bf16-mixed", "torch", True)


def test_default_target_is_every_pretrain_stage(tmp_path: Path) -> None:
    assert _sbatch(tmp_path)[:3] == ["exp", "run", "pretrain"]
