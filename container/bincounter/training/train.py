"""The training job: one readable loop, DDP woven in, in the style of torchvision's references.

``run(env)`` is what ``./train`` calls inside the container. It trains on ``train``, selects
the best epoch on ``validation`` (accuracy, then loss), writes that model to ``/opt/ml/model``,
evaluates it once on ``test`` if the channel exists, and writes reports to
``/opt/ml/output/data``. A checkpoint is written every epoch (and on SIGTERM, mid-epoch) and
a restarted job resumes from the newest good one.

Read it top to bottom: ``train_one_epoch``, ``evaluate``, ``load_channels``, then ``run`` (set
up, the epoch loop, ``finish``). The pieces it composes live beside it (see ``__init__``).
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.algorithms.join import Join
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from .. import CLASSES, calibration
from ..counting import (
    average_variants,
    dihedral_variants,
    head_for_loss,
    make_loss,
    probabilities,
)
from ..decision import RULES, choose_rule, decide
from ..errors import DataError, StopRequested
from ..files import atomic_write_json
from ..model import build_model, save_model, unwrap
from ..params import OPTIONAL_CHANNELS, REQUIRED_CHANNELS
from . import calibrate, metrics, reports
from .channels import Channel, load_channel, lockstep_batches, make_reader
from .checkpoint import CheckpointStore
from .data import auto_workers, class_counts
from .distributed import (
    DistContext,
    all_reduce_sum,
    any_rank,
    barrier,
    init_process_group,
    processes_per_host,
    shutdown,
)
from .environment import TrainingEnvironment
from .hyperparameters import HyperParameters, parse_hyperparameters
from .openvino_export import export_openvino, record_skipped
from .precision import Precision, TrainStep, autocast, model_to_device, resolve, to_device
from .recipe import class_weights, make_ema, make_optimizer, make_scheduler
from .running_sums import RunningSums
from .state import TrainState, checkpoint_state, restore

log = logging.getLogger(__name__)

#: Exit status after a SIGTERM that was handled by checkpointing (128 + SIGTERM).
EXIT_STOPPED = 143

#: The sums a checkpoint carries over mid-epoch (``TrainState.partial``), in this order.
RESUMABLE_SUMS = ("loss", "correct", "seen")


class SigtermFlag:
    """Set by SIGTERM (SageMaker's stop, a spot interruption): the loop checks it per step."""

    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: finishing this step, then checkpointing and exiting")
        self.set = True


def stop_requested(stop: SigtermFlag, batch: int, lockstep: int, ctx: DistContext) -> bool:
    """Whether every rank stops after this batch: SIGTERM reached this process (single
    process) or any rank (a vote, taken only on the ``lockstep`` batches every rank runs)."""
    if not ctx.enabled:
        return stop.set
    return batch < lockstep and any_rank(stop.set, ctx)


def patience_exhausted(hp: HyperParameters, state: TrainState) -> bool:
    """Early stop: ``patience`` epochs in a row without a validation gain (0: never)."""
    return bool(hp.patience) and state.epochs_without_gain >= hp.patience


def train_one_epoch(
    model: nn.Module,
    step: TrainStep,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    sampler: Any,
    hp: HyperParameters,
    ctx: DistContext,
    state: TrainState,
    stop: SigtermFlag,
    on_stop: Callable[[], None],
) -> dict[str, float]:
    """One pass over this rank's shard; returns metrics reduced over all ranks.

    ``train:accuracy`` is of the most probable count (argmax): the decision rule is chosen on
    validation, and training accuracy is only a fit diagnostic. On SIGTERM the running sums go
    into ``state``, ``on_stop`` writes the checkpoint and ``StopRequested`` is raised.
    """
    model.train()
    head = head_for_loss(hp.loss)
    sums = RunningSums((*RESUMABLE_SUMS, "images"), state.partial)
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
    lockstep = lockstep_batches(sampler, ctx)
    with Join([model]) if ctx.enabled else contextlib.nullcontext():
        for batch, (images, labels) in enumerate(loader):
            images, labels = to_device(images, labels, step.precision, ctx)
            loss, outputs = step.run(images, labels)
            n = labels.numel()
            sums.update(
                loss=loss.item() * n,
                correct=(probabilities(outputs.detach(), head).argmax(1) == labels).sum().item(),
                seen=n,
                images=n,
            )
            state.step_in_epoch += n
            progress.update(n)
            now = time.monotonic()
            if ctx.is_master and progress.disable and now - last_log > 30:
                log.info(
                    "epoch %d: %d/%d images, loss %.4f",
                    state.epoch + 1,
                    state.step_in_epoch,
                    total,
                    sums.mean("loss", per="seen"),
                )
                last_log = now
            if stop_requested(stop, batch, lockstep, ctx):
                state.partial = sums.values(*RESUMABLE_SUMS)
                on_stop()
                raise StopRequested
    progress.close()
    elapsed = time.monotonic() - started
    totals = sums.reduced(ctx)
    rate = all_reduce_sum(torch.tensor([sums["images"] / max(elapsed, 1e-9)]), ctx)
    if ctx.is_master:
        log.info(
            "epoch %d: %d training images across %d rank(s) in %.1f s",
            state.epoch + 1,
            int(totals["seen"]),
            ctx.world_size,
            elapsed,
        )
    return {
        "train:loss": totals["loss"] / max(1.0, totals["seen"]),
        "train:accuracy": totals["correct"] / max(1.0, totals["seen"]),
        "train:images_per_second": float(rate[0]),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    samples: Channel,
    hp: HyperParameters,
    ctx: DistContext,
    workers: int,
    precision: Precision,
    tta: int = 1,
) -> tuple[float, dict[str, dict[str, Any]]]:
    """Loss and, per decision rule, count metrics over a whole channel, reduced exactly.

    Each rank takes a slice. The loss is the negative log-likelihood of the true count under
    the model's five probabilities (fp32, comparable across heads). ``tta=8`` averages the
    probabilities of the eight flips and quarter turns of each photo. The counts are the ones
    the endpoint returns (its rule picks them from these probabilities; the card's calibration
    changes only the confidence an answer carries, ``calibration.served``).
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
        confusion += rule_confusions(p.cpu().numpy(), labels.cpu().numpy())
    loss_sum = all_reduce_sum(loss_sum, ctx)
    confusion = all_reduce_sum(confusion, ctx).long()
    summaries = {rule: metrics.summarize_confusion(confusion[r]) for r, rule in enumerate(RULES)}
    return float(loss_sum.item()) / max(1, summaries[RULES[0]]["n"]), summaries


def rule_confusions(p: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """``float64 [len(RULES), 5, 5]``: each rule's confusion matrix (rows: true count)."""
    k = len(CLASSES)
    truth = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return torch.stack(
        [
            torch.bincount(truth * k + torch.from_numpy(decide(p, rule)), minlength=k * k)
            .view(k, k)
            .double()
            for rule in RULES
        ]
    )


def summarize(p: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, dict[str, Any]]]:
    """``evaluate``'s loss and per-rule figures from a whole split's probabilities already
    gathered (the calibration step's one read of validation or test)."""
    confusion = rule_confusions(p, labels).long()
    summaries = {rule: metrics.summarize_confusion(confusion[r]) for r, rule in enumerate(RULES)}
    return calibration.nll(p, labels), summaries


