#!/usr/bin/env python3
"""Inventory audit: a CSV of photo,expected_quantity[,bin_id] -> audit.csv, audit.json, audit.png.

  scripts/audit.py bins.csv --local --model-dir runs/quickstart/opt_ml/model --out runs/audit
  scripts/audit.py bins.csv --local --url http://127.0.0.1:8080 --out runs/audit
  scripts/audit.py bins.csv --model-data s3://.../model.tar.gz --card model_card.json --out runs/audit

With --local the photos are counted by a local ``serve`` (no AWS account); otherwise by a
SageMaker batch transform (photos on S3), with the verdicts decided from the model card. Both
average each photo's eight flips and quarter turns by default (``--tta 8``: eight times the
compute of an endpoint answer, affordable offline, and better verdicts: docs/quality.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "container"))  # uninstalled checkout

from bincounter import audit, logs  # noqa: E402
from bincounter.card import served_card  # noqa: E402
from bincounter.decision import TTA_CHOICES  # noqa: E402
from bincounter.errors import UserError  # noqa: E402

log = logging.getLogger("bincounter.audit")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="photo,expected_quantity[,bin_id] (header line)")
    parser.add_argument("--out", type=Path, default=Path("audit"), help="output folder")
    parser.add_argument("--mismatch-rate", type=float, help="share of wrong records (card default)")
    parser.add_argument(
        "--tta",
        type=int,
        choices=TTA_CHOICES,
        default=8,
        help="photo variants averaged (8: flips and quarter turns; give the --url server's own)",
    )
    parser.add_argument("--local", action="store_true", help="count with a local server")
    parser.add_argument("--url", help="--local: a running server (else serve is started)")
    parser.add_argument("--model-dir", type=Path, help="--local: model folder to serve")
    parser.add_argument("--model-name", help="transform: an existing SageMaker model")
    parser.add_argument("--model-data", help="transform: s3://.../model.tar.gz")
    parser.add_argument("--card", type=Path, help="transform: the model's model_card.json")
    parser.add_argument("--instance-type", default="ml.m5.xlarge")
    parser.add_argument("--job-name", help="transform: the job's name (default: timestamped)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(stream=sys.stdout)
    try:
        records = audit.read_records(args.csv)
        if args.local:
            summary = audit.run_local(
                records,
                args.csv.parent,
                args.out,
                url=args.url,
                model_dir=args.model_dir,
                serve=REPO / "serve",
                mismatch_rate=args.mismatch_rate,
                tta=args.tta,
            )
        else:
            summary = transform_audit(args, records)
    except UserError as exc:
        log.error("audit failed: %s", exc.reason)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def transform_audit(args: argparse.Namespace, records: list) -> dict:
    from bincounter.aws.audit import transform_answers, verdict_rows
    from bincounter.aws.config import resolve_config
    from bincounter.aws.transform import TransformSettings
    from bincounter.serving import parameters

    if args.card is None:
        raise UserError("a transform audit needs --card (the model's model_card.json)")
    section = served_card(json.loads(args.card.read_text()), args.tta).get("verification")
    if section is None:
        raise UserError(f"{args.card} has no verification section: retrain the model")
    answers = transform_answers(
        resolve_config(),
        records,
        TransformSettings(
            instance_type=args.instance_type, environment={parameters.TTA: str(args.tta)}
        ),
        model_name=args.model_name,
        model_data=args.model_data,
        job_name=args.job_name,
    )
    rows = verdict_rows(records, answers, section, args.mismatch_rate)
    summary = audit.summarize(rows, section)
    audit.write_outputs(args.out, rows, summary)
    return summary


if __name__ == "__main__":
    sys.exit(main())
