"""Preparation as a SageMaker Processing job: the request (pure, fast) and the whole path
against the recording moto server (slow).

moto 5.2.5 implements CreateProcessingJob and DescribeProcessingJob (the job reports
``Completed`` at once and nothing runs; it does not store ProcessingResources), so the
request's instance count is read from the recorded body, and the instances are played here:
each gets the plan parts ``ShardedByS3Key`` would hand it, runs the image's ``process`` entry
in-process on a relocated ``/opt/ml/processing`` tree, and its output folder is uploaded as
SageMaker's ``EndOfJob`` upload does.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from bincounter import shards
from bincounter.aws.cli import main
from bincounter.aws.processing import (
    DATA_OUTPUT,
    PLAN_INPUT,
    ProcessingSettings,
    container_arguments,
    processing_request,
)
from bincounter.dataprep.worker import build_parser
from bincounter.errors import LaunchError

from .conftest import BUCKET, IMAGE, REGION, ROLE, AbidSeed
from .motoserver import RecordingMotoServer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CONFIG_FLAGS = ["--region", REGION, "--role", ROLE, "--bucket", BUCKET, "--image", IMAGE]
CONFIG_FLAGS += ["--prefix", "bc"]
DATA = f"s3://{BUCKET}/bc/shards"


def _request(**settings) -> dict:
    return processing_request(
        job_name="prep-1",
        image=IMAGE,
        role=ROLE,
        plan_uri="s3://b/p/plan",
        output_uri="s3://b/p/data/",
        arguments=["--layout", "shards"],
        settings=ProcessingSettings(**settings),
    )


def test_request_shards_plan_by_key_over_n_instances():
    request = _request(instance_count=8, instance_type="ml.c5.4xlarge")
    (plan,) = request["ProcessingInputs"]
    assert plan["S3Input"] == {
        "S3Uri": "s3://b/p/plan/",
        "LocalPath": PLAN_INPUT,
        "S3DataType": "S3Prefix",
        "S3InputMode": "File",
        "S3DataDistributionType": "ShardedByS3Key",
    }
    (out,) = request["ProcessingOutputConfig"]["Outputs"]
    assert out["S3Output"]["S3Uri"] == "s3://b/p/data/"
    assert out["S3Output"]["LocalPath"] == DATA_OUTPUT
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 8
    assert request["AppSpecification"]["ContainerEntrypoint"][-1] == "process"
    assert "Environment" not in request


@pytest.mark.parametrize(
    ("settings", "match"),
    [({"instance_count": 0}, "instance_count"), ({"base_job_name": "x" * 60}, "too long")],
)
def test_bad_settings_fail_before_any_request(settings, match):
    with pytest.raises(LaunchError, match=match):
        _request(**settings)


def test_container_arguments_parse_with_the_entry_points_own_parser():
    args = container_arguments(
        layout="shards",
        shard_size_mb=64,
        resize=256,
        seed=7,
        with_metadata=False,
        source_bucket="aft-vbi-pds",
        images_dir="bin-images",
        metadata_dir="metadata",
        workers=8,
    )
    parsed = build_parser().parse_args(args)
    assert (parsed.layout, parsed.shard_size_mb, parsed.resize, parsed.seed) == (
        "shards",
        64,
        256,
        7,
    )
    assert parsed.no_metadata and parsed.source_bucket == "aft-vbi-pds"


def _run(argv: list[str], capsys) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    return captured.out


@pytest.mark.slow
def test_prepare_processing_end_to_end(
    moto_server: RecordingMotoServer, abid: AbidSeed, tmp_path: Path, monkeypatch, capsys
):
    out = tmp_path / "prepared"
    argv = ["prepare", "--processing", "--no-wait", "--file-list", str(abid.file_list)]
    argv += ["--layout", "shards", "--shard-size-mb", "0.2", "--parts", "5"]
    argv += ["--processing-instance-count", "2", "--job-name", "prep-e2e", "--upload", DATA]
    argv += ["--out", str(out), "--workers", "4", "--no-progress", *CONFIG_FLAGS]
    printed = _run(argv, capsys)
    assert "bincounter-aws assemble" in printed

    (request,) = moto_server.calls("CreateProcessingJob")
    assert request["AppSpecification"]["ImageUri"] == IMAGE
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2
    (plan_input,) = request["ProcessingInputs"]
    assert plan_input["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == DATA + "/"
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.describe_processing_job(ProcessingJobName="prep-e2e")["ProcessingJobStatus"]

    # Play the two instances: ShardedByS3Key gives each a disjoint share of the plan's keys.
    s3 = boto3.client("s3", region_name=REGION)
    plan_bucket, _, plan_prefix = plan_input["S3Input"]["S3Uri"][5:].partition("/")
    keys = sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket=plan_bucket, Prefix=plan_prefix)["Contents"]
    )
    assert len(keys) == 5
    for host in range(2):
        base = tmp_path / f"algo-{host + 1}"
        plan_dir = base / "processing" / "input" / "plan"
        plan_dir.mkdir(parents=True)
        for key in keys[host::2]:
            s3.download_file(plan_bucket, key, str(plan_dir / Path(key).name))
        monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
        from bincounter.cli import main as container_main

        assert container_main(["process", *request["AppSpecification"]["ContainerArguments"]]) == 0
        output = base / "processing" / "output" / "data"
        for path in output.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), BUCKET, f"bc/shards/{path.relative_to(output)}")

    printed = _run(["assemble", "--out", str(out), "--data", DATA, *CONFIG_FLAGS], capsys)
    assert "channel train: s3://bincounter-test/bc/shards/train/" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert {p["id"] for p in manifest["photos"]} == abid.good_ids
    reasons = {x["id"]: x["reason"] for x in manifest["excluded"]}
    assert "corrupt image" in reasons[abid.corrupt_id]
    assert "image missing" in reasons[abid.imageless_id]
    assert all("metadata missing" in reasons[i] for i in abid.missing_ids)
    assert manifest["parts"] == 5 and manifest["settings"]["selection"] == "file_list"
    # The shards on S3 are the channels: every photo once, with its count, readable.
    seen = {}
    for entry in manifest["files"]:
        local = tmp_path / "check" / entry["path"]
        local.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(BUCKET, f"bc/shards/{entry['path']}", str(local))
        for sample in shards.read_shard(local):
            assert isinstance(sample, shards.ShardSample), sample
            assert sample.key not in seen
            seen[sample.key] = (entry["split"], sample.count())
            assert json.loads(sample.members["json"])["EXPECTED_QUANTITY"] == sample.count()
    assert seen == {p["id"]: (p["split"], p["count"]) for p in manifest["photos"]}
    head = s3.head_object(Bucket=BUCKET, Key="bc/shards/manifest.json")
    assert head["ContentLength"] == (out / "manifest.json").stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["FastFile", "Pipe"])
def test_train_request_carries_input_mode_and_distribution_per_channel(
    moto_server: RecordingMotoServer, capsys, mode
):
    data = f"s3://{BUCKET}/bc/shards"
    argv = ["train", "--data", data, "--no-test", "--no-wait", "--base-job-name", "shards"]
    argv += ["--input-mode", mode, "--distribution", "train=ShardedByS3Key", *CONFIG_FLAGS]
    _run(argv, capsys)
    request = moto_server.calls("CreateTrainingJob")[-1]
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == mode
    kinds = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3DataDistributionType"]
        for c in request["InputDataConfig"]
    }
    assert kinds == {"train": "ShardedByS3Key", "validation": "FullyReplicated"}
    with pytest.raises(SystemExit):
        main(["train", "--data", data, "--input-mode", "Stream", *CONFIG_FLAGS])
    assert main(["train", "--data", data, "--distribution", "train=Sharded", *CONFIG_FLAGS]) == 2
    assert "ShardedByS3Key" in capsys.readouterr().err