def pick_rule(hp: HyperParameters, summaries: dict[str, dict[str, Any]]) -> str:
    """The ``decision`` hyperparameter, or with ``auto`` the rule validation prefers."""
    return choose_rule(summaries) if hp.decision == "auto" else hp.decision


def load_channels(env: TrainingEnvironment, hp: HyperParameters) -> dict[str, Channel]:
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
        job = set_up(env, hp, ctx)
        train_epochs(job)
        return finish(job)
    finally:
        shutdown(ctx)


@dataclass
class Job:
    """What the loop works with, built once by ``set_up``: the steps below share it."""

    env: TrainingEnvironment
    hp: HyperParameters
    ctx: DistContext
    channels: dict[str, Channel]
    workers: int
    loader: Any
    sampler: Any
    loader_generator: torch.Generator
    #: The model, optimizer, schedule, loss, precision and weight average, as one step uses them.
    step: TrainStep
    store: CheckpointStore
    state: TrainState = field(default_factory=TrainState)

    @property
    def model(self) -> nn.Module:
        return self.step.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step.optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return self.step.scheduler

    @property
    def ema(self) -> AveragedModel | None:
        return self.step.ema

    @property
    def precision(self) -> Precision:
        return self.step.precision

    @property
    def selected(self) -> nn.Module:
        """What is validated, selected and saved: the weight average if there is one."""
        return self.model if self.ema is None else self.ema.module

    def save_checkpoint(self) -> None:
        """Rank 0 writes the whole resumable state (every rank holds the same)."""
        if self.ctx.is_master:
            path = self.store.save(
                checkpoint_state(
                    self.model, self.optimizer, self.scheduler, self.state, self.hp, self.ema
                )
            )
            log.info("checkpoint written: %s", path)


