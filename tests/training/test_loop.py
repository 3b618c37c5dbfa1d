"""The loop's small parts: running sums, the stop conditions."""

import signal

import pytest

from bincounter.training.distributed import DistContext
from bincounter.training.hyperparameters import HyperParameters
from bincounter.training.running_sums import RunningSums
from bincounter.training.state import TrainState
from bincounter.training.train import SigtermFlag, patience_exhausted, stop_requested


def test_running_sums_carry_a_checkpoints_partial_sums_and_reduce_exactly():
    sums = RunningSums(("loss", "correct", "seen", "images"), [1.5, 2.0, 4.0])
    sums.update(loss=0.25 * 3, correct=1, seen=3, images=3)
    assert sums.values("loss", "correct", "seen") == [2.25, 3.0, 7.0]
    assert sums["images"] == 3
    assert sums.mean("loss", per="seen") == pytest.approx(2.25 / 7)
    assert sums.reduced(DistContext()) == {"loss": 2.25, "correct": 3.0, "seen": 7.0, "images": 3}


def test_an_empty_epoch_has_a_mean_of_zero():
    assert RunningSums(("loss", "seen")).mean("loss", per="seen") == 0


@pytest.mark.parametrize(
    ("patience", "without_gain", "stops"), [(0, 50, False), (2, 1, False), (2, 2, True)]
)
def test_patience_stops_after_that_many_epochs_without_gain(patience, without_gain, stops):
    hp = HyperParameters(patience=patience)
    assert patience_exhausted(hp, TrainState(epochs_without_gain=without_gain)) is stops


def test_a_single_process_stops_when_its_sigterm_flag_is_set():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        flag = SigtermFlag()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not stop_requested(flag, batch=0, lockstep=10, ctx=DistContext())
    flag.set = True
    assert stop_requested(flag, batch=99, lockstep=10, ctx=DistContext())
