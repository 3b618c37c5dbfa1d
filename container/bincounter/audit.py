"""The inventory audit: which bins very likely do not hold what the records say.

Input is a CSV of ``photo,expected_quantity[,bin_id]`` (local paths or ``s3://`` URIs). Each
photo is counted by a server that is told the expected quantity (``expectations``: the
custom-attributes header), so its ``match_probability`` and ``verdict`` come from the same
``verification.verify`` as any endpoint answer. ``run_local`` starts ``serve`` on a model
directory (no AWS account needed) or uses a server already running; the AWS side
(``aws.audit``) gets the probabilities from a batch transform and decides the verdicts here with
the card's section, which is the same function on the same numbers.

Outputs: ``audit.csv`` (one row per bin), ``audit.json`` (how many photos, flagged, to review,
and the expected precision of the flags) and ``audit.png`` (flags per expected quantity, and the
histogram of match probabilities).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import CLASSES, verification
from .card import served_card
from .errors import DataError, UserError, VerificationError
from .files import atomic_write_bytes, atomic_write_json
from .serving import parameters

log = logging.getLogger(__name__)

#: The request header that carries a photo's expected quantity (``serving.expectations``).
ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"

CSV_FILE, JSON_FILE, PNG_FILE = "audit.csv", "audit.json", "audit.png"


@dataclass(frozen=True)
class AuditRecord:
    """One line of the input: a photo and what the records say its bin holds."""

    photo: str
    expected_quantity: int
    bin_id: str


def read_records(path: Path) -> list[AuditRecord]:
    """The CSV's records; a ``DataError`` naming the line for a missing column or bad quantity."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataError(f"audit CSV {path} cannot be read: {exc.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    columns = set(reader.fieldnames or ())
    if not {"photo", "expected_quantity"} <= columns:
        raise DataError(
            f"audit CSV {path} needs a header 'photo,expected_quantity[,bin_id]'; "
            f"got {sorted(columns) or 'none'}"
        )
    records = []
    for line, row in enumerate(reader, start=2):
        try:
            quantity = verification.check_expected(row["expected_quantity"])
        except VerificationError as exc:
            raise DataError(f"{path} line {line}: {exc.reason}") from None
        if not (row.get("photo") or "").strip():
            raise DataError(f"{path} line {line}: empty photo")
        photo = row["photo"].strip()
        records.append(AuditRecord(photo, quantity, (row.get("bin_id") or "").strip() or photo))
    if not records:
        raise DataError(f"audit CSV {path} has no records")
    return records


def photo_bytes(photo: str, base: Path) -> bytes:
    """A local photo (relative to the CSV's folder) or an ``s3://`` object (needs AWS access)."""
    if photo.startswith("s3://"):
        import boto3

        bucket, _, key = photo[5:].partition("/")
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    path = Path(photo) if Path(photo).is_absolute() else base / photo
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"photo {photo} cannot be read: {exc.strerror}") from None