def set_up(env: TrainingEnvironment, hp: HyperParameters, ctx: DistContext) -> Job:
    """Channels, loader, model, optimizer, schedule and weight average, then the checkpoint
    to resume from, if any. The order is the order random numbers are drawn in: keep it."""
    torch.manual_seed(hp.seed)  # same initial weights on every rank
    precision = resolve(hp, ctx.device)
    _log_set_up(hp, ctx, precision)
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
    scheduler = make_scheduler(optimizer, hp, steps_per_epoch)
    ema = make_ema(model, hp)
    if ctx.is_master and ema is not None:
        log.info(
            "weight average: decay %g per step, about %.1f epochs of %d steps",
            hp.ema_decay,
            1 / (1 - hp.ema_decay) / steps_per_epoch,
            steps_per_epoch,
        )
    step = TrainStep(model, optimizer, scheduler, criterion, precision, ema)
    store = CheckpointStore(env.paths.checkpoint_dir, env.job_name)
    job = Job(env, hp, ctx, channels, workers, loader, sampler, loader_generator, step, store)
    resume(job)
    return job


def _log_set_up(hp: HyperParameters, ctx: DistContext, precision: Precision) -> None:
    if not ctx.is_master:
        return
    log.info("hyperparameters: %s", hp.model_dump())
    log.info(
        "world size %d, device %s, torch %s, threads %d",
        ctx.world_size,
        ctx.device,
        torch.__version__,
        torch.get_num_threads(),
    )
    log.info(
        "precision %s, channels-last %s: %s",
        precision.name,
        precision.channels_last,
        precision.reason,
    )


def resume(job: Job) -> None:
    """Load the newest good checkpoint of this job into ``job``, if there is one."""
    resumed = job.store.load_latest()
    if resumed is None:
        return
    saved, path = resumed
    job.state = restore(saved, job.model, job.optimizer, job.scheduler, job.hp, job.ema)
    if job.ctx.is_master:
        log.info(
            "resumed from checkpoint %s: %d epoch(s) done, %d images into epoch %d",
            path,
            job.state.epoch,
            job.state.step_in_epoch,
            job.state.epoch + 1,
        )
        print(f"resumed from checkpoint {path} at epoch {job.state.epoch}", flush=True)


def train_epochs(job: Job) -> None:
    """The epoch loop: train, validate, keep the best, checkpoint; until the last epoch, the
    patience runs out, or SIGTERM (``StopRequested``, after every rank has checkpointed)."""
    hp, ctx, state = job.hp, job.ctx, job.state
    stop = SigtermFlag()
    try:
        while state.epoch < hp.epochs:
            # step_in_epoch counts this rank's own samples (rank 0's, saved in the checkpoint;
            # ranks step in lockstep), the unit FolderSampler skips in: not divided by ranks.
            job.sampler.set_epoch(state.epoch, state.step_in_epoch)
            job.loader_generator.manual_seed(
                hp.seed * 7919 + state.epoch * 31 + state.step_in_epoch
            )
            train_metrics = train_one_epoch(
                job.model,
                job.step,
                job.loader,
                job.sampler,
                hp,
                ctx,
                state,
                stop,
                job.save_checkpoint,
            )
            line = validate_epoch(job, train_metrics)
            if ctx.is_master:
                print(metrics.format_metrics(line), flush=True)
            job.save_checkpoint()
            if patience_exhausted(hp, state):
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


