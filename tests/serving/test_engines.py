"""``engines.build_engine``: a faster engine is served only if it answers as eager PyTorch does.

A tiny linear network on 4 px images stands in for ResNet: milliseconds each.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from bincounter.decision import head_probabilities
from bincounter.serving import engines
from bincounter.serving.engines import ENGINE_TOLERANCE, build_engine, check_input


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


def eager_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def test_eager_runs_the_module_itself_on_the_given_threads(model):
    engine, kind = build_engine(model, "eager", 4, threads=2)
    x = check_input(4, 3)
    assert kind == "eager" and np.array_equal(engine(x), eager_outputs(model, x))
    assert torch.get_num_threads() == 2  # the worker's share of the cores, not 1


def test_torchscript_is_served_when_it_agrees(model):
    engine, kind = build_engine(model, "torchscript", 4)
    assert kind == "torchscript"
    x = check_input(4, 3)
    np.testing.assert_allclose(engine(x), eager_outputs(model, x), atol=ENGINE_TOLERANCE, rtol=0)


def offset(by: float):
    def build(source: engines.EngineSpec, precision: str):
        return lambda x: eager_outputs(source.model, x) + by

    return build


def broken(source: engines.EngineSpec, precision: str):
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
        _, served = build_engine(model, "candidate", 4, device=engines.Device())
    assert served == kind
    if warning:
        assert f"candidate engine {warning}" in caplog.text
    else:
        assert not caplog.records


def test_an_unknown_engine_name_is_a_bug(model):
    with pytest.raises(KeyError):
        build_engine(model, "onnx", 4)


def test_check_input_is_fixed_and_photo_like():
    x = check_input(8, 3)
    assert x.dtype == np.uint8 and x.shape == (3, 3, 8, 8)
    assert np.array_equal(x, check_input(8, 3)) and x.astype(float).std() > 10


def test_head_probabilities_rows_sum_to_one_in_float64():
    probs = head_probabilities(np.array([[0.0, 1.0, 2.0, 3.0, 1000.0], [1.0] * 5]), "softmax")
    assert probs.dtype.name == "float64" and abs(probs.sum(1) - 1).max() < 1e-15
    assert probs[0].argmax() == 4 and np.allclose(probs[1], 0.2)


@pytest.mark.parametrize("head", ["softmax", "coral"])
def test_head_probabilities_match_the_training_side(head):
    from bincounter.counting import probabilities64

    outputs = torch.randn(
        16, 5 if head == "softmax" else 4, generator=torch.Generator().manual_seed(3)
    )
    np.testing.assert_allclose(
        head_probabilities(outputs.numpy(), head), probabilities64(outputs, head), atol=1e-12
    )


# --------------------------------------------------------------------------- plans and checks

CPU, CPU_BF16 = engines.Device(), engines.Device(native_bf16=True)
GPU, GPU_BF16 = engines.Device(cuda=True), engines.Device(cuda=True, native_bf16=True)


def card_with_int8(fp32_accuracy: float = 0.60, int8_accuracy: float = 0.598) -> dict:
    ir = {"xml": "x.xml", "bin": "x.bin", "xml_sha256": "0", "bin_sha256": "0"}
    return {
        "openvino": {
            "files": {"fp32": ir, "int8": ir},
            "int8": {
                "validation": {"fp32_accuracy": fp32_accuracy, "int8_accuracy": int8_accuracy}
            },
        }
    }


OV, EAGER = "openvino", ("eager", "fp32")


@pytest.mark.parametrize(
    ("kind", "precision", "device", "card", "plan", "note"),
    [
        ("auto", "auto", CPU_BF16, {}, [(OV, "bf16"), (OV, "fp32"), EAGER], None),
        ("auto", "auto", CPU, {}, [(OV, "fp32"), EAGER], None),
        ("auto", "bf16", CPU, {}, [(OV, "fp32"), EAGER], "no native bf16"),
        ("auto", "fp32", CPU_BF16, {}, [(OV, "fp32"), EAGER], None),
        (
            "openvino",
            "int8",
            CPU_BF16,
            card_with_int8(),
            [(OV, "int8"), (OV, "bf16"), (OV, "fp32"), EAGER],
            None,
        ),
        ("openvino", "int8", CPU, card_with_int8(), [(OV, "int8"), (OV, "fp32"), EAGER], None),
        ("openvino", "int8", CPU_BF16, {}, [(OV, "bf16"), (OV, "fp32"), EAGER], "no int8 IR"),
        (
            "openvino",
            "int8",
            CPU,
            card_with_int8(0.60, 0.594),
            [(OV, "fp32"), EAGER],
            "0.60 points below fp32",
        ),
        ("auto", "auto", GPU_BF16, {}, [("cuda", "bf16"), ("cuda", "fp32"), EAGER], None),
        ("auto", "auto", GPU, {}, [("cuda", "fp16"), ("cuda", "fp32"), EAGER], None),
        ("cuda", "fp32", GPU, {}, [("cuda", "fp32"), EAGER], None),
        (
            "auto",
            "int8",
            GPU_BF16,
            card_with_int8(),
            [("cuda", "bf16"), ("cuda", "fp32"), EAGER],
            "CPU engine",
        ),
        ("openvino", "auto", GPU_BF16, {}, [(OV, "bf16"), (OV, "fp32"), EAGER], None),
        ("torchscript", "auto", CPU_BF16, {}, [("torchscript", "fp32"), EAGER], None),
        ("torchscript", "bf16", CPU_BF16, {}, [("torchscript", "fp32"), EAGER], "fp32 only"),
        ("eager", "int8", CPU_BF16, card_with_int8(), [EAGER], "fp32 only"),
    ],
    ids=[
        "cpu_auto_bf16",
        "cpu_auto_fp32",
        "bf16_without_native_bf16",
        "fp32_asked",
        "int8_vouched",
        "int8_vouched_no_bf16",
        "int8_without_ir",
        "int8_too_inaccurate",
        "gpu_auto_bf16",
        "gpu_auto_fp16",
        "gpu_fp32",
        "gpu_int8",
        "openvino_asked_on_gpu",
        "torchscript",
        "torchscript_bf16",
        "eager_int8",
    ],
)
def test_the_plan_follows_precision_device_and_card(kind, precision, device, card, plan, note):
    got, notes = engines.resolve_plan(kind, precision, device, card)
    assert got == plan
    if note:
        assert len(notes) == 1 and note in notes[0]
    else:
        assert notes == []


@pytest.mark.parametrize(
    ("fp32", "int8", "refused"),
    [(0.60, 0.60, False), (0.60, 0.595, False), (0.60, 0.5949, True), (0.60, 0.65, False)],
)
def test_int8_is_vouched_for_within_half_a_point(fp32, int8, refused):
    from bincounter.openvino_ir import int8_refusal

    assert (int8_refusal(card_with_int8(fp32, int8)) is not None) == refused


def test_int8_without_recorded_accuracy_is_refused():
    from bincounter.openvino_ir import int8_refusal

    card = card_with_int8()
    del card["openvino"]["int8"]
    assert "no int8 and fp32 validation accuracy" in int8_refusal(card)
    assert "skipped: no openvino" in int8_refusal({"openvino": {"skipped": "skipped: no openvino"}})


def logits(rows: list[list[float]]) -> np.ndarray:
    return np.array(rows, dtype=np.float32)


REF = logits([[0, 1, 2, 3, 4]] * 18 + [[4, 3, 2, 1, 0]] * 2)


@pytest.mark.parametrize(
    ("got", "precision", "why"),
    [
        (REF + 5e-4, "fp32", None),
        (REF + 5e-3, "fp32", "max |logit diff| 0.005 (bound 0.004)"),  # 1e-3 x max |logit| 4
        (REF + 0.5, "bf16", None),  # a shift changes no answer: no logit bound below fp32
        (np.concatenate([REF[:19], REF[:1]]), "bf16", None),  # 19/20 = 0.95 agree
        (np.concatenate([REF[:18], REF[:2]]), "bf16", "top-1 agreement 0.900"),
        (np.concatenate([REF[:18], REF[:2]]), "int8", None),
        (np.concatenate([REF[:18], REF[:2]]), "fp32", "top-1 agreement 0.900"),
        (REF * float("nan"), "int8", "non-finite"),
        (REF[:3], "bf16", "shape"),
    ],
    ids=[
        "fp32_within",
        "fp32_beyond",
        "bf16_shift",
        "bf16_one_off",
        "bf16_two_off",
        "int8_two_off",
        "fp32_two_off",
        "nan",
        "shape",
    ],
)
def test_each_precision_is_checked_by_what_it_can_promise(got, precision, why):
    result = engines.disagreement(REF, got, precision)
    if why is None:
        assert result is None
    else:
        assert why in result


def test_a_failing_step_gives_way_to_the_next(model, monkeypatch, caplog):
    calls = []

    def candidate(source, precision):
        calls.append(precision)
        if precision == "int8":
            raise RuntimeError("no int8 here")
        by = 1.0 if precision == "bf16" else 0.0  # bf16 moves logits, fp32 is exact
        shift = 0 if precision == "fp32" else by
        return lambda x: eager_outputs(source.model, x) + shift * x.astype(np.float32).mean()

    monkeypatch.setitem(engines.BUILDERS, "openvino", candidate)
    with caplog.at_level(logging.WARNING, "bincounter.serving"):
        _, served = build_engine(
            model, "openvino", 4, precision="int8", card=card_with_int8(), device=CPU_BF16
        )
    assert calls[0] == "int8" and served in ("openvino-bf16", "openvino-fp32")
    assert "openvino-int8 engine unavailable (RuntimeError: no int8 here)" in caplog.text


def test_the_fp32_bound_scales_with_the_logits():
    """Logits of 2e8 (one epoch at lr 0.01 gave 5e7): float32 itself rounds them by ~16, so an
    absolute 1e-3 would refuse an engine that agrees on every photo."""
    big = REF * 5e7
    assert engines.disagreement(big, big + 2e3, "fp32") is None
    assert "bound 2e+05" in engines.disagreement(big, big + 3e5, "fp32")
    assert "bound 0.001" in engines.disagreement(REF / 10, REF / 10 + 2e-3, "fp32")


class Huge(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 5e7


def test_a_model_with_huge_logits_keeps_its_agreeing_engine(monkeypatch, caplog):
    """The engine differs from eager by float32 rounding only (another summation order)."""

    def reordered(source: engines.EngineSpec, precision: str):
        def run(x):
            out = eager_outputs(source.model, x).astype(np.float64)
            return (out * (1 + 1e-6)).astype(np.float32)

        return run

    monkeypatch.setitem(engines.BUILDERS, "candidate", reordered)
    with caplog.at_level(logging.WARNING, "bincounter.serving"):
        _, served = build_engine(Huge().eval(), "candidate", 4, device=engines.Device())
    assert served == "candidate" and not caplog.records
