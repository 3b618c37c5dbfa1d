"""``bincounter-aws`` data commands: prepare (locally, in parts, or as a Processing job),
assemble (after a Processing job ended) and upload.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..abid import BUCKET as ABID_BUCKET
from ..errors import UserError
from .cli_shared import SettingFlag, add_flags
from .cli_shared import config_from_args as _config
from .config import AwsConfig
from .processing import ProcessingSettings


def _prepare_source(args: argparse.Namespace) -> Any:
    from ..dataprep.sources import open_source

    return open_source(
        source_dir=args.source_dir, bucket=args.source_bucket, images_dir=args.images_dir,
        metadata_dir=args.metadata_dir, signed=args.signed,
        endpoint_url=args.source_endpoint_url, workers=args.workers,
    )  # fmt: skip


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


# --------------------------------------------------------------------------- parsers

PROCESSING_FLAGS = (
    SettingFlag("--processing-instance-type", "instance_type"),
    SettingFlag("--processing-instance-count", "instance_count", {"type": int}),
    SettingFlag("--processing-volume-size", "volume_size_gb", {"type": int, "help": "EBS GB"}),
)


def _add_source_flags(p: argparse.ArgumentParser) -> None:
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


def _add_scale_flags(p: argparse.ArgumentParser) -> None:
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
    add_flags(scale, ProcessingSettings, PROCESSING_FLAGS)
    scale.add_argument("--job-name", help="processing job name (default timestamped)")
    scale.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True)


def add_parsers(sub: Any, config: argparse.ArgumentParser) -> None:
    """The data group's subcommands, each with the configuration flags of ``config``."""
    p = sub.add_parser("prepare", parents=[config], help="download, verify, split ABID photos")
    _add_source_flags(p)
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
    _add_scale_flags(p)
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