def validate_epoch(job: Job, train_metrics: dict[str, float]) -> dict[str, float]:
    """Validate the epoch just trained, close it in ``job.state`` (history, best so far,
    patience) and return its metric line."""
    hp, ctx, state = job.hp, job.ctx, job.state
    val_loss, val_rules = evaluate(
        job.selected, job.channels["validation"], hp, ctx, job.workers, job.precision
    )
    rule = pick_rule(hp, val_rules)
    val = val_rules[rule]
    if ctx.is_master:
        log.info(
            "epoch %d validation per decision rule (accuracy/RMSE): %s; %s chosen",
            state.epoch + 1,
            ", ".join(f"{r} {v['accuracy']:.3f}/{v['rmse']:.3f}" for r, v in val_rules.items()),
            rule,
        )
    state.epoch += 1
    state.step_in_epoch, state.partial = 0, [0.0, 0.0, 0.0]
    line = {
        "epoch": state.epoch,
        "lr": job.scheduler.get_last_lr()[0],
        **train_metrics,
        "validation:loss": val_loss,
        **{f"validation:{k}": val[k] for k in ("accuracy", "rmse", "mae", "off_by_one")},
    }
    state.history.append(line)
    key = (val["accuracy"], -val_loss)
    if key > state.best_key:
        state.best_key, state.best_epoch, state.epochs_without_gain = key, state.epoch, 0
        state.best_weights = {
            k: v.detach().cpu().clone() for k, v in unwrap(job.selected).state_dict().items()
        }
    else:
        state.epochs_without_gain += 1
    return line


#: Figures of one channel that the card and ``metrics.json`` keep.
FIGURES = ("n", "accuracy", "rmse", "mae", "off_by_one")


def finish(job: Job) -> dict[str, Any]:
    """Restore the best epoch, fix its decision rule and calibrate it, evaluate on test, then
    (rank 0) write the reports, the model and its card, and the OpenVINO export.

    A step that changes the selected model before it is saved (as calibration does) goes
    between ``select_best`` and ``save_selected_model``: after the best epoch is fixed, before
    the card is written. Every step until ``save_selected_model`` reads channels, which is
    collective: all ranks run them. Each of validation and test is read once, for one pass and
    TTA x8 together (``calibrate.collect_probabilities``).
    """
    final = select_best(job)
    test = None
    if "test" in job.channels:
        test = calibrate.collect_probabilities(
            job.model,
            job.channels["test"],
            job.hp,
            job.ctx,
            head=head_for_loss(job.hp.loss),
            workers=job.workers,
            precision=job.precision,
        )
    sections = calibrate_selected(job, final, test)
    test_summary = evaluate_test(job, final, test)
    if job.ctx.is_master:
        write_reports(job, final, test_summary)
        save_selected_model(job, final, sections)
        if job.hp.export_openvino:
            _export(job.env, job.hp, job.channels)
    barrier(job.ctx)
    return final


def select_best(job: Job) -> dict[str, Any]:
    """Load the best epoch's weights (selected on uncalibrated validation figures as the epochs
    ran); the start of the card's ``metrics``."""
    state = job.state
    if state.best_weights is not None:
        unwrap(job.model).load_state_dict(state.best_weights)
    return {"best_epoch": state.best_epoch, "epochs_run": state.epoch}


def calibrate_selected(
    job: Job, final: dict[str, Any], test: calibrate.SplitProbabilities | None
) -> dict[str, Any]:
    """Choose the decision rule on validation and fit the calibration there; the card's
    ``calibration`` and ``verification`` sections (``test``'s probabilities are reported).

    The rule picks the count from the network's own probabilities and the calibration changes
    only how sure an answer says it is (``calibration.served``), so the rule's validation
    figures in ``final`` (``validation``, ``validation_by_rule``) are the endpoint's counts; the
    confidence and verdict thresholds are fitted under that rule.
    """
    hp, ctx = job.hp, job.ctx
    fitted = calibrate.fit_on_validation(
        job.model,
        job.channels,
        hp,
        ctx,
        workers=job.workers,
        precision=job.precision,
        head=head_for_loss(hp.loss),
    )
    val_loss, val_rules = summarize(fitted.probabilities[1], fitted.labels)
    rule = pick_rule(hp, val_rules)
    if ctx.is_master:
        log.info("decision rule %s (decision=%s), chosen on validation", rule, hp.decision)
    final.update(
        decision=rule,
        validation={"loss": val_loss, **{k: val_rules[rule][k] for k in FIGURES}},
        validation_by_rule={r: {k: v[k] for k in FIGURES} for r, v in val_rules.items()},
    )
    return calibrate.calibrate(
        fitted, test, ctx, decision=rule, out_dir=job.env.paths.output_data_dir
    )


