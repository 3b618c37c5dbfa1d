"""``bincounter.counting``: heads, losses, probabilities, decision rules and the 8 TTA variants."""

import numpy as np
import pytest
import torch

from bincounter.counting import (
    RULES,
    average_variants,
    choose_rule,
    decide,
    dihedral_variants,
    head_for_loss,
    make_head,
    make_loss,
    probabilities,
    probabilities64,
)


@pytest.mark.parametrize(
    ("loss", "head", "width"),
    [("ce", "softmax", 5), ("ce_mse", "softmax", 5), ("coral", "coral", 4)],
)
def test_each_loss_trains_its_head_and_gives_five_probabilities(loss, head, width):
    assert head_for_loss(loss) == head
    outputs = make_head(head, 8)(torch.randn(6, 8))
    assert outputs.shape == (6, width)
    p = probabilities(outputs, head)
    assert p.shape == (6, 5) and torch.allclose(p.sum(1), torch.ones(6))
    p64 = probabilities64(outputs, head)
    assert p64.dtype == np.float64 and np.abs(p64.sum(1) - 1).max() < 1e-12
    value = make_loss(loss, torch.ones(5), 0.1, 0.5)(outputs.bfloat16(), torch.arange(6) % 5)
    assert value.dtype == torch.float32 and value.ndim == 0 and torch.isfinite(value)


def test_coral_probabilities_are_differences_of_the_cumulative_ones():
    # P(>1)=0.9, P(>2)=0.6, P(>3)=0.3, P(>4)=0.1 -> 0.1, 0.3, 0.3, 0.2, 0.1
    logits = torch.logit(torch.tensor([[0.9, 0.6, 0.3, 0.1]]))
    assert probabilities(logits, "coral")[0].tolist() == pytest.approx([0.1, 0.3, 0.3, 0.2, 0.1])
    crossed = torch.logit(torch.tensor([[0.5, 0.7, 0.2, 0.1]]))  # P(>2) > P(>1): clipped
    p = probabilities(crossed, "coral")[0]
    assert (p >= 0).all() and p.sum().item() == pytest.approx(1.0) and p[1] == 0


def test_coral_loss_is_lowest_for_the_true_count():
    labels = torch.tensor([2])  # count 3: P(>1), P(>2) high, P(>3), P(>4) low
    loss = make_loss("coral", None, 0.0, 0.0)
    right = loss(torch.tensor([[5.0, 5.0, -5.0, -5.0]]), labels)
    wrong = loss(torch.tensor([[5.0, 5.0, 5.0, -5.0]]), labels)
    assert right < 0.05 < wrong


def test_ce_mse_adds_the_squared_error_of_the_expected_count():
    outputs, labels = torch.zeros(1, 5), torch.tensor([0])  # uniform: mean 3, truth 1
    plain = make_loss("ce", None, 0.0, 0.5)(outputs, labels)
    with_mse = make_loss("ce_mse", None, 0.0, 0.5)(outputs, labels)
    assert (with_mse - plain).item() == pytest.approx(0.5 * 4)


@pytest.mark.parametrize(
    ("p", "argmax", "expected", "median"),
    [
        ([0.4, 0.0, 0.0, 0.0, 0.6], 4, 2, 4),  # two modes: mean 3.4 -> count 3; median 5
        ([0.45, 0.1, 0.0, 0.0, 0.45], 0, 2, 1),  # ties go to the smaller count
        ([0.0, 0.5, 0.5, 0.0, 0.0], 1, 2, 1),  # cumulative exactly 1/2 reaches the median
        ([0.3, 0.3, 0.2, 0.1, 0.1], 0, 1, 1),
        ([0.0, 0.0, 0.0, 0.0, 1.0], 4, 4, 4),
    ],
)
def test_decision_rules(p, argmax, expected, median):
    got = {rule: int(decide(np.array([p]), rule)[0]) for rule in RULES}
    assert got == {"argmax": argmax, "expected": expected, "median": median}
    assert int(decide(np.array([p], dtype=np.float32), "median")[0]) == median


def test_unknown_rule_is_named():
    with pytest.raises(ValueError, match=r"'mode'.*argmax, expected, median"):
        decide(np.ones((1, 5)) / 5, "mode")


@pytest.mark.parametrize(
    ("figures", "chosen"),
    [
        ({"argmax": (0.33, 1.33), "expected": (0.29, 1.18), "median": (0.31, 1.17)}, "median"),
        ({"argmax": (0.33, 1.33), "expected": (0.32, 1.175), "median": (0.31, 1.17)}, "expected"),
        ({"argmax": (0.40, 1.00), "expected": (0.30, 1.20), "median": (0.30, 1.10)}, "argmax"),
        ({"argmax": (0.30, 1.10), "expected": (0.30, 1.10), "median": (0.30, 1.10)}, "argmax"),
    ],
)
def test_choose_rule_lowest_rmse_then_accuracy(figures, chosen):
    summaries = {r: {"accuracy": a, "rmse": e} for r, (a, e) in figures.items()}
    assert choose_rule(summaries) == chosen


def test_dihedral_variants_are_the_eight_distinct_symmetries_in_torch_and_numpy():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    variants = dihedral_variants(images)
    assert variants.shape == (16, 3, 4, 4)
    assert torch.equal(variants[:2], images)  # variant 0 is the photo itself
    assert len({variants[v * 2].numpy().tobytes() for v in range(8)}) == 8
    as_numpy = dihedral_variants(images.permute(0, 2, 3, 1).numpy(), channels_last=True)
    assert as_numpy.flags.c_contiguous
    assert np.array_equal(as_numpy, variants.permute(0, 2, 3, 1).numpy())


def test_average_variants_is_the_mean_per_photo():
    p = torch.stack([torch.full((5,), float(v * 2 + i)) for v in range(8) for i in range(2)])
    mean = average_variants(p, 8)
    assert mean.shape == (2, 5) and mean[0, 0] == pytest.approx(7.0) and mean[1, 0] == 8.0
    assert average_variants(p, 1) is p
