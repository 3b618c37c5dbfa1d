"""The recipe's pure pieces: learning-rate schedule, class weights, optimizer parameter groups."""

import math
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from torch import nn

from bincounter.training.data import ChannelPhoto
from bincounter.training.hyperparameters import HyperParameters
from bincounter.training.precision import TrainStep, resolve
from bincounter.training.recipe import (
    class_weights,
    lr_lambda,
    make_ema,
    make_optimizer,
    make_scheduler,
)

EPOCHS, STEPS, WARMUP_EPOCHS = 10, 10, 2
WARMUP = WARMUP_EPOCHS * STEPS
LAST = EPOCHS * STEPS - 1


def _schedule(lr_schedule: str, warmup_epochs: float = WARMUP_EPOCHS):
    hp = HyperParameters(epochs=EPOCHS, warmup_epochs=warmup_epochs, lr_schedule=lr_schedule)
    return lr_lambda(hp, STEPS)


@pytest.mark.parametrize("lr_schedule", ["cosine", "step", "constant"])
def test_warm_up_is_linear_and_reaches_one(lr_schedule):
    factor = _schedule(lr_schedule)
    ramp = [factor(s) for s in range(WARMUP)]
    assert ramp == pytest.approx([(s + 1) / WARMUP for s in range(WARMUP)])
    assert ramp[-1] == 1.0 and factor(WARMUP) == 1.0


@pytest.mark.parametrize("lr_schedule", ["cosine", "step", "constant"])
def test_no_warm_up_starts_at_full_rate(lr_schedule):
    assert _schedule(lr_schedule, warmup_epochs=0)(0) == 1.0


def test_cosine_decays_monotonically_to_near_zero_at_the_last_step():
    factor = _schedule("cosine")
    after = [factor(s) for s in range(WARMUP, LAST + 1)]
    assert all(a >= b for a, b in pairwise(after))
    assert after[-1] < 1e-3
    middle = WARMUP + (LAST + 1 - WARMUP) // 2
    assert factor(middle) == pytest.approx(0.5)


def test_step_schedule_drops_tenfold_at_one_half_and_three_quarters():
    factor = _schedule("step")
    after = EPOCHS * STEPS - WARMUP
    half, three_quarters = WARMUP + after // 2, WARMUP + 3 * after // 4
    assert factor(half - 1) == 1.0
    assert factor(half) == pytest.approx(0.1)
    assert factor(three_quarters - 1) == pytest.approx(0.1)
    assert factor(three_quarters) == pytest.approx(0.01)
    assert factor(LAST) == pytest.approx(0.01)


def test_constant_stays_at_one():
    factor = _schedule("constant")
    assert {factor(s) for s in range(WARMUP, LAST + 1)} == {1.0}


#: Train photos per count 1..5 (perfect squares, so the sqrt weights are easy to state).
COUNTS = [4, 16, 64, 16, 100]


def _samples(counts: list[int]) -> list[ChannelPhoto]:
    return [
        ChannelPhoto(f"{count}-{i}", Path(f"{count}-{i}.jpg"), count)
        for count, n in enumerate(counts, start=1)
        for i in range(n)
    ]


@pytest.mark.parametrize(("mode", "power"), [("balanced", 1.0), ("sqrt", 0.5)])
def test_class_weights_follow_inverse_counts_with_mean_one_per_sample(mode, power):
    weights = class_weights(_samples(COUNTS), mode)
    counts = torch.tensor(COUNTS, dtype=torch.float64)
    raw = counts**-power
    expected = raw * counts.sum() / (raw * counts).sum()
    assert weights.dtype == torch.float32
    assert weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert float((weights.double() * counts).sum() / counts.sum()) == pytest.approx(1.0)
    assert weights[0] / weights[4] == pytest.approx((100 / 4) ** power)


def test_balanced_weights_on_a_known_count_vector():
    # 200 photos over 5 counts: weight = 200 / (5 * n)
    weights = class_weights(_samples([10, 40, 90, 40, 20]), "balanced")
    assert weights.tolist() == pytest.approx([4.0, 1.0, 4 / 9, 1.0, 2.0], rel=1e-6)


def test_no_class_weighting_is_none():
    assert class_weights(_samples(COUNTS), "none") is None


def _params_by_name(model: nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    ("optimizer", "kind"), [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizer_never_decays_norms_and_biases(optimizer, kind):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 5))
    hp = HyperParameters(optimizer=optimizer, lr=0.01, weight_decay=0.05, momentum=0.8)
    opt = make_optimizer(model, hp)
    assert type(opt) is kind
    names = _params_by_name(model)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["0.weight", "3.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "0.bias",
        "1.bias",
        "1.weight",
        "3.bias",
    ]
    assert all(group["lr"] == 0.01 for group in opt.param_groups)