def ask(url: str, record: AuditRecord, data: bytes, mismatch_rate: float | None) -> dict:
    """One photo's answer from a server, told the record's expected quantity and bin."""
    attributes = f"expected_quantity={record.expected_quantity}"
    if mismatch_rate is not None:
        attributes += f",mismatch_rate={mismatch_rate}"
    request = urllib.request.Request(
        url.rstrip("/") + "/invocations",
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/x-image",
            "Accept": "application/json",
            ATTRIBUTES_HEADER: attributes,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")
        return {"error": f"HTTP {exc.code}: {body[:300]}"}
    except urllib.error.URLError as exc:
        raise UserError(f"cannot reach the server at {url}: {exc.reason}") from None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def local_server(model_dir: Path, serve: Path, ready_s: float = 120, tta: int = 1) -> Iterator[str]:
    """``serve`` on ``model_dir`` at a free loopback port, averaging ``tta`` variants of each
    photo; yields its URL once ``/ping`` is 200."""
    port = _port()
    env = {
        **os.environ,
        "BINCOUNTER_MODEL_DIR": str(model_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "BINCOUNTER_BIND_HOST": "127.0.0.1",
        parameters.TTA: str(tta),
    }
    process = subprocess.Popen([sys.executable, str(serve)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while not _pings(url):
            if process.poll() is not None:
                raise UserError(f"serve exited with status {process.returncode}; see its log")
            if time.monotonic() > deadline:
                raise UserError(f"serve did not answer /ping within {ready_s:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def row_of(record: AuditRecord, answer: Mapping[str, Any]) -> dict[str, Any]:
    """One ``audit.csv`` row: the record joined with its answer (or its error)."""
    row: dict[str, Any] = {
        "bin_id": record.bin_id,
        "photo": record.photo,
        "expected_quantity": record.expected_quantity,
    }
    if "error" in answer:
        return {**row, "count": "", "verdict": "error", "error": answer["error"]}
    probabilities = answer["probabilities"]
    return {
        **row,
        "count": answer["count"],
        "confidence": round(float(answer["confidence"]), 6),
        "match_probability": round(float(answer["match_probability"]), 6),
        "verdict": answer["verdict"],
        **{f"p{c}": round(float(probabilities[str(c)]), 6) for c in CLASSES},
        "error": "",
    }


def summarize(rows: Sequence[Mapping[str, Any]], section: Mapping[str, Any] | None) -> dict:
    """``audit.json``: totals, and what the flags are expected to be worth.

    ``expected_precision``: the mean mismatch probability of the flagged bins, i.e. the share of
    them an auditor should find wrong if the calibration holds. ``validation`` repeats the
    precision, recall and lift the thresholds had on validation (card's default rate).
    """
    answered = [r for r in rows if r["verdict"] != "error"]
    flagged = [r for r in answered if r["verdict"] == "mismatch"]
    summary: dict[str, Any] = {
        "photos": len(rows),
        "answered": len(answered),
        "errors": len(rows) - len(answered),
        "flagged": len(flagged),
        "review": sum(r["verdict"] == "review" for r in answered),
        "match": sum(r["verdict"] == "match" for r in answered),
        "expected_precision": (
            float(np.mean([1 - r["match_probability"] for r in flagged])) if flagged else None
        ),
        "expected_wrong_records": float(sum(1 - r["match_probability"] for r in answered)),
    }
    if section:
        summary["thresholds"] = dict(section["thresholds"])
        summary["validation"] = {"mismatch_rate": section["mismatch_rate"], **section["validation"]}
    return summary


def write_outputs(out: Path, rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    """``audit.csv``, ``audit.json`` and ``audit.png`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    fields = ["bin_id", "photo", "expected_quantity", "count", "confidence", "match_probability"]
    fields += ["verdict", *(f"p{c}" for c in CLASSES), "error"]
    lines = [",".join(fields)]
    for row in rows:
        lines.append(",".join(_cell(row.get(f, "")) for f in fields))
    atomic_write_bytes(out / CSV_FILE, ("\n".join(lines) + "\n").encode())
    atomic_write_json(out / JSON_FILE, summary)
    plot(rows, out / PNG_FILE)


def _cell(value: Any) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def plot(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Verdicts per expected quantity (stacked bars), and the match probabilities' histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    answered = [r for r in rows if r["verdict"] != "error"]
    fig, (bars, hist) = plt.subplots(1, 2, figsize=(10, 4))
    bottom = np.zeros(len(CLASSES))
    for verdict, colour in zip(
        verification.VERDICTS, ("tab:green", "tab:orange", "tab:red"), strict=True
    ):
        heights = np.array(
            [
                sum(r["expected_quantity"] == c and r["verdict"] == verdict for r in answered)
                for c in CLASSES
            ]
        )
        bars.bar([str(c) for c in CLASSES], heights, bottom=bottom, color=colour, label=verdict)
        bottom += heights
    bars.set(
        xlabel="expected quantity (records)", ylabel="bins", title="Verdicts per expected quantity"
    )
    bars.legend()
    hist.hist([r["match_probability"] for r in answered], bins=20, range=(0, 1), color="tab:blue")
    hist.set(xlabel="match probability", ylabel="bins", title="How sure the records are right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_local(
    records: Sequence[AuditRecord],
    base: Path,
    out: Path,
    *,
    url: str | None = None,
    model_dir: Path | None = None,
    serve: Path | None = None,
    mismatch_rate: float | None = None,
    tta: int = 1,
) -> dict[str, Any]:
    """Audit with a local server: ``url`` if one runs, else ``serve`` started on ``model_dir``
    averaging ``tta`` variants of each photo (a running server at ``url`` should run with the
    same ``BINCOUNTER_TTA``: the card's verdict figures for that setting are reported).

    Returns the summary written to ``audit.json``.
    """
    section = None
    if model_dir is not None:
        card = json.loads((Path(model_dir) / "model_card.json").read_text())
        section = served_card(card, tta).get("verification")
        if section is None:
            raise UserError(f"the model card in {model_dir} has no verification section: retrain")
    with contextlib.ExitStack() as stack:
        if url is None:
            if model_dir is None or serve is None:
                raise UserError("give a server URL, or a model directory and the serve program")
            url = stack.enter_context(local_server(Path(model_dir), Path(serve), tta=tta))
        rows = [row_of(r, ask(url, r, photo_bytes(r.photo, base), mismatch_rate)) for r in records]
    summary = summarize(rows, section)
    write_outputs(out, rows, summary)
    log.info(
        "audit: %d photos, %d flagged as mismatch, %d to review; expected precision of the flags "
        "%s; written to %s",
        summary["photos"],
        summary["flagged"],
        summary["review"],
        "n/a" if summary["expected_precision"] is None else f"{summary['expected_precision']:.2f}",
        out,
    )
    return summary
