"""The pretrain stage on a tiny prepared study: outputs, exact resumption, refusal of a foreign checkpoint,
bad input, and a few optimisation steps lowering every method's loss."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate

from sslbench.errors import UserError
from sslbench.stages import pretrain
from sslbench.training.config import encoder_spec, optim_config, views_config

CONF = Path(pretrain.__file__).parents[1] / "conf" / "method"
ALL_METHODS = sorted(p.stem for p in CONF.glob("*.yaml"))
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


def test_resume_is_exact_and_a_foreign_checkpoint_is_refused(
    compose: Compose, tiny_data: Path, tmp_path: Path
) -> None:
    # 200 images / 64 = 3 steps per epoch, 6 in all; the interrupted run stops mid-epoch 1 (step 4)
    full = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "a", "byol")))
    stopped = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "b", "byol", "pretrain.max_steps=4")))
    assert stopped == {"stopped_at": 4}
    model_b = tmp_path / "b" / "models" / "byol"
    assert (model_b / "last.ckpt").is_file() and not (model_b / "encoder.pt").exists()
    with pytest.raises(UserError, match=r"another config; differing keys: pretrain.lr_scale \(1.0 -> 2.0\)"):
        pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "b", "byol", "pretrain.lr_scale=2.0")))
    resumed = pretrain.run(compose("pretrain", _overrides(tiny_data, tmp_path / "b", "byol")))
    a, b = _weights(tmp_path / "a", "byol"), _weights(tmp_path / "b", "byol")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [(tmp_path / r / "reports/pretrain/plots/byol/train.csv").read_text() for r in ("a", "b")]
    assert history[0] == history[1]
    rows = list(csv.DictReader(history[0].splitlines()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert not (model_b / "last.ckpt").exists() and (model_b / "config.yaml").is_file()
    assert full.keys() == resumed.keys() and full["pretrain/steps"] == 6
    for key in ("pretrain/ssl_loss", "pretrain/feature_std", "pretrain/effective_rank"):
        assert full[key] == resumed[key]
    assert not Path("lightning_logs").exists() and not list(tmp_path.rglob("lightning_logs"))


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