def test_sgd_is_nesterov_and_adamw_takes_momentum_as_beta1():
    model = nn.Linear(2, 2)
    sgd = make_optimizer(model, HyperParameters(optimizer="sgd", momentum=0.8))
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    adamw = make_optimizer(model, HyperParameters(optimizer="adamw", momentum=0.8))
    assert adamw.defaults["betas"] == (0.8, 0.999)


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 5))


def test_no_weight_average_unless_asked():
    assert make_ema(_bn_net(), HyperParameters()) is None


def test_the_weight_average_follows_every_step_with_its_decay_buffers_included():
    """Through the real ``TrainStep``: the average starts at the first step's weights and then
    moves by ``1 - decay`` towards each new step's weights, BatchNorm statistics too."""
    decay = 0.9
    model = _bn_net()
    hp = HyperParameters(ema_decay=decay)
    ema = make_ema(model, hp)
    optimizer = make_optimizer(model, HyperParameters(lr=0.05))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    precision = resolve(HyperParameters(precision="fp32"), torch.device("cpu"))
    step = TrainStep(model, optimizer, scheduler, nn.CrossEntropyLoss(), precision, ema)
    expected = None
    for i in range(5):
        torch.manual_seed(i)
        step.run(torch.randn(8, 3), torch.randint(0, 5, (8,)))
        now = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if expected is None:
            expected = now
        else:
            expected = {
                k: v if not v.is_floating_point() else decay * v + (1 - decay) * now[k]
                for k, v in expected.items()
            }
    averaged = ema.module.state_dict()
    for name in ("0.weight", "2.bias", "1.running_mean", "1.running_var"):
        assert torch.allclose(averaged[name], expected[name], atol=1e-6), name
        assert not torch.allclose(averaged[name], model.state_dict()[name], atol=1e-6), name
    assert ema.module is not model and int(ema.n_averaged) == 5


def _closed_form(hp: HyperParameters, steps_per_epoch: int, step: int) -> float:
    """The schedule as the loop computed it before it went through ``make_scheduler``."""
    warmup = int(hp.warmup_epochs * steps_per_epoch)
    total = max(1, hp.epochs * steps_per_epoch)
    if step < warmup:
        return hp.lr * ((step + 1) / warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if hp.lr_schedule == "cosine":
        return hp.lr * (0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    if hp.lr_schedule == "step":
        return hp.lr * (0.1 ** sum(progress >= m for m in (0.5, 0.75)))
    return hp.lr


def _stepped(scheduler, optimizer, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("lr_schedule", ["cosine", "step", "constant"])
@pytest.mark.parametrize("warmup_epochs", [0, 0.5, 2])
def test_the_schedule_gives_the_closed_form_rate_at_every_step_bit_for_bit(
    lr_schedule, warmup_epochs
):
    hp = HyperParameters(
        epochs=EPOCHS, warmup_epochs=warmup_epochs, lr_schedule=lr_schedule, lr=3e-3
    )
    optimizer = make_optimizer(nn.Linear(2, 2), hp)
    rates = _stepped(make_scheduler(optimizer, hp, STEPS), optimizer, EPOCHS * STEPS)
    assert rates == [_closed_form(hp, STEPS, s) for s in range(EPOCHS * STEPS)]


def test_a_saved_schedule_resumes_with_the_same_rates():
    """A checkpoint's scheduler state (a ``LambdaLR``'s, as every checkpoint has held) loaded
    into a fresh schedule goes on with exactly the rates of one never stopped."""
    hp = HyperParameters(epochs=EPOCHS, warmup_epochs=1, lr_schedule="step", lr=0.01)
    optimizer = make_optimizer(nn.Linear(2, 2), hp)
    scheduler = make_scheduler(optimizer, hp, STEPS)
    _stepped(scheduler, optimizer, 37)
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    assert set(saved["scheduler"]) >= {"base_lrs", "last_epoch", "_last_lr"}
    uninterrupted = _stepped(scheduler, optimizer, EPOCHS * STEPS - 37)

    fresh = make_optimizer(nn.Linear(2, 2), hp)
    resumed = make_scheduler(fresh, hp, STEPS)
    fresh.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert _stepped(resumed, fresh, EPOCHS * STEPS - 37) == uninterrupted
