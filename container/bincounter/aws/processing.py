"""Data preparation as a SageMaker Processing job on the bincounter image, N instances wide.

The plan (seeded split, as ``plan/part-NNNNN.jsonl``) is made on the launch side; its parts go
to S3 and become the job's one input with ``ShardedByS3Key``, so each instance gets its own
parts and SageMaker, not this code, does the scale-out. Every instance runs the image's
``process`` entry (``bincounter.dataprep.worker``) and its output folder is uploaded under the
data prefix, where the channels (``train/``, ``validation/``, ``test/``) and each part's
fragment (``_parts/``) land side by side; ``finish`` then reads the fragments back and writes
the one ``manifest.json`` and report, as a local run does.

The request is built by a pure function (``processing_request``) and sent with boto3's
``CreateProcessingJob``: one call whose shape is the API reference's, and which the tests read
back from the server exactly as sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LaunchError
from .config import AwsConfig, parse_s3_uri

log = logging.getLogger(__name__)

PROCESSING_ROOT = "/opt/ml/processing"
PLAN_INPUT = f"{PROCESSING_ROOT}/input/plan"
DATA_OUTPUT = f"{PROCESSING_ROOT}/output/data"
#: tini keeps PID 1 forwarding SageMaker's SIGTERM, as the image's own ENTRYPOINT does.
ENTRYPOINT = ["/usr/bin/tini", "--", "process"]
NAME_MAX = 63


@dataclass
class ProcessingSettings:
    instance_type: str = "ml.m5.2xlarge"
    instance_count: int = 1
    volume_size_gb: int = 100
    max_run_seconds: int = 12 * 3600
    base_job_name: str = "bincounter-prepare"
    environment: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.instance_count < 1:
            raise LaunchError(f"instance_count={self.instance_count} must be >= 1")
        if len(self.base_job_name) > NAME_MAX - 14:
            raise LaunchError(f"base job name {self.base_job_name!r} is too long")


def processing_request(
    *,
    job_name: str,
    image: str,
    role: str,
    plan_uri: str,
    output_uri: str,
    arguments: Sequence[str],
    settings: ProcessingSettings,
) -> dict[str, Any]:
    """The CreateProcessingJob request: plan parts sharded by key, one output, N instances."""
    settings.check()
    for name, uri in (("plan", plan_uri), ("output", output_uri)):
        if not uri.startswith("s3://"):
            raise LaunchError(f"{name} {uri!r} must be an s3:// prefix")
    request: dict[str, Any] = {
        "ProcessingJobName": job_name,
        "RoleArn": role,
        "AppSpecification": {
            "ImageUri": image,
            "ContainerEntrypoint": list(ENTRYPOINT),
            "ContainerArguments": list(arguments),
        },
        "ProcessingInputs": [
            {
                "InputName": "plan",
                "S3Input": {
                    "S3Uri": plan_uri.rstrip("/") + "/",
                    "LocalPath": PLAN_INPUT,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "ShardedByS3Key",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "data",
                    "S3Output": {
                        "S3Uri": output_uri.rstrip("/") + "/",
                        "LocalPath": DATA_OUTPUT,
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": settings.instance_count,
                "InstanceType": settings.instance_type,
                "VolumeSizeInGB": settings.volume_size_gb,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_run_seconds},
    }
    if settings.environment:
        request["Environment"] = dict(settings.environment)
    return request


def container_arguments(
    *,
    layout: str,
    shard_size_mb: float,
    resize: int | None,
    seed: int,
    with_metadata: bool,
    source_bucket: str | None,
    images_dir: str,
    metadata_dir: str,
    workers: int,
) -> list[str]:
    """``bincounter process`` flags for the job (the same flags run it locally)."""
    args = ["--layout", layout, "--shard-size-mb", f"{shard_size_mb:g}", "--seed", str(seed)]
    args += ["--images-dir", images_dir, "--metadata-dir", metadata_dir, "--workers", str(workers)]
    if source_bucket:
        args += ["--source-bucket", source_bucket]
    if resize:
        args += ["--resize", str(resize)]
    if not with_metadata:
        args.append("--no-metadata")
    return args


@dataclass(frozen=True)
class ProcessingLaunch:
    job_name: str
    status: str
    plan_uri: str
    output_uri: str


def upload_plan(client: Any, parts: Sequence[Path], plan_uri: str) -> list[str]:
    """Upload plan parts under ``plan_uri`` and delete parts of an older plan there, so the
    job never processes a stale part."""
    bucket, prefix = parse_s3_uri(plan_uri.rstrip("/"))
    keys = []
    for path in parts:
        key = f"{prefix}/{path.name}"
        client.upload_file(str(path), bucket, key)
        keys.append(key)
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for obj in page.get("Contents", []):
            if obj["Key"] not in keys:
                client.delete_object(Bucket=bucket, Key=obj["Key"])
    return keys


def launch_processing(
    config: AwsConfig,
    parts: Sequence[Path],
    output_uri: str,
    arguments: Sequence[str],
    settings: ProcessingSettings | None = None,
    *,
    job_name: str | None = None,
    wait: bool = True,
    poll: float = 30.0,
) -> ProcessingLaunch:
    """Upload the plan, create the job, and with ``wait`` poll until it ends."""
    from .jobs import timestamped

    settings = settings or ProcessingSettings()
    settings.check()
    name = job_name or timestamped(settings.base_job_name)
    plan_uri = config.s3_uri("prepare", name, "plan")
    request = processing_request(
        job_name=name,
        image=config.require_image(),
        role=config.require_role(),
        plan_uri=plan_uri,
        output_uri=output_uri,
        arguments=arguments,
        settings=settings,
    )
    session = config.boto_session()
    upload_plan(session.client("s3"), parts, plan_uri)
    client = session.client("sagemaker")
    client.create_processing_job(**request)
    log.info(
        "processing job %s: %d instances over %d parts", name, settings.instance_count, len(parts)
    )
    status = "InProgress"
    while wait:
        described = client.describe_processing_job(ProcessingJobName=name)
        status = described["ProcessingJobStatus"]
        if status in ("Completed", "Failed", "Stopped"):
            if status != "Completed":
                raise LaunchError(
                    f"processing job {name} {status.lower()}: {described.get('FailureReason', '')}"
                )
            break
        time.sleep(poll)
    return ProcessingLaunch(name, status, plan_uri, output_uri)


def fetch_fragments(client: Any, output_uri: str, out_dir: Path) -> int:
    """Download ``_parts/*.json`` from the job's output into ``out_dir/_parts``."""
    from ..dataprep.parts import FRAGMENTS_DIR

    bucket, prefix = parse_s3_uri(output_uri.rstrip("/"))
    folder = Path(out_dir) / FRAGMENTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/{FRAGMENTS_DIR}/"):
        for obj in page.get("Contents", []):
            client.download_file(bucket, obj["Key"], str(folder / Path(obj["Key"]).name))
            n += 1
    return n


def finish(
    config: AwsConfig,
    output_uri: str,
    out_dir: Path,
    source: str,
    settings: Mapping[str, Any],
    *,
    client: Any = None,
) -> tuple[Path, dict[str, Any]]:
    """Assemble the manifest and report from the job's fragments and put them beside the
    channels on S3 (``manifest.json``, ``report.json``, ``report.png``)."""
    from ..dataprep.parts import assemble
    from ..dataprep.report import REPORT_JSON, REPORT_PNG

    client = client or config.boto_session().client("s3")
    if not fetch_fragments(client, output_uri, out_dir):
        raise LaunchError(f"no processed parts under {output_uri}/_parts: did the job run?")
    manifest, report = assemble(Path(out_dir), source, dict(settings))
    bucket, prefix = parse_s3_uri(output_uri.rstrip("/"))
    for path in (manifest, Path(out_dir) / REPORT_JSON, Path(out_dir) / REPORT_PNG):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return manifest, report
