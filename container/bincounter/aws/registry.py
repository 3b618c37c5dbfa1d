"""The SageMaker Model Registry for bincounter: one model package per trained, gated model.

Teams that retrain need a record of which approved model counted a bin. A package holds the
image, the model artifact, the content types the server accepts and answers, and the model's
metrics *as files the jobs wrote*: ``ModelMetrics.ModelQuality.Statistics`` points at the
evaluate step's ``evaluation.json`` and the customer metadata carries the figures read from it
and from ``model_card.json`` (accuracy, RMSE, int8 agreement, weights sha256, model version).
Nothing here retypes a metric.

* ``package_request(...)`` -> the CreateModelPackage request; the pipeline's register step
  sends the same request with pipeline functions (``JsonGet``) where this takes values.
* ``register_from_evaluation(config, group, model_data, evaluation_uri)`` registers a model
  from an evaluate step's output folder on S3 (reads both files there).
* ``list_packages``, ``set_approval`` (approve or reject with a description),
  ``latest_approved`` and ``resolve_package`` (ARN or ``latest:GROUP`` -> model data + image)
  for ``deploy``/``transform --model-package``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..training.scoring import CARD_COPY, EVALUATION_FILE
from .config import AwsConfig, parse_s3_uri
from .inputs import LaunchError

log = logging.getLogger(__name__)

APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
CONTENT_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/json")
RESPONSE_TYPES = ("application/json",)
#: Model package group names: the API's pattern (1-63 characters).
GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
#: ``--model-package latest:GROUP`` picks the newest approved package of GROUP.
LATEST_PREFIX = "latest:"
#: Customer metadata keys and where each value is read: (file, JSON path in that file).
METADATA_SOURCES: dict[str, tuple[str, str]] = {
    "test_accuracy": (EVALUATION_FILE, "metrics.accuracy"),
    "test_rmse": (EVALUATION_FILE, "metrics.rmse"),
    "test_mae": (EVALUATION_FILE, "metrics.mae"),
    "test_off_by_one": (EVALUATION_FILE, "metrics.off_by_one"),
    "test_n": (EVALUATION_FILE, "metrics.n"),
    "decision": (EVALUATION_FILE, "decision"),
    "int8_agreement": (EVALUATION_FILE, "model.int8_agreement"),
    "weights_sha256": (EVALUATION_FILE, "model.weights_sha256"),
    "training_job": (EVALUATION_FILE, "model.training_job"),
    "model_version": (CARD_COPY, "format"),
}


def check_group(name: str) -> str:
    if not isinstance(name, str) or not GROUP_NAME.match(name):
        raise LaunchError(
            f"model package group {name!r}: 1-63 letters, digits and hyphens, starting with a "
            "letter or digit"
        )
    return name


def check_approval(status: str) -> str:
    if status not in APPROVAL_STATUSES:
        raise LaunchError(f"approval status {status!r} is not one of {APPROVAL_STATUSES}")
    return status


def json_path(document: Mapping[str, Any], path: str) -> Any:
    """``a.b.c`` in a JSON document (what the pipeline's ``JsonGet`` reads); None if absent."""
    value: Any = document
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def package_request(
    group: Any,
    container: dict[str, Any],
    evaluation_uri: Any,
    metadata: Mapping[str, Any],
    approval: Any,
) -> dict[str, Any]:
    """The CreateModelPackage request; ``container`` is ``{"Image", "ModelDataUrl"}``.
    Arguments may be pipeline variables."""
    return {
        "ModelPackageGroupName": group,
        "ModelPackageDescription": "bincounter: count items (1-5) in a bin photo",
        "InferenceSpecification": {
            "Containers": [container],
            "SupportedContentTypes": list(CONTENT_TYPES),
            "SupportedResponseMIMETypes": list(RESPONSE_TYPES),
        },
        "ModelApprovalStatus": approval,
        "ModelMetrics": {
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": evaluation_uri}
            }
        },
        "CustomerMetadataProperties": dict(metadata),
    }


def _read_json(client: Any, uri: str) -> dict[str, Any]:
    bucket, key = parse_s3_uri(uri)
    try:
        return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except (client.exceptions.NoSuchKey, ValueError) as exc:
        raise LaunchError(f"cannot read {uri}: {exc}") from None


