"""The training job: one readable loop, DDP woven in, in the style of torchvision's references.

``run(env)`` is what ``./train`` calls inside the container. It trains on ``train``, selects
the best epoch on ``validation`` (accuracy, then loss), writes that model to ``/opt/ml/model``,
evaluates it once on ``test`` if the channel exists, and writes reports to
``/opt/ml/output/data``. A checkpoint is written every epoch (and on SIGTERM, mid-epoch) and
a restarted job resumes from the newest good one.

Read it top to bottom: ``train_one_epoch``, ``evaluate``, ``load_channels``, then ``run`` (set
up, the epoch loop, ``_finish``). The pieces it composes live beside it (see ``__init__``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import CLASSES
from ..errors import DataError
from ..files import atomic_write_json
from ..model import build_model, save_model, unwrap
from . import metrics, reports
from .checkpoint import CheckpointStore
from .data import Sample, auto_workers, class_counts
from .distributed import (
    DistContext,
    all_reduce_sum,
    any_rank,
    barrier,
    init_process_group,
    processes_per_host,
    shutdown,
)
from .environment import OPTIONAL_CHANNELS, REQUIRED_CHANNELS, TrainingEnvironment
from .export import export_openvino
from .hyperparameters import HyperParameters, parse_hyperparameters
from .precision import TrainStep, autocast, model_to_device, to_device
from .recipe import class_weights, lr_lambda, make_optimizer
from .state import TrainState, checkpoint_state, restore
from .streaming import load_channel, lockstep_batches, make_reader

log = logging.getLogger(__name__)

#: Exit status after a SIGTERM that was handled by checkpointing (128 + SIGTERM).
EXIT_STOPPED = 143


class StopRequested(Exception):
    """SIGTERM arrived (SageMaker stop or spot interruption); a checkpoint was written."""


class _SigtermFlag:
    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: finishing this step, then checkpointing and exiting")
        self.set = True


def train_one_epoch(
    model, step: TrainStep, loader, sampler, hp, ctx, state, stop, on_stop
) -> dict[str, float]:
    """One pass over this rank's shard; returns metrics reduced over all ranks."""
    model.train()
    loss_sum, correct, seen = state.partial
    started, last_log = time.monotonic(), time.monotonic()
    total = len(sampler) + state.step_in_epoch
    progress = tqdm(
        total=total,
        initial=state.step_in_epoch,
        desc=f"epoch {state.epoch + 1}/{hp.epochs}",
        unit="img",
        disable=not ctx.is_master or not sys.stderr.isatty(),
        leave=False,
    )
    epoch_images = 0
    lockstep = lockstep_batches(sampler, hp.batch_size, ctx)
    with Join([model]) if ctx.enabled else contextlib.nullcontext():
        for batch, (images, labels) in enumerate(loader):
            images, labels = to_device(images, labels, hp, ctx)
            loss, logits = step.run(images, labels)
            n = labels.numel()
            loss_sum += loss.item() * n
            correct += (logits.argmax(1) == labels).sum().item()
            seen += n
            epoch_images += n
            state.step_in_epoch += n
            progress.update(n)
            now = time.monotonic()
            if ctx.is_master and progress.disable and now - last_log > 30:
                log.info(
                    "epoch %d: %d/%d images, loss %.4f",
                    state.epoch + 1,
                    state.step_in_epoch,
                    total,
                    loss_sum / max(1, seen),
                )
                last_log = now
            if stop.set if not ctx.enabled else batch < lockstep and any_rank(stop.set, ctx):
                state.partial = [loss_sum, correct, seen]
                on_stop()
                raise StopRequested
    progress.close()
    elapsed = time.monotonic() - started
    totals = all_reduce_sum(
        torch.tensor([loss_sum, correct, seen, epoch_images], dtype=torch.float64), ctx
    )
    rate = all_reduce_sum(torch.tensor([epoch_images / max(elapsed, 1e-9)]), ctx)
    if ctx.is_master:
        log.info(
            "epoch %d: %d training images across %d rank(s) in %.1f s",
            state.epoch + 1,
            int(totals[2]),
            ctx.world_size,
            elapsed,
        )
    return {
        "train:loss": float(totals[0] / max(1.0, totals[2])),
        "train:accuracy": float(totals[1] / max(1.0, totals[2])),
        "train:images_per_second": float(rate[0]),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, samples: list[Sample], hp: HyperParameters, ctx: DistContext, workers: int
) -> tuple[float, dict[str, Any]]:
    """Loss and count metrics over a whole channel, each rank taking a slice, reduced exactly."""
    model.eval()
    loader, _ = make_reader(samples, hp, ctx, workers, train=False)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    confusion = torch.zeros(len(CLASSES), len(CLASSES), dtype=torch.float64)
    net = unwrap(model)
    for images, labels in loader:
        images, labels = to_device(images, labels, hp, ctx)
        with autocast(ctx, hp):
            logits = net(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        predicted = logits.argmax(1)
        index = (labels * len(CLASSES) + predicted).cpu()
        confusion += torch.bincount(index, minlength=len(CLASSES) ** 2).view_as(confusion)
    loss_sum = all_reduce_sum(loss_sum, ctx)
    confusion = all_reduce_sum(confusion, ctx).long()
    labels_all, predicted_all = [], []
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            labels_all += [i] * int(confusion[i, j])
            predicted_all += [j] * int(confusion[i, j])
    summary = metrics.summarize(labels_all, predicted_all)
    return float(loss_sum.item()) / max(1, summary["n"]), summary


def load_channels(env: TrainingEnvironment, hp: HyperParameters) -> dict[str, list[Sample]]:
    for name in REQUIRED_CHANNELS:
        if name not in env.channels:
            raise DataError(
                f"required channel '{name}' was not given to the job (channels: "
                f"{', '.join(sorted(env.channels)) or 'none'}); pass train and validation inputs"
            )
    loaded = {}
    for name in (*REQUIRED_CHANNELS, *OPTIONAL_CHANNELS):
        if name not in env.channels:
            continue
        loaded[name] = load_channel(name, env.channels[name], env, hp, os.cpu_count() or 1)
        log.info(
            "channel '%s': %d photos, per count %s",
            name,
            len(loaded[name]),
            dict(zip(CLASSES, class_counts(loaded[name]), strict=True)),
        )
    missing = [c for c, n in zip(CLASSES, class_counts(loaded["train"]), strict=True) if n == 0]
    if missing:
        raise DataError(
            f"channel 'train' has no photos of count(s) {missing}: the model cannot learn a "
            "count it never sees; add photos of every count 1..5"
        )
    return loaded


def run(env: TrainingEnvironment, local_rank: int = 0) -> dict[str, Any]:
    """Train, select, save and evaluate. Returns the final metrics (rank 0's view)."""
    hp = parse_hyperparameters(env.hyperparameters)
    ctx = init_process_group(env, local_rank)
    try:
        return _run(env, hp, ctx)
    finally:
        shutdown(ctx)


def _run(env: TrainingEnvironment, hp: HyperParameters, ctx: DistContext) -> dict[str, Any]:
    torch.manual_seed(hp.seed)  # same initial weights on every rank
    if ctx.is_master:
        log.info("hyperparameters: %s", hp.model_dump())
        log.info(
            "world size %d, device %s, torch %s, threads %d",
            ctx.world_size,
            ctx.device,
            torch.__version__,
            torch.get_num_threads(),
        )
    channels = load_channels(env, hp)
    workers = auto_workers(hp, processes_per_host(env))
    loader_generator = torch.Generator()
    loader, sampler = make_reader(
        channels["train"], hp, ctx, workers, train=True, generator=loader_generator
    )
    steps_per_epoch = math.ceil(math.ceil(sampler.size / ctx.world_size) / hp.batch_size)

    model = model_to_device(build_model(hp.arch, hp.pretrained), hp, ctx)
    if ctx.enabled:
        model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    weights = class_weights(channels["train"], hp.class_weighting)
    criterion = nn.CrossEntropyLoss(
        weight=None if weights is None else weights.to(ctx.device),
        label_smoothing=hp.label_smoothing,
    )
    if ctx.is_master and weights is not None:
        log.info(
            "class weights (%s): %s", hp.class_weighting, [round(w, 3) for w in weights.tolist()]
        )
    optimizer = make_optimizer(model, hp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp, steps_per_epoch))

    step = TrainStep(model, optimizer, scheduler, criterion, hp, ctx)
    store = CheckpointStore(env.paths.checkpoint_dir, env.job_name)
    state = TrainState()
    resumed = store.load_latest()
    if resumed is not None:
        saved, path = resumed
        state = restore(saved, model, optimizer, scheduler, hp)
        if ctx.is_master:
            log.info(
                "resumed from checkpoint %s: %d epoch(s) done, %d images into epoch %d",
                path,
                state.epoch,
                state.step_in_epoch,
                state.epoch + 1,
            )
            print(f"resumed from checkpoint {path} at epoch {state.epoch}", flush=True)

    def save_checkpoint() -> None:
        if ctx.is_master:
            path = store.save(checkpoint_state(model, optimizer, scheduler, state, hp))
            log.info("checkpoint written: %s", path)

    stop = _SigtermFlag()
    try:
        while state.epoch < hp.epochs:
            # step_in_epoch counts this rank's own samples (rank 0's, saved in the checkpoint;
            # ranks step in lockstep), the unit ShardSampler skips in: not divided by ranks.
            sampler.set_epoch(state.epoch, state.step_in_epoch)
            loader_generator.manual_seed(hp.seed * 7919 + state.epoch * 31 + state.step_in_epoch)
            train_metrics = train_one_epoch(
                model, step, loader, sampler, hp, ctx, state, stop, save_checkpoint
            )
            val_loss, val = evaluate(model, channels["validation"], hp, ctx, workers)
            state.epoch += 1
            state.step_in_epoch, state.partial = 0, [0.0, 0.0, 0.0]
            line = {
                "epoch": state.epoch,
                "lr": scheduler.get_last_lr()[0],
                **train_metrics,
                "validation:loss": val_loss,
                "validation:accuracy": val["accuracy"],
                "validation:rmse": val["rmse"],
                "validation:off_by_one": val["off_by_one"],
            }
            state.history.append(line)
            key = (val["accuracy"], -val_loss)
            if key > state.best_key:
                state.best_key, state.best_epoch, state.epochs_without_gain = key, state.epoch, 0
                state.best_weights = {
                    k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()
                }
            else:
                state.epochs_without_gain += 1
            if ctx.is_master:
                print(metrics.format_metrics(line), flush=True)
            save_checkpoint()
            if hp.patience and state.epochs_without_gain >= hp.patience:
                if ctx.is_master:
                    log.info(
                        "early stop: no validation gain for %d epochs (best epoch %d)",
                        hp.patience,
                        state.best_epoch,
                    )
                break
    except StopRequested:
        barrier(ctx)
        raise
    return _finish(env, hp, ctx, model, channels, state, workers)