def evaluate_test(
    job: Job, final: dict[str, Any], test: calibrate.SplitProbabilities | None
) -> dict[str, Any] | None:
    """The selected model's test figures under its rule, from one pass and with 8-fold
    test-time augmentation (for the record: the served default is without it).

    Adds ``test`` and ``test_tta8`` to ``final``; returns the full test summary with the TTA
    one under ``tta8``, or ``None`` without a test channel.
    """
    if test is None:
        return None
    by_tta, labels = test
    rule = final["decision"]
    test_loss, test_rules = summarize(by_tta[1], labels)
    _, test_tta_rules = summarize(by_tta[8], labels)
    summary, tta = test_rules[rule], test_tta_rules[rule]
    final["test"] = {"loss": test_loss, **{k: summary[k] for k in FIGURES}}
    final["test_tta8"] = {k: tta[k] for k in FIGURES}
    if job.ctx.is_master:
        print(
            metrics.format_metrics(
                {f"test:{k}": summary[k] for k in ("accuracy", "rmse", "mae", "off_by_one")}
            ),
            flush=True,
        )
        log.info(
            "test with 8-fold TTA: accuracy %.4f, RMSE %.4f, MAE %.4f",
            tta["accuracy"],
            tta["rmse"],
            tta["mae"],
        )
    return {**summary, "decision": rule, "tta8": tta}


def write_reports(job: Job, final: dict[str, Any], test: dict[str, Any] | None) -> None:
    """``metrics.json``, the training curves and the test evaluation under output/data."""
    out = job.env.paths.output_data_dir
    out.mkdir(parents=True, exist_ok=True)
    reports.plot_training_curves(job.state.history, out / "training_curves.png")
    if test is not None:
        atomic_write_json(out / "evaluation_test.json", test)
        reports.plot_evaluation(test, out / "evaluation_test.png", "test")
    atomic_write_json(out / "metrics.json", {"final": final, "history": job.state.history})


def save_selected_model(job: Job, final: dict[str, Any], sections: dict[str, Any]) -> None:
    """``model.pt`` and its card (written last: its presence marks a complete model), with the
    calibration's ``sections`` (``calibration``, ``verification``), which the server reads."""
    hp, env, state = job.hp, job.env, job.state
    card = save_model(
        job.model,
        env.paths.model_dir,
        arch=hp.arch,
        image_size=hp.image_size,
        head=head_for_loss(hp.loss),
        decision=final["decision"],
        extra={
            "hyperparameters": hp.model_dump(),
            "metrics": final,
            "precision": job.precision.describe(),
            "training_job": env.job_name or None,
            "world_size": job.ctx.world_size,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **sections,
        },
    )
    log.info(
        "model saved to %s (best epoch %d, validation accuracy %.3f, decision %s, sha256 %s)",
        env.paths.model_dir,
        state.best_epoch,
        final["validation"]["accuracy"],
        final["decision"],
        card["weights_sha256"][:12],
    )


def _export(env: TrainingEnvironment, hp: HyperParameters, channels: dict[str, Any]) -> None:
    """The OpenVINO export, which reads photos by path: a shard channel's are written out for it
    (to a temporary folder, removed after). Without validation photos on disk it is skipped."""
    with tempfile.TemporaryDirectory(prefix="bincounter-photos-") as photos:
        try:
            validation = channels["validation"].photo_files(Path(photos) / "validation")
        except DataError as exc:
            record_skipped(env.paths.model_dir, exc.reason)
            return
        test = None
        if "test" in channels:
            try:
                test = channels["test"].photo_files(Path(photos) / "test")
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
