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
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import CLASSES
from ..counting import (
    RULES,
    average_variants,
    choose_rule,
    decide,
    dihedral_variants,
    head_for_loss,
    make_loss,
    probabilities,
)
from ..errors import DataError
from ..files import atomic_write_json
from ..model import build_model, save_model, unwrap
from . import metrics, reports
from .calibrate import calibrate
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
from .export import export_openvino, record_skipped
from .hyperparameters import HyperParameters, parse_hyperparameters
from .precision import Precision, TrainStep, autocast, model_to_device, resolve, to_device
from .recipe import class_weights, lr_lambda, make_ema, make_optimizer
from .state import TrainState, checkpoint_state, restore
from .streaming import load_channel, lockstep_batches, make_reader, photo_files

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
    """One pass over this rank's shard; returns metrics reduced over all ranks.

    ``train:accuracy`` is of the most probable count (argmax): the decision rule is chosen on
    validation, and training accuracy is only a fit diagnostic.
    """
    model.train()
    head = head_for_loss(hp.loss)
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
            images, labels = to_device(images, labels, step.precision, ctx)
            loss, outputs = step.run(images, labels)
            n = labels.numel()
            loss_sum += loss.item() * n
            correct += (probabilities(outputs.detach(), head).argmax(1) == labels).sum().item()
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
    model: nn.Module,
    samples: list[Sample],
    hp: HyperParameters,
    ctx: DistContext,
    workers: int,
    precision: Precision,
    tta: int = 1,
) -> tuple[float, dict[str, dict[str, Any]]]:
    """Loss and, per decision rule, count metrics over a whole channel, reduced exactly.

    Each rank takes a slice. The loss is the negative log-likelihood of the true count under
    the model's five probabilities (fp32, comparable across heads). ``tta=8`` averages the
    probabilities of the eight flips and quarter turns of each photo.
    """
    model.eval()
    head = head_for_loss(hp.loss)
    loader, _ = make_reader(samples, hp, ctx, workers, train=False)
    k = len(CLASSES)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    confusion = torch.zeros(len(RULES), k, k, dtype=torch.float64)
    net = unwrap(model)
    for images, labels in loader:
        if tta > 1:
            images = dihedral_variants(images)
        images, labels = to_device(images, labels, precision, ctx)
        with autocast(precision):
            outputs = net(images)
        p = average_variants(probabilities(outputs, head), tta)
        loss_sum -= p.gather(1, labels.unsqueeze(1)).clamp_min(1e-12).log().sum().double().cpu()
        for r, rule in enumerate(RULES):
            predicted = torch.from_numpy(decide(p.cpu().numpy(), rule))
            index = labels.cpu() * k + predicted
            confusion[r] += torch.bincount(index, minlength=k * k).view(k, k).double()
    loss_sum = all_reduce_sum(loss_sum, ctx)
    confusion = all_reduce_sum(confusion, ctx).long()
    summaries = {rule: metrics.summarize_confusion(confusion[r]) for r, rule in enumerate(RULES)}
    return float(loss_sum.item()) / max(1, summaries[RULES[0]]["n"]), summaries


