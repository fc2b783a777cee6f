"""The pretrain stage on a tiny prepared study: outputs, exact resumption, refusal of a foreign checkpoint,
bad input, and a few optimisation steps lowering every method's loss."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate

from sslbench.errors import UserError
from sslbench.stages import pretrain
from sslbench.training.config import encoder_spec, optim_config, views_config

CONF = Path(pretrain.__file__).parents[1] / "conf" / "method"
ALL_METHODS = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "published")  # published: imported
MINE = ["supervised", "simclr", "simsiam", "byol", "barlow_twins", "vicreg"]
Compose = Callable[..., Any]


def _overrides(data: Path, out: Path, method: str, *extra: str) -> list[str]:
    return [f"method={method}", f"paths.data={data}", f"paths.models={out / 'models'}",
            f"paths.reports={out / 'reports'}", "pretrain.epochs=2", "pretrain.batch_size=64",
            "pretrain.held_batch=64", "pretrain.progress_bar=false",
            "dataset.image_size=16",  # 16 px views of the 32 px tiny data: 4x less compute per step
            *extra]


def _weights(out: Path, method: str) -> dict[str, torch.Tensor]:
    return torch.load(out / "models" / method / "encoder.pt", weights_only=True)


def test_unknown_method_or_backbone_lists_choices(compose: Compose) -> None:
    with pytest.raises(Exception, match="(?s)Could not find 'method/nope'.*simclr"):
        compose("pretrain", ["method=nope"])
    with pytest.raises(Exception, match="(?s)Could not find 'backbone/resnet7'.*convnet"):
        compose("pretrain", ["backbone=resnet7"])


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_config_composes_and_instantiates(compose: Compose, method: str) -> None:
    cfg = compose("pretrain", [f"method={method}"])
    assert cfg.method.name == method
    pretrain.check_config(cfg)
    spec, optim = encoder_spec(cfg), optim_config(cfg)
    views = instantiate(views_config(cfg), _convert_="all")
    build = instantiate(cfg.method.module, _partial_=True, _convert_="all")
    module = build(encoder=spec, views=views, num_classes=10, optim=optim, batch_size=256)
    assert module.encoder.spec == spec


def _log(out: Path, method: str) -> dict[str, str]:
    """The run's DVCLive log, file -> text, without the throughput (a wall-clock measure): `images_per_s.tsv`
    and its key in `metrics.json`."""
    folder = out / "reports" / "pretrain" / "live" / method
    files = {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}
    summary = json.loads(files.pop("metrics.json"))
    summary.pop("images_per_s")
    del files["plots/metrics/images_per_s.tsv"]
    return {**files, "metrics.json": json.dumps(summary, sort_keys=True)}


def _column(text: str) -> list[tuple[int, float]]:
    return [(int(step), float(value)) for step, value in (line.split("\t") for line in text.splitlines()[1:])]


def test_resume_is_exact_and_a_foreign_checkpoint_is_refused(
    compose: Compose, tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 200 images / 64 = 3 steps per epoch, 6 in all; the interrupted run stops mid-epoch 1 (step 4)
    with caplog.at_level(logging.INFO, logger="sslbench.progress"):
        full = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "a", "byol",
                                                           "pretrain.progress_bar=true")))
    # stderr is no terminal here: no bar, a progress line per tenth of the steps (each of the 6 crosses one)
    lines = [r.getMessage() for r in caplog.records if r.name == "sslbench.progress"]
    assert len(lines) == 6 and lines[0].startswith("pretrain@byol: 16 % (1/6 step) in ")
    assert "[epoch 1/2, ssl_loss " in lines[0] and lines[-1].startswith("pretrain@byol: done, 100 % (6/6 step)")
    stopped = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "b", "byol", "pretrain.max_steps=4")))
    assert stopped == {"stopped_at": 4}
    model_b = tmp_path / "b" / "models" / "byol"
    assert (model_b / "last.ckpt").is_file() and not (model_b / "encoder.pt").exists()
    # the killed run had logged a step past its last checkpoint: the resumed run must not continue that log
    curves = tmp_path / "b" / "reports" / "pretrain" / "live" / "byol" / "plots" / "metrics"
    with (curves / "ssl_loss.tsv").open("a") as fh:
        fh.write("5\t99.0\n")
    with pytest.raises(UserError, match=r"another config; differing keys: pretrain.lr_scale \(1.0 -> 2.0\)"):
        pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "b", "byol", "pretrain.lr_scale=2.0")))
    resumed = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "b", "byol")))
    a, b = _weights(tmp_path / "a", "byol"), _weights(tmp_path / "b", "byol")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same log as the uninterrupted run's: every step once, the checkpoint's rows written again first
    log_a, log_b = _log(tmp_path / "a", "byol"), _log(tmp_path / "b", "byol")
    assert log_a == log_b
    assert sorted(log_a) == ["metrics.json", *(f"plots/metrics/{n}.tsv" for n in (
        "effective_rank", "epoch", "feature_std", "lr", "online_top1", "ssl_loss"))]
    assert [s for s, _ in _column(log_a["plots/metrics/ssl_loss.tsv"])] == [1, 2, 3, 4, 5, 6]
    assert [e for _, e in _column(log_a["plots/metrics/epoch.tsv"])] == [0, 0, 0, 1, 1, 1]
    # the collapse indicators of the held batch before the first step and at each epoch end
    assert [s for s, _ in _column(log_a["plots/metrics/feature_std.tsv"])] == [0, 3, 6]
    assert json.loads(log_a["metrics.json"])["step"] == 6
    rate = _column((curves / "images_per_s.tsv").read_text())
    assert [s for s, _ in rate] == [1, 2, 3, 4, 5, 6] and all(v > 0 for _, v in rate)
    assert not (model_b / "last.ckpt").exists() and (model_b / "config.yaml").is_file()
    assert full.keys() == resumed.keys() and full["pretrain/steps"] == 6
    for key in ("pretrain/ssl_loss", "pretrain/feature_std", "pretrain/effective_rank"):
        assert full[key] == resumed[key]
    assert not Path("lightning_logs").exists() and not list(tmp_path.rglob("lightning_logs"))
    assert sorted(p.name for p in (tmp_path / "b" / "reports" / "pretrain").iterdir()) == ["byol.json", "live"]


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` unwritable: permission bits for a normal user; root ignores those, so the immutable flag."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = ["chattr", "-i", str(folder)]
    else:
        pytest.skip("running as root on a filesystem without the immutable flag: cannot make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def test_unwritable_outputs_stop_the_stage_before_training(compose: Compose, tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    encoder = out / "models" / "simclr" / "encoder.pt"
    encoder.parent.mkdir(parents=True)
    encoder.write_bytes(b"the previous encoder")
    reports = out / "reports" / "pretrain"
    reports.mkdir(parents=True)
    with read_only(reports), pytest.raises(UserError, match=r"cannot write .*reports/pretrain/simclr\.json: .*make "
                                                             r"that folder writable"):
        pretrain.run(compose("pretrain", _overrides(tiny_data, out, "simclr")))
    # nothing trained, nothing rewritten, no checkpoint, no log
    assert encoder.read_bytes() == b"the previous encoder" and sorted(os.listdir(encoder.parent)) == ["encoder.pt"]
    assert list(reports.iterdir()) == []


def test_random_init_saves_the_seeded_encoder_with_the_same_metric_keys(
    compose: Compose, tiny_data: Path, tmp_path: Path
) -> None:
    metrics = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path, "random_init")))
    pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "again", "random_init")))
    assert set(metrics) == {f"pretrain/{k}" for k in ("ssl_loss", "online_top1", "images_per_s", "feature_std",
                                                     "effective_rank", "steps", "wall_s")}
    assert metrics["pretrain/ssl_loss"] is None and metrics["pretrain/steps"] == 0
    assert metrics["pretrain/effective_rank"] > 1
    a, b = _weights(tmp_path, "random_init"), _weights(tmp_path / "again", "random_init")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "reports" / "pretrain" / "random_init.json").is_file()
    # its log: the untrained encoder's collapse indicators, at step 0
    live = tmp_path / "reports" / "pretrain" / "live" / "random_init"
    assert sorted(p.relative_to(live).as_posix() for p in live.rglob("*") if p.is_file()) == [
        "metrics.json", "plots/metrics/effective_rank.tsv", "plots/metrics/feature_std.tsv"]
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 0 and round(summary["feature_std"], 5) == metrics["pretrain/feature_std"]


@pytest.mark.parametrize("method", MINE)
def test_a_few_steps_lower_the_loss_on_embedded_data(compose: Compose, tiny_data: Path, method: str) -> None:
    from sslbench.data.splits import open_split

    cfg = compose("pretrain", [f"method={method}", f"paths.data={tiny_data}"])
    torch.manual_seed(0)
    build = instantiate(cfg.method.module, _partial_=True, _convert_="all")
    module = build(encoder=encoder_spec(cfg), views=instantiate(views_config(cfg), _convert_="all"),
                   num_classes=10, optim=optim_config(cfg), batch_size=32)
    source = open_split(tiny_data, "shapes", "train")
    images = torch.from_numpy(source.images(slice(0, 32))).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(source.labels[:32])
    views = module.views(images)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        module.on_train_batch_start((images, labels), 0)  # EMA targets follow (a no-op for most methods)
        loss = module.loss_step(views, labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
