"""``bincounter-aws``: prepare -> upload -> tune -> train -> deploy -> invoke -> transform -> delete.

One argparse program with a subcommand per step; ``scripts/*.py`` are thin wrappers that call
``main`` with their subcommand. Every subcommand takes the shared configuration flags
(``--config --region --role --bucket --image --prefix``; see ``config.py`` for the environment
variables and file). Errors a person can fix print one line and exit with status 2; AWS errors
exit with status 1. See ``docs/aws.md`` for the workflow with examples.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import logs
from ..abid import BUCKET as ABID_BUCKET
from ..errors import UserError
from .config import AwsConfig, resolve_config
from .inputs import INPUT_MODES

log = logging.getLogger("bincounter.aws")


# --------------------------------------------------------------------------- shared flags


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("configuration (flag > environment > config file)")
    g.add_argument("--config", help="TOML/JSON config file (default ~/.config/bincounter/aws.toml)")
    g.add_argument("--region", help="AWS region (BINCOUNTER_REGION, AWS_REGION)")
    g.add_argument("--role", help="SageMaker execution role ARN (BINCOUNTER_ROLE_ARN)")
    g.add_argument("--bucket", help="S3 bucket for data, outputs, checkpoints (BINCOUNTER_BUCKET)")
    g.add_argument("--image", help="ECR image URI of bincounter (BINCOUNTER_IMAGE_URI)")
    g.add_argument("--prefix", help="S3 key prefix in the bucket (default bincounter)")
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parent


def _config(args: argparse.Namespace) -> AwsConfig:
    flags = {k: getattr(args, k, None) for k in ("region", "role", "bucket", "image", "prefix")}
    return resolve_config(flags, config_file=args.config)


def _channels_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("data channels")
    g.add_argument(
        "--data",
        help="S3 prefix holding train/ validation/ test/ (default s3://<bucket>/<prefix>/data)",
    )
    g.add_argument("--train", help="train channel URI (overrides --data)")
    g.add_argument("--validation", help="validation channel URI (overrides --data)")
    g.add_argument("--test", help="test channel URI (overrides --data)")
    g.add_argument("--no-test", action="store_true", help="do not pass a test channel")
    return parent


def _channels(
    args: argparse.Namespace, config: AwsConfig, test: bool, *, local: bool = False
) -> dict[str, str]:
    """Channel name -> URI from ``--data`` and the per-channel flags (which win).

    For a cloud job ``--data`` is an S3 prefix (default ``s3://<bucket>/<prefix>/data``) and
    names all three channels; for local mode it is a prepared folder, and only the channels it
    holds are passed.
    """
    from ..dataprep.layout import SPLITS
    from .s3data import channel_uris

    explicit = {c: getattr(args, c) for c in SPLITS if getattr(args, c)}
    base = args.data
    if local:
        folder = Path(base) if base else None
        channels = {s: str(folder / s) for s in SPLITS if folder and (folder / s).is_dir()}
    else:
        if base is None and not {"train", "validation"} <= explicit.keys():
            base = config.s3_uri("data")
        channels = channel_uris(base) if base else {}
    channels.update(explicit)
    if not test or args.no_test:
        channels.pop("test", None)
    return channels


def _jobs_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("compute")
    g.add_argument("--instance-type", default="ml.g4dn.xlarge")
    g.add_argument("--instance-count", type=int, default=1, help="hosts per training job")
    g.add_argument("--volume-size", type=int, default=30, help="EBS GB per host")
    g.add_argument("--spot", action="store_true", help="managed spot training (checkpoints to S3)")
    g.add_argument("--max-run", type=int, default=24 * 3600, help="max run seconds per job")
    g.add_argument("--max-wait", type=int, help="max seconds incl. waiting for spot (>= max run)")
    g.add_argument(
        "--checkpoint-uri",
        help="S3 URI synced with /opt/ml/checkpoints (default with --spot: "
        "s3://<bucket>/<prefix>/checkpoints/<base job name>)",
    )
    g.add_argument("--output-uri", help="S3 prefix for model.tar.gz (default .../output)")
    g.add_argument("--base-job-name", default="bincounter")
    g.add_argument("--env", action="append", metavar="KEY=VALUE", help="container environment")
    g.add_argument(
        "--hp", action="append", metavar="NAME=VALUE", help="hyperparameter (repeatable)"
    )
    g.add_argument(
        "--input-mode",
        default="File",
        choices=INPUT_MODES,
        help="how channels reach the container: File (copied first), FastFile (streamed "
        "from S3 as read; best with tar shards) or Pipe (tar shards only, one FIFO per pass, "
        "one process per host)",
    )
    g.add_argument(
        "--distribution",
        action="append",
        metavar="CHANNEL=TYPE",
        help="FullyReplicated (default) or ShardedByS3Key per channel, e.g. train=ShardedByS3Key",
    )
    return parent


def _settings(args: argparse.Namespace) -> Any:
    from .inputs import parse_assignments
    from .jobs import JobSettings

    return JobSettings(
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        volume_size_gb=args.volume_size,
        spot=args.spot,
        max_run_seconds=args.max_run,
        max_wait_seconds=args.max_wait,
        checkpoint_uri=args.checkpoint_uri,
        output_uri=args.output_uri,
        base_job_name=args.base_job_name,
        environment=parse_assignments(args.env),
        input_mode=args.input_mode,
        distribution=parse_assignments(args.distribution),
    )


# --------------------------------------------------------------------------- commands


def _prepare_source(args: argparse.Namespace) -> Any:
    from ..dataprep.sources import LocalSource, S3Source

    if args.source_dir:
        return LocalSource(args.source_dir, args.images_dir, args.metadata_dir)
    return S3Source(
        args.source_bucket,
        unsigned=not args.signed,
        endpoint_url=args.source_endpoint_url,
        max_connections=args.workers + 4,
        images_prefix=args.images_dir.strip("/") + "/",
        metadata_prefix=args.metadata_dir.strip("/") + "/",
    )


def _fractions(text: str) -> tuple[float, float, float]:
    fractions = tuple(float(x) for x in text.split(","))
    if len(fractions) != 3:
        raise UserError(f"--split {text!r}: give three shares, e.g. 0.8,0.1,0.1")
    return fractions  # type: ignore[return-value]


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    """Which ids and how they split: the same flags for every preparation path."""
    return {
        "file_list": args.file_list,
        "max_per_count": args.max_per_count,
        "cache_dir": args.cache,
        "seed": args.seed,
        "fractions": _fractions(args.split),
    }


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.processing:
        return _prepare_processing(args)
    if args.layout == "shards" or args.full_scan or args.parts:
        return _prepare_parts(args)
    from ..dataprep.pipeline import prepare, summary_text

    result = prepare(
        _prepare_source(args),
        args.out,
        **_selection(args),
        resize=args.resize,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(summary_text(result))
    print(f"manifest: {result.manifest}")
    print(f"report: {result.report_json} {result.report_png or ''}")
    if args.upload is not None:
        return _upload(args, args.out, args.upload or None)
    return 0


def _check_selection(args: argparse.Namespace) -> None:
    if not args.file_list and not args.full_scan:
        raise UserError(
            "this path selects by a file list or the full metadata scan: give --file-list or "
            "--full-scan (optionally with --max-per-count)"
        )


def _print_report(manifest: Path, report: dict[str, Any]) -> None:
    print(f"prepared {report['photos']} photos: {report['totals']}")
    print(f"excluded: {len(report['excluded'])} {report['excluded_by_reason'] or ''}")
    for split, numbers in report.get("shards", {}).items():
        print(f"{split}: {numbers['files']} shards, {numbers['bytes'] / 1e6:.1f} MB")
    print(f"manifest: {manifest}")


def _prepare_parts(args: argparse.Namespace) -> int:
    """The Processing job's code, run here in-process (plan, every part, manifest)."""
    from ..dataprep.pipeline import prepare_parts

    _check_selection(args)
    manifest, report = prepare_parts(
        _prepare_source(args),
        args.out,
        parts=args.parts or 4,
        layout=args.layout,
        shard_bytes=int(args.shard_size_mb * 2**20),
        with_metadata=not args.no_shard_metadata,
        resize=args.resize,
        **_selection(args),
        depth=args.scan_depth,
        workers=args.workers,
        progress=not args.no_progress,
    )
    _print_report(manifest, report)
    if args.upload is not None:
        return _upload(args, args.out, args.upload or None)
    return 0


def _prepare_processing(args: argparse.Namespace) -> int:
    """Plan here, process on N instances of a SageMaker Processing job, assemble here."""
    from ..dataprep.pipeline import plan
    from .processing import ProcessingSettings, container_arguments, launch_processing

    _check_selection(args)
    if args.source_dir:
        raise UserError("--processing reads from S3: a Processing job cannot see --source-dir")
    config = _config(args)
    count = args.processing_instance_count
    planned = plan(
        _prepare_source(args),
        args.out,
        parts=args.parts or 4 * count,
        **_selection(args),
        depth=args.scan_depth,
        workers=args.workers,
        progress=not args.no_progress,
    )
    output_uri = args.upload or config.s3_uri("data")
    arguments = container_arguments(
        layout=args.layout,
        shard_size_mb=args.shard_size_mb,
        resize=args.resize,
        seed=args.seed,
        with_metadata=not args.no_shard_metadata,
        source_bucket=args.source_bucket,
        images_dir=args.images_dir,
        metadata_dir=args.metadata_dir,
        workers=args.workers,
    )
    launch = launch_processing(
        config,
        planned.parts,
        output_uri,
        arguments,
        ProcessingSettings(
            instance_type=args.processing_instance_type,
            instance_count=count,
            volume_size_gb=args.processing_volume_size,
        ),
        job_name=args.job_name,
        wait=args.wait,
    )
    print(f"processing job: {launch.job_name} ({launch.status}), plan {launch.plan_uri}")
    if not args.wait:
        print(
            f"when it has completed: bincounter-aws assemble --out {args.out} --data {output_uri}"
        )
        return 0
    return _assemble(
        config, output_uri, Path(args.out), {"resize": args.resize, "layout": args.layout}
    )


def _assemble(config: AwsConfig, output_uri: str, out: Path, extra: dict[str, Any]) -> int:
    from ..dataprep.parts import PLAN_DIR, PLAN_SETTINGS
    from .processing import finish
    from .s3data import channel_uris

    try:
        settings = json.loads((out / PLAN_DIR / PLAN_SETTINGS).read_text())
    except (OSError, ValueError):
        raise UserError(
            f"{out / PLAN_DIR / PLAN_SETTINGS} is missing: --out must be the folder the plan was made in"
        ) from None
    source = settings.pop("source", "?")
    manifest, report = finish(config, output_uri, out, source, {**settings, **extra})
    _print_report(manifest, report)
    for name, uri in channel_uris(output_uri).items():
        print(f"channel {name}: {uri}")
    return 0


def cmd_assemble(args: argparse.Namespace) -> int:
    config = _config(args)
    extra = {"resize": args.resize, "layout": args.layout}
    return _assemble(config, args.data or config.s3_uri("data"), Path(args.out), extra)


def _upload(args: argparse.Namespace, out: str, target: str | None) -> int:
    from .s3data import upload_prepared

    config = _config(args)
    base = target or config.s3_uri("data")
    result = upload_prepared(
        out, base, config=config, workers=args.workers, progress=not args.no_progress
    )
    print(f"uploaded {len(result.uploaded)} files, skipped {len(result.skipped)} unchanged")
    for name, uri in result.channels.items():
        print(f"channel {name}: {uri}")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    return _upload(args, args.out, args.to)


def cmd_tune(args: argparse.Namespace) -> int:
    from .inputs import parse_assignments, write_hyperparameters_file
    from .jobs import best_hyperparameters, launch_tuning
    from .ranges import build_ranges

    config = _config(args)
    ranges = build_ranges(parse_assignments(args.range), defaults=not args.no_default_ranges)
    launch = launch_tuning(
        config,
        _channels(args, config, test=False),
        ranges,
        parse_assignments(args.hp),
        _settings(args),
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs,
        early_stopping=args.early_stopping,
        strategy=args.strategy,
        job_name=args.job_name,
        wait=args.wait,
    )
    print(f"tuning job: {launch.job_name} ({launch.status})")
    for name, spec in launch.ranges.items():
        shown = ",".join(spec.values) if spec.kind == "categorical" else f"{spec.low}..{spec.high}"
        print(f"  range {name}: {spec.kind} {shown} {spec.scaling}")
    if args.wait:
        best = best_hyperparameters(config, launch.job_name)
        path = write_hyperparameters_file(args.best_out, best)
        print(f"best job {best['best_training_job']}: {best['objective']}")
        print(f"best hyperparameters -> {path}: {json.dumps(best['hyperparameters'])}")
    else:
        print(
            f"when it ends: bincounter-aws best --tuning-job {launch.job_name} --out {args.best_out}"
        )
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    from .inputs import write_hyperparameters_file
    from .jobs import best_hyperparameters

    config = _config(args)
    best = best_hyperparameters(config, args.tuning_job)
    path = write_hyperparameters_file(args.out, best)
    print(f"best job {best['best_training_job']}: {best['objective']}")
    print(f"best hyperparameters -> {path}: {json.dumps(best['hyperparameters'])}")
    return 0


def _hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    from .inputs import parse_assignments, read_hyperparameters_file

    values: dict[str, str] = {}
    if args.hyperparameters_file:
        values.update(read_hyperparameters_file(args.hyperparameters_file))
    values.update(parse_assignments(args.hp))
    return values


def cmd_train(args: argparse.Namespace) -> int:
    hyperparameters = _hyperparameters(args)
    if args.local:
        from .local import local_train

        config = _config(args)
        result = local_train(
            args.image or config.image or "bincounter:latest",
            _channels(args, config, test=True, local=True),
            hyperparameters,
            instance_count=args.instance_count,
            container_root=args.container_root,
            environment=_settings(args).environment,
        )
        print(f"local model artifact: {result.model_artifact}")
        return 0

    from .jobs import launch_training

    config = _config(args)
    launch = launch_training(
        config,
        _channels(args, config, test=True),
        hyperparameters,
        _settings(args),
        wait=args.wait,
        logs=args.wait,
    )
    print(f"training job: {launch.job_name} ({launch.status})")
    print(f"hyperparameters: {json.dumps(launch.hyperparameters)}")
    print(f"model artifact: {launch.model_artifact}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .inputs import parse_assignments

    environment = parse_assignments(args.env)
    if args.local:
        from .local import local_deploy

        config = _config(args)
        endpoint = local_deploy(
            args.image or config.image or "bincounter:latest",
            args.model_data,
            name=args.name or "bincounter-local",
            port=args.port,
            environment=environment,
        )
        print(f"local endpoint {endpoint.name} serving at {endpoint.url} (Ctrl-C stops it)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            endpoint.delete()
            print("stopped")
        return 0

    from .hosting import DeploySettings, deploy

    config = _config(args)
    deployment = deploy(
        config,
        args.model_data,
        DeploySettings(
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            name=args.name,
            startup_health_check_timeout=args.startup_timeout,
            data_capture_uri=args.data_capture,
            data_capture_percent=args.capture_percent,
            max_instances=args.max_instances,
            target_invocations_per_instance=args.target_invocations,
            environment=environment,
        ),
        wait=args.wait,
    )
    print(f"endpoint: {deployment.endpoint_name} ({deployment.status})")
    if deployment.autoscaling:
        print(f"autoscaling: {args.instance_count}..{args.max_instances} instances")
    print(f"delete with: bincounter-aws delete --name {deployment.endpoint_name}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from .hosting import delete

    for item in delete(_config(args), args.name, keep_model=args.keep_model):
        print(f"deleted {item}")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    from .hosting import invoke_endpoint, invoke_local

    if args.local:
        answers = invoke_local(args.local, args.paths)
    else:
        if not args.endpoint:
            raise UserError("give --endpoint NAME (or --local URL for a local server)")
        answers = invoke_endpoint(_config(args), args.endpoint, args.paths)
    failures = 0
    for path, answer in answers:
        print(f"{path}\t{json.dumps(answer) if not isinstance(answer, str) else answer}")
        failures += isinstance(answer, dict) and "error" in answer
    return 1 if failures else 0


def cmd_transform(args: argparse.Namespace) -> int:
    from .hosting import transform
    from .inputs import parse_assignments

    launch = transform(
        _config(args),
        args.input,
        model_name=args.model_name,
        model_data=args.model_data,
        output_uri=args.output,
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        job_name=args.job_name,
        environment=parse_assignments(args.env),
        wait=args.wait,
    )
    print(f"transform job: {launch.job_name} ({launch.status}) model {launch.model_name}")
    print(f"output: {launch.output_uri}")
    return 0


def _resolving_package(func):  # issue 23
    from .pipeline_cli import resolving_model_package

    return resolving_model_package(func, _config)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    config = _config_parent()
    parser = argparse.ArgumentParser(
        prog="bincounter-aws",
        description="Prepare ABID data and run bincounter on SageMaker (SDK v3).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", parents=[config], help="download, verify, split ABID photos")
    src = p.add_argument_group("source")
    src.add_argument("--source-bucket", default=ABID_BUCKET, help="ABID bucket (unsigned)")
    src.add_argument("--source-dir", help="local folder in ABID layout instead of the bucket")
    src.add_argument("--source-endpoint-url", help="S3 endpoint for the source bucket")
    src.add_argument("--signed", action="store_true", help="sign source requests (private copy)")
    src.add_argument("--images-dir", default="bin-images", help="photo folder/prefix in source")
    src.add_argument("--metadata-dir", default="metadata", help="metadata folder/prefix")
    sel = p.add_argument_group("selection")
    sel.add_argument(
        "--file-list", help='capstone file_list.json ({"1": ["data/metadata/<id>.json"]})'
    )
    sel.add_argument(
        "--max-per-count", type=int, help="at most N photos per count (needed to scan)"
    )
    p.add_argument("--out", default="data/prepared", help="output folder (channels, manifest)")
    p.add_argument("--cache", help="download cache (default <out>/.cache)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,validation,test shares")
    p.add_argument("--resize", type=int, help="shrink so the longer side is <= N pixels")
    p.add_argument("--workers", type=int, default=16, help="parallel downloads")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--upload",
        nargs="?",
        const="",
        metavar="S3_URI",
        help="upload when done (default s3://<bucket>/<prefix>/data); with --processing: "
        "where the job writes the channels",
    )
    scale = p.add_argument_group("all of ABID: full scan, shards, Processing job")
    scale.add_argument(
        "--full-scan", action="store_true", help="read every metadata object (ranges in parallel)"
    )
    scale.add_argument("--scan-depth", type=int, default=3, help="key-prefix digits per range")
    scale.add_argument("--layout", choices=["folders", "shards"], default="folders")
    scale.add_argument("--shard-size-mb", type=float, default=256.0, help="bytes per tar shard")
    scale.add_argument("--no-shard-metadata", action="store_true", help="no <id>.json in shards")
    scale.add_argument("--parts", type=int, help="plan parts (default 4, or 4 per instance)")
    scale.add_argument(
        "--processing", action="store_true", help="run the heavy part as a Processing job"
    )
    scale.add_argument("--processing-instance-type", default="ml.m5.2xlarge")
    scale.add_argument("--processing-instance-count", type=int, default=1)
    scale.add_argument("--processing-volume-size", type=int, default=100, help="EBS GB")
    scale.add_argument("--job-name", help="processing job name (default timestamped)")
    scale.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "assemble", parents=[config], help="manifest + report after a Processing job ended"
    )
    p.add_argument("--out", default="data/prepared", help="the folder prepare planned in")
    p.add_argument("--data", help="the job's output prefix (default s3://<bucket>/<prefix>/data)")
    p.add_argument("--layout", choices=["folders", "shards"], default="shards")
    p.add_argument("--resize", type=int, help="as given to prepare (recorded in the manifest)")
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("upload", parents=[config], help="upload prepared channels to S3")
    p.add_argument("--out", default="data/prepared", help="prepared folder")
    p.add_argument("--to", help="S3 prefix (default s3://<bucket>/<prefix>/data)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_upload)

    channels = _channels_parent()
    jobs = _jobs_parent()
    p = sub.add_parser("tune", parents=[config, channels, jobs], help="hyperparameter tuning job")
    p.add_argument(
        "--range",
        action="append",
        metavar="NAME=SPEC",
        help="low:high[:log] or a,b,c; defaults lr=0.001:0.1:log batch_size=16,32,64 epochs=2:6; "
        "NAME= drops a default",
    )
    p.add_argument("--no-default-ranges", action="store_true")
    p.add_argument("--max-jobs", type=int, default=12)
    p.add_argument("--max-parallel-jobs", type=int, default=3)
    p.add_argument(
        "--early-stopping", action="store_true", help="TrainingJobEarlyStoppingType=Auto"
    )
    p.add_argument(
        "--strategy", default="Bayesian", choices=["Bayesian", "Random", "Hyperband", "Grid"]
    )
    p.add_argument("--job-name", help="tuning job name (<= 32 chars; default timestamped)")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--best-out", default="best_hyperparameters.json")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("best", parents=[config], help="best hyperparameters of a tuning job")
    p.add_argument("--tuning-job", required=True)
    p.add_argument("--out", default="best_hyperparameters.json")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("train", parents=[config, channels, jobs], help="training job")
    p.add_argument("--hyperparameters-file", help="JSON from tune/best, or a plain mapping")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--local", action="store_true", help="SDK local mode with a local image")
    p.add_argument("--container-root", help="local mode working folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("deploy", parents=[config], help="real-time endpoint")
    p.add_argument("--model-data", help="s3://.../model.tar.gz (local: a path)")
    p.add_argument("--name", help="endpoint/config/model name (default timestamped)")
    p.add_argument("--instance-type", default="ml.m5.xlarge")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--startup-timeout", type=int, default=600, help="health-check timeout s")
    p.add_argument("--data-capture", metavar="S3_URI", help="capture requests/responses here")
    p.add_argument("--capture-percent", type=int, default=100)
    p.add_argument("--max-instances", type=int, help="autoscale up to N instances")
    p.add_argument("--target-invocations", type=float, default=100.0, help="per instance/min")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="serving environment")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--local", action="store_true", help="serve locally with SDK local mode")
    p.add_argument("--port", type=int, default=8080, help="local mode port")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("delete", parents=[config], help="delete endpoint, config and model")
    p.add_argument("--name", required=True)
    p.add_argument("--keep-model", action="store_true")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("invoke", parents=[config], help="send photos to an endpoint")
    p.add_argument("paths", nargs="+", help="photos or folders of photos")
    p.add_argument("--endpoint", help="SageMaker endpoint name")
    p.add_argument("--local", metavar="URL", help="local server, e.g. http://localhost:8080")
    p.set_defaults(func=cmd_invoke)

    p = sub.add_parser("transform", parents=[config], help="batch transform over S3 photos")
    p.add_argument("--input", required=True, help="s3:// prefix of photos")
    p.add_argument("--model-name", help="existing SageMaker model (e.g. from deploy)")
    p.add_argument("--model-data", help="or s3://.../model.tar.gz to create one")
    p.add_argument("--output", help="S3 prefix for answers (default .../transform/<job>)")
    p.add_argument("--instance-type", default="ml.m5.xlarge")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--job-name")
    p.add_argument("--env", action="append", metavar="KEY=VALUE")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(func=cmd_transform)
    # --- issue 23: pipeline and registry command groups, --model-package (re-apply as one block)
    from .pipeline_cli import add_commands, model_package_flag

    add_commands(sub, config, _config)
    model_package_flag(sub.choices["deploy"], sub.choices["transform"])
    # --- end issue 23
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 AWS/runtime error, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.func = _resolving_package(args.func)  # issue 23: --model-package -> --model-data
    logs.configure(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        if exc.detail:
            print(exc.detail, file=sys.stderr)
        return 2
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            print(
                "error: no AWS credentials: run 'aws configure' / 'aws sso login' or set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                file=sys.stderr,
            )
            return 2
        if isinstance(exc, ClientError | BotoCoreError):
            print(f"AWS error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
