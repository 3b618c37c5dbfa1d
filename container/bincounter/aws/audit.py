"""The audit's AWS side: count the CSV's S3 photos with a batch transform, then decide verdicts.

A transform cannot carry a per-record header, so it only counts: each photo's answer lands as
``<key under the input prefix>.out``. The verdicts are then decided here with
``verification.verify`` and the model card's ``verification`` section, which is what an
endpoint told the expected quantity would have answered (same function, same probabilities).
The transform reads every object under the photos' common prefix: give the audit photos a
prefix of their own.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import CLASSES, verification
from ..audit import AuditRecord, row_of
from ..errors import UserError
from .config import AwsConfig
from .transform import TransformSettings, transform


def common_prefix(records: Sequence[AuditRecord]) -> str:
    """The deepest ``s3://bucket/folder/`` holding every photo; every photo must be on S3."""
    local = [r.photo for r in records if not r.photo.startswith("s3://")]
    if local:
        raise UserError(
            f"a batch transform reads S3 only, and {local[0]} is local: upload the photos, or "
            "audit with --local"
        )
    prefix = posixpath.commonpath([r.photo[5:] for r in records])
    if "/" not in prefix or any(r.photo[5:] == prefix for r in records):
        prefix = posixpath.dirname(prefix)
    return f"s3://{prefix.rstrip('/')}/"


def verdict_rows(
    records: Sequence[AuditRecord],
    answers: Mapping[str, Mapping[str, Any]],
    section: Mapping[str, Any],
    mismatch_rate: float | None,
) -> list[dict[str, Any]]:
    """``audit.csv`` rows from transform answers (by photo URI) and the card's section."""
    rows = []
    for record in records:
        answer = dict(answers.get(record.photo) or {"error": "no transform output"})
        if "probabilities" in answer:
            p = np.array([[answer["probabilities"][str(c)] for c in CLASSES]])
            match, verdicts = verification.verify(
                p, [record.expected_quantity], section, mismatch_rate
            )
            answer.update(match_probability=float(match[0]), verdict=verdicts[0])
        rows.append(row_of(record, answer))
    return rows


def transform_answers(
    config: AwsConfig,
    records: Sequence[AuditRecord],
    settings: TransformSettings | None = None,
    *,
    model_name: str | None = None,
    model_data: str | None = None,
    output_uri: str | None = None,
    job_name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the transform on the photos' prefix (to completion) and read each photo's ``.out``
    answer; a photo whose answer is missing or unreadable gets an ``error`` instead."""
    prefix = common_prefix(records)
    job = transform(
        config,
        prefix,
        settings,
        model_name=model_name,
        model_data=model_data,
        output_uri=output_uri,
        job_name=job_name,
    )
    s3 = config.boto_session().client("s3")
    bucket, _, key_prefix = job.output_uri[5:].partition("/")
    answers = {}
    for record in records:
        relative = record.photo[len(prefix) :]
        key = posixpath.join(key_prefix, relative) + ".out"
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            answers[record.photo] = json.loads(body)
        except Exception as exc:  # a missing or unreadable answer is that photo's error
            answers[record.photo] = {"error": f"s3://{bucket}/{key}: {exc}"}
    return answers