def _finish(env, hp, ctx, model, channels, state: TrainState, workers: int) -> dict[str, Any]:
    """Restore the best epoch, save it, evaluate on test, write reports (rank 0 writes)."""
    if state.best_weights is not None:
        unwrap(model).load_state_dict(state.best_weights)
    best = next(h for h in state.history if h["epoch"] == state.best_epoch)
    final: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "validation": {
            k.split(":", 1)[1]: v for k, v in best.items() if k.startswith("validation:")
        },
    }
    test_summary = None
    if "test" in channels:
        test_loss, test_summary = evaluate(model, channels["test"], hp, ctx, workers)
        final["test"] = {
            "loss": test_loss,
            **{k: test_summary[k] for k in ("n", "accuracy", "rmse", "off_by_one")},
        }
        if ctx.is_master:
            print(
                metrics.format_metrics(
                    {
                        "test:accuracy": test_summary["accuracy"],
                        "test:rmse": test_summary["rmse"],
                        "test:off_by_one": test_summary["off_by_one"],
                    }
                ),
                flush=True,
            )
    if ctx.is_master:
        out = env.paths.output_data_dir
        out.mkdir(parents=True, exist_ok=True)
        reports.plot_training_curves(state.history, out / "training_curves.png")
        payload = {"final": final, "history": state.history}
        if test_summary is not None:
            atomic_write_json(out / "evaluation_test.json", test_summary)
            reports.plot_evaluation(test_summary, out / "evaluation_test.png", "test")
        atomic_write_json(out / "metrics.json", payload)
        card = save_model(
            model,
            env.paths.model_dir,
            arch=hp.arch,
            image_size=hp.image_size,
            extra={
                "hyperparameters": hp.model_dump(),
                "metrics": final,
                "training_job": env.job_name or None,
                "world_size": ctx.world_size,
                "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        log.info(
            "model saved to %s (best epoch %d, validation accuracy %.3f, sha256 %s)",
            env.paths.model_dir,
            state.best_epoch,
            best["validation:accuracy"],
            card["weights_sha256"][:12],
        )
        if hp.export_openvino:
            export_openvino(
                env.paths.model_dir,
                channels["validation"],
                channels.get("test"),
                calibration_photos=hp.int8_calibration_photos,
                seed=hp.seed,
            )
    barrier(ctx)
    return final
