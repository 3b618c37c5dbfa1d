"""``precision``: what ``auto`` picks on each device (capabilities faked), and bf16 that is right.

The bf16 checks run wherever the tests run: on a CPU without native bf16 torch emulates it, so
they test correctness there and speed nowhere.
"""

import pytest
import torch
from torch import nn

from bincounter.model import build_model
from bincounter.training.distributed import DistContext
from bincounter.training.hyperparameters import HyperParameters
from bincounter.training.precision import TrainStep, autocast, model_to_device, resolve, to_device
from bincounter.training.recipe import make_optimizer
from bincounter.training.state import TrainState, checkpoint_state, restore

CPU = torch.device("cpu")
AMX = {"amx_bf16": True, "avx512_bf16": True}
AVX512_BF16 = {"amx_bf16": False, "avx512_bf16": True}
PLAIN = {"avx2": True}


@pytest.mark.parametrize(
    ("precision", "channels_last", "caps", "dtype", "layout", "says"),
    [
        ("auto", "auto", AMX, torch.bfloat16, True, "amx_bf16"),
        ("auto", "auto", AVX512_BF16, torch.bfloat16, True, "avx512_bf16"),
        ("auto", "auto", PLAIN, None, False, "would be emulated"),
        ("auto", "auto", {}, None, False, "neither amx_bf16 nor avx512_bf16"),
        ("fp32", "auto", AMX, None, False, "precision=fp32 asked"),
        ("bf16", "auto", PLAIN, torch.bfloat16, True, "emulated"),
        ("auto", "false", AMX, torch.bfloat16, False, "amx_bf16"),
        ("fp32", "true", PLAIN, None, True, "precision=fp32 asked"),
    ],
)
def test_cpu_choice_follows_the_capability_torch_reports(
    precision, channels_last, caps, dtype, layout, says
):
    hp = HyperParameters(precision=precision, channels_last=channels_last)
    chosen = resolve(hp, CPU, capabilities=caps)
    assert (chosen.dtype, chosen.channels_last) == (dtype, layout)
    assert says in chosen.reason
    assert chosen.describe()["dtype"] == {None: "fp32", torch.bfloat16: "bf16"}[dtype]


@pytest.mark.parametrize(
    ("precision", "has_bf16", "dtype"),
    [
        ("auto", True, torch.bfloat16),
        ("auto", False, torch.float16),
        ("bf16", False, torch.bfloat16),
        ("fp32", True, None),
    ],
)
def test_cuda_choice(precision, has_bf16, dtype):
    chosen = resolve(HyperParameters(precision=precision), torch.device("cuda"), cuda_bf16=has_bf16)
    assert chosen.dtype == dtype and chosen.channels_last


def test_fp16_gets_a_grad_scaler_and_bf16_none():
    hp = HyperParameters()
    assert resolve(hp, torch.device("cuda"), cuda_bf16=False).grad_scaler
    assert not resolve(hp, torch.device("cuda"), cuda_bf16=True).grad_scaler
    assert not resolve(hp, CPU, capabilities=AMX).grad_scaler
    assert not TrainStep(nn.Linear(2, 2), None, None, None, resolve(hp, CPU)).scaler.is_enabled()


@pytest.mark.parametrize("value", [True, "true", '"true"'])
def test_channels_last_still_takes_a_bool(value):
    from bincounter.training.hyperparameters import parse_hyperparameters

    assert parse_hyperparameters({"channels_last": value}).channels_last == "true"


def _tiny_step(precision, seed=0):
    torch.manual_seed(seed)
    hp = HyperParameters(image_size=32, batch_size=4)
    model = model_to_device(build_model("resnet18"), precision, DistContext())
    optimizer = make_optimizer(model, hp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    step = TrainStep(model, optimizer, scheduler, nn.CrossEntropyLoss(), precision)
    return hp, model, optimizer, scheduler, step


def _batch(precision):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    return to_device(images, torch.tensor([0, 1, 2, 4]), precision, DistContext())


@pytest.mark.slow
def test_bf16_step_matches_fp32_and_keeps_fp32_weights():
    """Emulated or native, bf16 autocast gives the fp32 loss to bf16's precision."""
    fp32 = resolve(HyperParameters(precision="fp32"), CPU, capabilities=PLAIN)
    bf16 = resolve(HyperParameters(precision="bf16"), CPU, capabilities=PLAIN)
    _, _, _, _, step32 = _tiny_step(fp32)
    _, model16, _, _, step16 = _tiny_step(bf16)
    loss32, _ = step32.run(*_batch(fp32))
    loss16, outputs16 = step16.run(*_batch(bf16))
    assert loss16.dtype == torch.float32 and outputs16.dtype == torch.bfloat16
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.02)
    assert all(p.dtype == torch.float32 for p in model16.parameters())
    with autocast(bf16):
        assert model16(_batch(bf16)[0]).dtype == torch.bfloat16


@pytest.mark.slow
def test_a_checkpoint_resumes_under_another_precision():
    """Saved by fp32 (contiguous), restored by bf16 + channels-last, and the step runs."""
    fp32 = resolve(HyperParameters(precision="fp32"), CPU, capabilities=PLAIN)
    bf16 = resolve(HyperParameters(precision="bf16"), CPU, capabilities=PLAIN)
    hp, model, optimizer, scheduler, step = _tiny_step(fp32)
    step.run(*_batch(fp32))
    saved = checkpoint_state(model, optimizer, scheduler, TrainState(epoch=1), hp)
    _, model2, optimizer2, scheduler2, step2 = _tiny_step(bf16, seed=1)
    state = restore(saved, model2, optimizer2, scheduler2, hp)
    assert state.epoch == 1
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    loss, _ = step2.run(*_batch(bf16))
    assert torch.isfinite(loss)