def pick_rule(hp: HyperParameters, summaries: dict[str, dict[str, Any]]) -> str:
    """The ``decision`` hyperparameter, or with ``auto`` the rule validation prefers."""
    return choose_rule(summaries) if hp.decision == "auto" else hp.decision


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
    precision = resolve(hp, ctx.device)
    if ctx.is_master:
        log.info(
            "precision %s, channels-last %s: %s",
            precision.name,
            precision.channels_last,
            precision.reason,
        )
    channels = load_channels(env, hp)
    workers = auto_workers(hp, processes_per_host(env))
    loader_generator = torch.Generator()
    loader, sampler = make_reader(
        channels["train"], hp, ctx, workers, train=True, generator=loader_generator
    )
    steps_per_epoch = math.ceil(math.ceil(sampler.size / ctx.world_size) / hp.batch_size)

    head = head_for_loss(hp.loss)
    model = model_to_device(build_model(hp.arch, hp.pretrained, head), precision, ctx)
    if ctx.enabled:
        model = DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    weights = class_weights(channels["train"], hp.class_weighting)
    criterion = make_loss(hp.loss, weights, hp.label_smoothing, hp.mse_weight)
    if ctx.is_master and weights is not None:
        log.info(
            "class weights (%s): %s", hp.class_weighting, [round(w, 3) for w in weights.tolist()]
        )
    optimizer = make_optimizer(model, hp)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp, steps_per_epoch))

    ema = make_ema(model, hp)
    # What is validated, selected and saved: the weight average if there is one.
    selected = model if ema is None else ema.module
    if ctx.is_master and ema is not None:
        log.info(
            "weight average: decay %g per step, about %.1f epochs of %d steps",
            hp.ema_decay,
            1 / (1 - hp.ema_decay) / steps_per_epoch,
            steps_per_epoch,
        )
    step = TrainStep(model, optimizer, scheduler, criterion, precision, ema)
    store = CheckpointStore(env.paths.checkpoint_dir, env.job_name)
    state = TrainState()
    resumed = store.load_latest()
    if resumed is not None:
        saved, path = resumed
        state = restore(saved, model, optimizer, scheduler, hp, ema)
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
            path = store.save(checkpoint_state(model, optimizer, scheduler, state, hp, ema))
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
            val_loss, val_rules = evaluate(
                selected, channels["validation"], hp, ctx, workers, precision
            )
            rule = pick_rule(hp, val_rules)
            val = val_rules[rule]
            if ctx.is_master:
                log.info(
                    "epoch %d validation per decision rule (accuracy/RMSE): %s; %s chosen",
                    state.epoch + 1,
                    ", ".join(
                        f"{r} {v['accuracy']:.3f}/{v['rmse']:.3f}" for r, v in val_rules.items()
                    ),
                    rule,
                )
            state.epoch += 1
            state.step_in_epoch, state.partial = 0, [0.0, 0.0, 0.0]
            line = {
                "epoch": state.epoch,
                "lr": scheduler.get_last_lr()[0],
                **train_metrics,
                "validation:loss": val_loss,
                "validation:accuracy": val["accuracy"],
                "validation:rmse": val["rmse"],
                "validation:mae": val["mae"],
                "validation:off_by_one": val["off_by_one"],
            }
            state.history.append(line)
            key = (val["accuracy"], -val_loss)
            if key > state.best_key:
                state.best_key, state.best_epoch, state.epochs_without_gain = key, state.epoch, 0
                state.best_weights = {
                    k: v.detach().cpu().clone() for k, v in unwrap(selected).state_dict().items()
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
    return _finish(env, hp, ctx, model, channels, state, workers, precision)


def _finish(
    env, hp, ctx, model, channels, state: TrainState, workers: int, precision: Precision
) -> dict[str, Any]:
    """Restore the best epoch, fix its decision rule, save it, evaluate on test, write reports.

    The rule is chosen again from the best weights' validation figures (evaluation is
    deterministic, so it is the rule that epoch was selected with). Test is also evaluated
    with 8-fold test-time augmentation under that same rule, for the record: the served
    default is without it. Rank 0 writes.
    """
    if state.best_weights is not None:
        unwrap(model).load_state_dict(state.best_weights)
    best = next(h for h in state.history if h["epoch"] == state.best_epoch)
    _, val_rules = evaluate(model, channels["validation"], hp, ctx, workers, precision)
    rule = pick_rule(hp, val_rules)
    figures = ("n", "accuracy", "rmse", "mae", "off_by_one")
    final: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "decision": rule,
        "validation": {
            k.split(":", 1)[1]: v for k, v in best.items() if k.startswith("validation:")
        },
        "validation_by_rule": {r: {k: v[k] for k in figures} for r, v in val_rules.items()},
    }
    if ctx.is_master:
        log.info("decision rule %s (decision=%s), chosen on validation", rule, hp.decision)
    test_summary = test_tta = None
    if "test" in channels:
        test_loss, test_rules = evaluate(model, channels["test"], hp, ctx, workers, precision)
        _, test_tta_rules = evaluate(model, channels["test"], hp, ctx, workers, precision, tta=8)
        test_summary, test_tta = test_rules[rule], test_tta_rules[rule]
        final["test"] = {"loss": test_loss, **{k: test_summary[k] for k in figures}}
        final["test_tta8"] = {k: test_tta[k] for k in figures}
        if ctx.is_master:
            print(
                metrics.format_metrics(
                    {
                        "test:accuracy": test_summary["accuracy"],
                        "test:rmse": test_summary["rmse"],
                        "test:mae": test_summary["mae"],
                        "test:off_by_one": test_summary["off_by_one"],
                    }
                ),
                flush=True,
            )
            log.info(
                "test with 8-fold TTA: accuracy %.4f, RMSE %.4f, MAE %.4f",
                test_tta["accuracy"],
                test_tta["rmse"],
                test_tta["mae"],
            )
    # issue 22: calibration, confidence and verdict thresholds fitted on validation (card sections)
    calibrated = calibrate(
        model, channels, hp, ctx, workers, precision,
        head=head_for_loss(hp.loss), decision=rule, out_dir=env.paths.output_data_dir,
    )  # fmt: skip
    if ctx.is_master:
        out = env.paths.output_data_dir
        out.mkdir(parents=True, exist_ok=True)
        reports.plot_training_curves(state.history, out / "training_curves.png")
        payload = {"final": final, "history": state.history}
        if test_summary is not None:
            atomic_write_json(
                out / "evaluation_test.json", {**test_summary, "decision": rule, "tta8": test_tta}
            )
            reports.plot_evaluation(test_summary, out / "evaluation_test.png", "test")
        atomic_write_json(out / "metrics.json", payload)
        card = save_model(
            model,
            env.paths.model_dir,
            arch=hp.arch,
            image_size=hp.image_size,
            head=head_for_loss(hp.loss),
            decision=rule,
            extra={
                "hyperparameters": hp.model_dump(),
                "metrics": final,
                "precision": precision.describe(),
                "training_job": env.job_name or None,
                "world_size": ctx.world_size,
                "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **calibrated,  # issue 22
            },
        )
        log.info(
            "model saved to %s (best epoch %d, validation accuracy %.3f, decision %s, sha256 %s)",
            env.paths.model_dir,
            state.best_epoch,
            best["validation:accuracy"],
            rule,
            card["weights_sha256"][:12],
        )
        if hp.export_openvino:
            _export(env, hp, channels)
    barrier(ctx)
    return final


def _export(env: TrainingEnvironment, hp: HyperParameters, channels: dict[str, Any]) -> None:
    """The OpenVINO export, which reads photos by path: a shard channel's are written out for it
    (to a temporary folder, removed after). Without validation photos on disk it is skipped."""
    with tempfile.TemporaryDirectory(prefix="bincounter-photos-") as photos:
        try:
            validation = photo_files(channels["validation"], Path(photos) / "validation")
        except DataError as exc:
            record_skipped(env.paths.model_dir, exc.reason)
            return
        test = None
        if "test" in channels:
            try:
                test = photo_files(channels["test"], Path(photos) / "test")
            except DataError as exc:
                log.info("int8 is not evaluated on test: %s", exc.reason)
        export_openvino(
            env.paths.model_dir,
            validation,
            test,
            calibration_photos=hp.int8_calibration_photos,
            min_agreement=hp.int8_min_agreement,
            seed=hp.seed,
        )
