"""``engines.build_engine``: a faster engine is served only if it answers as eager PyTorch does.

A tiny linear network on 4 px images stands in for ResNet: milliseconds each.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from bincounter.serving import engines
from bincounter.serving.engines import ENGINE_TOLERANCE, build_engine, check_input, softmax64


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.float().flatten(1) / 255)


@pytest.fixture
def model() -> nn.Module:
    return Tiny().eval()


def test_eager_is_the_module_itself(model):
    assert build_engine(model, "eager", 4) == (model, "eager")


def test_torchscript_is_served_when_it_agrees(model):
    engine, kind = build_engine(model, "torchscript", 4)
    assert kind == "torchscript" and engine is not model
    x = check_input(4, 3)
    with torch.inference_mode():
        torch.testing.assert_close(engine(x), model(x), atol=ENGINE_TOLERANCE, rtol=0)


def offset(by: float):
    def build(model: nn.Module, image_size: int):
        return lambda x: model(x) + by

    return build


def broken(model: nn.Module, image_size: int):
    raise RuntimeError("no such backend")


@pytest.mark.parametrize(
    ("builder", "kind", "warning"),
    [
        (offset(ENGINE_TOLERANCE / 2), "candidate", None),
        (offset(ENGINE_TOLERANCE * 10), "eager", "differs from eager PyTorch"),
        (offset(float("nan")), "eager", "differs from eager PyTorch"),
        (broken, "eager", "unavailable (RuntimeError: no such backend)"),
    ],
    ids=["within_tolerance", "beyond_tolerance", "nan", "cannot_build"],
)
def test_a_candidate_engine_must_agree_or_eager_is_served(
    model, monkeypatch, caplog, builder, kind, warning
):
    monkeypatch.setitem(engines.BUILDERS, "candidate", builder)
    with caplog.at_level(logging.WARNING, "bincounter.serving"):
        engine, served = build_engine(model, "candidate", 4)
    assert served == kind
    assert (engine is model) == (kind == "eager")
    if warning:
        assert f"candidate engine {warning}" in caplog.text
    else:
        assert not caplog.records


def test_an_unknown_engine_name_is_a_bug(model):
    with pytest.raises(KeyError):
        build_engine(model, "onnx", 4)


def test_check_input_is_fixed_and_photo_like():
    x = check_input(8, 3)
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 8, 8)
    assert torch.equal(x, check_input(8, 3)) and x.float().std() > 10


def test_softmax64_rows_sum_to_one_in_float64():
    probs = softmax64(torch.tensor([[0.0, 1.0, 2.0, 3.0, 1000.0], [1.0] * 5]))
    assert probs.dtype.name == "float64" and abs(probs.sum(1) - 1).max() < 1e-15
    assert probs[0].argmax() == 4 and probs[1].tolist() == [0.2] * 5
