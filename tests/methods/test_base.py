from types import SimpleNamespace

import pytest
import torch

from sslbench.data.views import symmetric_views
from sslbench.errors import UserError
from sslbench.methods.base import (
    LossOutput,
    NonFiniteLossError,
    OptimConfig,
    SSLMethod,
    build_optimizer,
    reseed_views,
)
from sslbench.models.encoder import EncoderSpec


class _Broken(SSLMethod):
    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        h = self.encoder.features(views[0])
        return LossOutput(h.sum() * float("nan"), h, {"term": torch.tensor(float("inf"))})


class _Fine(SSLMethod):
    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        h = self.encoder.features(views[0])
        return LossOutput(h.pow(2).mean(), h, {"term": h.mean()})


def _method(cls: type[SSLMethod] = _Broken) -> SSLMethod:
    return cls(encoder=EncoderSpec(), views=symmetric_views(n_views=2), num_classes=3, optim=OptimConfig(),
               batch_size=4)


def test_non_finite_loss_stops_with_step_and_values() -> None:
    model = _method()
    views = [torch.rand(2, 3, 32, 32)]
    with pytest.raises(NonFiniteLossError, match=r"non-finite SSL loss nan at global step 0 .*term=inf"):
        model.training_step((views, torch.zeros(2, dtype=torch.long)), 0)


def test_views_are_reseeded_per_step_and_rank() -> None:
    model = _method()
    model.view_seed = 7
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    labels = torch.zeros(3, dtype=torch.long)

    def views_at(step: int, rank: int = 0) -> list[torch.Tensor]:
        model._trainer = SimpleNamespace(global_step=step, global_rank=rank)  # type: ignore[assignment]
        return model.on_after_batch_transfer((images, labels), 0)[0]

    a, b, c, d = views_at(5), views_at(5), views_at(6), views_at(5, rank=1)
    assert a[0].shape == (3, 3, 32, 32) and a[0].dtype == torch.float32
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])


def test_reseed_views_draws_what_torch_manual_seed_draws_on_cpu() -> None:
    torch.manual_seed(123)
    want = torch.rand(5), torch.randperm(4)
    torch.manual_seed(0)
    reseed_views(123, torch.device("cpu"))
    got = torch.rand(5), torch.randperm(4)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


@pytest.mark.parametrize(("every", "logged"), [(1, list(range(6))), (3, [0, 2, 5])])
def test_self_log_runs_only_on_the_steps_a_logger_writes(every: int, logged: list[int],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model = _method(_Fine)
    calls: list[int] = []
    monkeypatch.setattr(model, "log", lambda *a, **k: calls.append(model.global_step))
    views = [torch.rand(2, 3, 32, 32)]
    for step in range(6):
        model._trainer = SimpleNamespace(global_step=step, log_every_n_steps=every)  # type: ignore[assignment]
        model.training_step((views, torch.zeros(2, dtype=torch.long)), step)
        assert set(model.step_metrics) == {"ssl_loss", "online_top1"}  # the curves' values, every step
    assert sorted(set(calls)) == logged


def test_optim_config_validation() -> None:
    with pytest.raises(UserError, match="optim.name"):
        OptimConfig(name="lamb")
    with pytest.raises(UserError, match="lr > 0"):
        OptimConfig(lr=0.0)


class _LateHead(SSLMethod):
    """A head that gets no gradient on the first step (as SwAV's frozen prototypes or DINO's last layer)."""

    def __init__(self, **base: object) -> None:
        super().__init__(**base)  # type: ignore[arg-type]
        self.late = torch.nn.Linear(self.encoder.feature_dim, 2)

    def loss_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> LossOutput:
        h = self.encoder.features(views[0])
        loss = h.pow(2).mean() + (self.late(h).pow(2).mean() if self.global_step > 0 else 0.0)
        return LossOutput(loss, h, {})


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_optimizer_steps_a_parameter_whose_first_gradient_comes_late(name: str) -> None:
    model = _LateHead(encoder=EncoderSpec(), views=symmetric_views(n_views=2), num_classes=3,
                      optim=OptimConfig(name=name, lr=0.1), batch_size=4)
    trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=1, global_step=0, global_rank=0)
    model._trainer = trainer  # type: ignore[assignment]
    model.log = lambda *args, **kwargs: None  # type: ignore[method-assign]  # Lightning's logging needs a Trainer
    opt = model.configure_optimizers()["optimizer"]
    views, labels = [torch.rand(4, 3, 32, 32)], torch.zeros(4, dtype=torch.long)
    before = model.late.weight.detach().clone()
    for step in range(3):
        trainer.global_step = step
        opt.zero_grad(set_to_none=True)
        model.training_step((views, labels), step).backward()
        assert (model.late.weight.grad is None) == (step == 0)
        opt.step()
        if step == 0:
            assert torch.equal(model.late.weight, before)
    assert not torch.equal(model.late.weight, before)


def test_lars_steps_each_weight_by_its_trust_ratio_and_the_rest_by_plain_sgd() -> None:
    """LARS: a weight tensor moves by ~lr * eta * |w| whatever its gradient's scale; biases (no weight decay) take
    plain SGD steps, as in SimCLR's and Barlow Twins' LARS."""
    steps = []
    for scale in (1.0, 1000.0):
        torch.manual_seed(0)
        layer = torch.nn.Linear(8, 4)
        optim = OptimConfig(name="lars", lr=0.256, weight_decay=1e-6, momentum=0.9, trust_coefficient=1e-3)
        opt, _ = build_optimizer(list(layer.parameters()), [], optim, batch_size=256, total=10, warmup=0)
        before = [p.detach().clone() for p in layer.parameters()]
        (scale * layer(torch.randn(16, 8)).square().mean()).backward()
        grads = [p.grad.clone() for p in layer.parameters()]  # type: ignore[union-attr]
        opt.step()
        steps.append([(p.detach() - b) for p, b in zip(layer.parameters(), before, strict=True)])
        weight, bias = steps[-1]
        assert torch.allclose(weight.norm(), 0.256 * 1e-3 * before[0].norm(), rtol=1e-4)
        assert torch.allclose(bias, -0.256 * grads[1], rtol=1e-5)
    assert torch.allclose(steps[0][0], steps[1][0], rtol=1e-4)  # the weight's step ignores the gradient's scale


def test_biases_and_norms_can_run_at_their_own_rate() -> None:
    """Barlow Twins trains biases and BatchNorm parameters at 0.0048 against the weights' 0.2."""
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optim = OptimConfig(name="lars", lr=0.2, weight_decay=1.5e-6, bias_lr_scale=0.024)
    opt, sched = build_optimizer(list(layer.parameters()), [], optim, batch_size=256, total=10, warmup=0)
    weights, others, _ = opt.param_groups
    assert len(weights["params"]) == 1 and len(others["params"]) == 3 and others["weight_decay"] == 0.0
    assert weights["lr"] == pytest.approx(0.2) and others["lr"] == pytest.approx(0.0048)
    with pytest.raises(UserError, match="bias_lr_scale > 0"):
        OptimConfig(bias_lr_scale=0.0)

