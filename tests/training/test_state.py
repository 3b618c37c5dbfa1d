"""``checkpoint_state`` and ``restore`` are each other's inverse, through a real checkpoint."""

import logging

import torch
from torch import nn

from bincounter.training.checkpoint import CheckpointStore
from bincounter.training.hyperparameters import HyperParameters
from bincounter.training.recipe import make_ema
from bincounter.training.state import TrainState, checkpoint_state, restore


def _parts(seed: int):
    torch.manual_seed(seed)
    model = nn.Linear(4, 5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return model, optimizer, scheduler


def test_a_saved_state_restores_model_optimizer_schedule_rng_and_loop_state(tmp_path):
    model, optimizer, scheduler = _parts(seed=0)
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = TrainState(
        epoch=3,
        step_in_epoch=17,
        partial=[4.5, 9.0, 17.0],
        best_key=(0.4, -1.2),
        best_epoch=2,
        best_weights={k: v.clone() for k, v in model.state_dict().items()},
        epochs_without_gain=1,
        history=[{"epoch": e, "validation:accuracy": 0.1 * e} for e in (1, 2, 3)],
    )
    hp = HyperParameters()
    store = CheckpointStore(tmp_path)
    store.save(checkpoint_state(model, optimizer, scheduler, state, hp))
    expected_draw = torch.rand(3)  # the RNG state was saved before this draw

    fresh_model, fresh_optimizer, fresh_scheduler = _parts(seed=1)
    restored = restore(store.load_latest()[0], fresh_model, fresh_optimizer, fresh_scheduler, hp)
    assert torch.equal(torch.rand(3), expected_draw)
    assert {k: v for k, v in vars(restored).items() if k != "best_weights"} == {
        k: v for k, v in vars(state).items() if k != "best_weights"
    }
    for name, value in state.best_weights.items():
        assert torch.equal(restored.best_weights[name], value)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[name], value)
    assert fresh_scheduler.last_epoch == 1
    assert fresh_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_resuming_with_other_hyperparameters_names_them(tmp_path, caplog):
    model, optimizer, scheduler = _parts(seed=0)
    saved = checkpoint_state(model, optimizer, scheduler, TrainState(), HyperParameters())
    with caplog.at_level(logging.WARNING, logger="bincounter.training.state"):
        restore(saved, model, optimizer, scheduler, HyperParameters(lr=0.5, epochs=3))
    assert "resuming with changed hyperparameters ['epochs', 'lr']" in caplog.text


def test_a_checkpoint_from_before_precision_and_loss_resumes(caplog):
    """Older checkpoints carry ``amp`` and lack the newer parameters: named, not a KeyError."""
    model, optimizer, scheduler = _parts(seed=0)
    saved = checkpoint_state(model, optimizer, scheduler, TrainState(epoch=2), HyperParameters())
    old = {k: v for k, v in saved["hyperparameters"].items() if k not in ("precision", "loss")}
    saved["hyperparameters"] = {**old, "amp": True}
    with caplog.at_level(logging.WARNING, logger="bincounter.training.state"):
        assert restore(saved, model, optimizer, scheduler, HyperParameters()).epoch == 2
    assert "resuming with changed hyperparameters ['loss', 'precision']" in caplog.text


def test_any_first_epoch_is_a_gain_over_a_fresh_state():
    state = TrainState()
    assert state.best_key < (0.0, -1e30) and state.best_weights is None
    assert state.partial == [0.0, 0.0, 0.0]


def test_the_weight_average_resumes_with_its_count(tmp_path):
    model, optimizer, scheduler = _parts(seed=0)
    hp = HyperParameters(ema_decay=0.99)
    ema = make_ema(model, hp)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update_parameters(model)
    store = CheckpointStore(tmp_path)
    store.save(checkpoint_state(model, optimizer, scheduler, TrainState(epoch=1), hp, ema))

    fresh_model, fresh_optimizer, fresh_scheduler = _parts(seed=1)
    fresh_ema = make_ema(fresh_model, hp)
    saved = store.load_latest()[0]
    restore(saved, fresh_model, fresh_optimizer, fresh_scheduler, hp, fresh_ema)
    assert int(fresh_ema.n_averaged) == 3
    assert torch.equal(fresh_ema.module.weight, ema.module.weight)
    assert not torch.equal(fresh_ema.module.weight, fresh_model.weight)


def test_a_checkpoint_without_an_average_starts_one_from_the_resumed_weights(caplog):
    model, optimizer, scheduler = _parts(seed=0)
    saved = checkpoint_state(model, optimizer, scheduler, TrainState(epoch=2), HyperParameters())
    assert saved["ema"] is None
    fresh_model, fresh_optimizer, fresh_scheduler = _parts(seed=1)
    hp = HyperParameters(ema_decay=0.99)
    ema = make_ema(fresh_model, hp)
    with caplog.at_level(logging.WARNING, logger="bincounter.training.state"):
        restore(saved, fresh_model, fresh_optimizer, fresh_scheduler, hp, ema)
    assert "no weight average" in caplog.text
    assert torch.equal(ema.module.weight, model.weight)
