"""Register, list, approve and deploy-by-package against the moto server: the metrics come from
the evaluate step's files on S3, and every request is read back as the server recorded it."""

from __future__ import annotations

import json

import boto3

from bincounter.aws.cli import main

from .conftest import BUCKET, IMAGE, REGION, ROLE

FLAGS = ["--region", REGION, "--role", ROLE, "--bucket", BUCKET, "--image", IMAGE, "--prefix", "bc"]


def _evaluation(key: str, accuracy: float, rmse: float) -> str:
    """An evaluate step's output folder, as ``training.scoring`` writes it."""
    s3 = boto3.client("s3", region_name=REGION)
    evaluation = {
        "split": "test",
        "decision": "argmax",
        "metrics": {"n": 40, "accuracy": accuracy, "rmse": rmse, "mae": 0.5, "off_by_one": 0.9},
        "model": {"weights_sha256": "ab" * 32, "training_job": key, "int8_agreement": 0.997},
    }
    card = {"format": "bincounter-model/1", "weights_sha256": "ab" * 32}
    for name, body in (("evaluation.json", evaluation), ("model_card.json", card)):
        s3.put_object(Bucket=BUCKET, Key=f"bc/eval/{key}/{name}", Body=json.dumps(body))
    return f"s3://{BUCKET}/bc/eval/{key}"


def _register(key: str, accuracy: float, rmse: float, capsys) -> str:
    model = f"s3://{BUCKET}/bc/output/{key}/model.tar.gz"
    assert (
        main(
            [
                "registry",
                "register",
                *FLAGS,
                "--group",
                "reg",
                "--model-data",
                model,
                "--evaluation",
                _evaluation(key, accuracy, rmse),
            ]
        )
        == 0
    )
    return capsys.readouterr().out.split("model package: ")[1].strip()


def test_register_list_approve_and_the_gate_baseline(moto_server, aws_config, capsys):
    first = _register("job-a", 0.41, 1.1, capsys)
    request = moto_server.calls("CreateModelPackage")[-1]
    assert request["ModelApprovalStatus"] == "PendingManualApproval"
    assert request["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith(
        "job-a/evaluation.json"
    )
    metadata = request["CustomerMetadataProperties"]
    assert metadata["test_accuracy"] == "0.41" and metadata["int8_agreement"] == "0.997"
    assert metadata["model_version"] == "bincounter-model/1"
    assert request["InferenceSpecification"]["SupportedContentTypes"][0] == "image/jpeg"
    second = _register("job-b", 0.45, 1.0, capsys)

    assert main(["registry", "approve", *FLAGS, first, "--description", "checked by hand"]) == 0
    update = moto_server.calls("UpdateModelPackage")[-1]
    assert update["ModelPackageArn"] == first and update["ModelApprovalStatus"] == "Approved"
    assert update["ApprovalDescription"] == "checked by hand"
    assert main(["registry", "reject", *FLAGS, second]) == 0
    assert main(["registry", "list", *FLAGS, "--group", "reg"]) == 0
    listed = capsys.readouterr().out
    assert "Approved" in listed and "Rejected" in listed and "test_accuracy=0.41" in listed

    from bincounter.aws.cli_pipeline import gate_baseline

    floor = gate_baseline(aws_config, "reg", 0.01, 0.05)
    assert floor["BaselineAccuracyFloor"] == 0.41 - 0.01
    assert floor["BaselineRmseCeiling"] == 1.1 + 0.05

    from bincounter.aws.registry import resolve_package

    latest = resolve_package(aws_config, "latest:reg")
    assert latest.arn == first and latest.model_data.endswith("job-a/model.tar.gz")


def test_model_package_that_is_not_approved_is_refused(moto_server, capsys):
    arn = _register("job-c", 0.3, 1.3, capsys)
    assert main(["transform", *FLAGS, "--input", f"s3://{BUCKET}/x", "--model-package", arn]) == 2
    assert "not Approved" in capsys.readouterr().err
    assert main(["deploy", *FLAGS, "--model-package", "latest:nobody"]) == 2
    assert "no approved package" in capsys.readouterr().err
    assert main(["deploy", *FLAGS]) == 2