def metadata_from_files(files: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Customer metadata values (strings, as the API wants) read from the job's files."""
    values = {}
    for key, (name, path) in METADATA_SOURCES.items():
        value = json_path(files[name], path)
        if value is not None:
            values[key] = str(value)
    return values


def ensure_group(client: Any, group: str) -> None:
    """Create the group unless it exists (a pipeline's register step needs it first)."""
    try:
        client.describe_model_package_group(ModelPackageGroupName=group)
    except client.exceptions.ClientError:
        client.create_model_package_group(
            ModelPackageGroupName=group,
            ModelPackageGroupDescription="bincounter models that passed the quality gate",
        )


def register_from_evaluation(
    config: AwsConfig,
    group: str,
    model_data: str,
    evaluation_uri: str,
    *,
    approval: str = "PendingManualApproval",
) -> str:
    """Register ``model_data`` with the metrics of the evaluate output at ``evaluation_uri``
    (the folder holding ``evaluation.json`` and ``model_card.json``). Returns the package ARN."""
    check_group(group)
    check_approval(approval)
    session = config.boto_session()
    s3 = session.client("s3")
    base = evaluation_uri.rstrip("/")
    files = {name: _read_json(s3, f"{base}/{name}") for name in (EVALUATION_FILE, CARD_COPY)}
    client = session.client("sagemaker")
    ensure_group(client, group)
    container = {"Image": config.require_image(), "ModelDataUrl": model_data}
    metadata = metadata_from_files(files)
    request = package_request(group, container, f"{base}/{EVALUATION_FILE}", metadata, approval)
    return client.create_model_package(**request)["ModelPackageArn"]


@dataclass(frozen=True)
class PackageSummary:
    arn: str
    version: int | None
    approval: str
    created: str
    metrics: dict[str, str]
    model_data: str | None
    image: str | None


def _summary(described: Mapping[str, Any]) -> PackageSummary:
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
    return PackageSummary(
        arn=described["ModelPackageArn"],
        version=described.get("ModelPackageVersion"),
        approval=described.get("ModelApprovalStatus", "?"),
        created=str(described.get("CreationTime", "")),
        metrics=dict(described.get("CustomerMetadataProperties") or {}),
        model_data=containers[0].get("ModelDataUrl"),
        image=containers[0].get("Image"),
    )


def list_packages(
    config: AwsConfig, group: str, approval: str | None = None, client: Any = None
) -> list[PackageSummary]:
    """The group's packages, newest first, each described (its metrics are not in the list)."""
    check_group(group)
    client = client or config.boto_session().client("sagemaker")
    kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "SortOrder": "Descending"}
    if approval:
        kwargs["ModelApprovalStatus"] = check_approval(approval)
    found = []
    for page in client.get_paginator("list_model_packages").paginate(**kwargs):
        for item in page.get("ModelPackageSummaryList", []):
            arn = item["ModelPackageArn"]
            found.append(_summary(client.describe_model_package(ModelPackageName=arn)))
    found.sort(key=lambda p: (p.version or 0, p.created), reverse=True)
    return found


def set_approval(
    config: AwsConfig, arn: str, status: str, description: str = "", client: Any = None
) -> PackageSummary:
    """Approve or reject one package, recording why."""
    check_approval(status)
    client = client or config.boto_session().client("sagemaker")
    request: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    # The metrics are sent back unchanged: moto 5.2.5 clears metadata an update leaves out
    # (AWS keeps it), and the gate's baseline is read from them.
    metrics = _summary(client.describe_model_package(ModelPackageName=arn)).metrics
    if metrics:
        request["CustomerMetadataProperties"] = metrics
    if description:
        request["ApprovalDescription"] = description
    client.update_model_package(**request)
    return _summary(client.describe_model_package(ModelPackageName=arn))


def latest_approved(config: AwsConfig, group: str, client: Any = None) -> PackageSummary | None:
    """The newest approved package of the group, or None."""
    packages = list_packages(config, group, "Approved", client=client)
    return packages[0] if packages else None


def resolve_package(config: AwsConfig, reference: str) -> PackageSummary:
    """A package ARN, or ``latest:GROUP``, to its summary (model data and image to deploy)."""
    client = config.boto_session().client("sagemaker")
    if reference.startswith(LATEST_PREFIX):
        group = reference[len(LATEST_PREFIX) :]
        found = latest_approved(config, group, client=client)
        if found is None:
            raise LaunchError(f"model package group {group} has no approved package")
        return found
    if not reference.startswith("arn:") or ":model-package/" not in reference:
        raise LaunchError(
            f"--model-package {reference!r}: give a model package ARN or {LATEST_PREFIX}GROUP"
        )
    summary = _summary(client.describe_model_package(ModelPackageName=reference))
    if summary.approval != "Approved":
        raise LaunchError(f"model package {reference} is {summary.approval}, not Approved")
    return summary


__all__ = [
    "APPROVAL_STATUSES",
    "LATEST_PREFIX",
    "PackageSummary",
    "latest_approved",
    "list_packages",
    "package_request",
    "register_from_evaluation",
    "resolve_package",
    "set_approval",
]
