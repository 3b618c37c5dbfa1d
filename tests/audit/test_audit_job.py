"""``scripts/audit.py``: the CSV in, a real local server counting real photos, the three files out."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bincounter import audit
from bincounter.card import served_card
from bincounter.errors import DataError

from support import ABID, REPO, abid_labels


def write_csv(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["photo", "expected_quantity", "bin_id"][: len(rows[0])] if rows else [])
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "rows,words",
    [
        ([("a.jpg", "0")], "line 2: expected_quantity=0 is outside 1..5"),
        ([("a.jpg", "3"), ("b.jpg", "7")], "line 3: expected_quantity=7 is outside 1..5"),
        ([("a.jpg", "three")], "not a number"),
        ([], "has no records"),
    ],
)
def test_bad_csv_names_the_line_and_the_range(tmp_path: Path, rows, words: str) -> None:
    path = write_csv(tmp_path / "bins.csv", rows or [])
    if not rows:
        path.write_text("photo,expected_quantity\n")
    with pytest.raises(DataError, match=words):
        audit.read_records(path)
    (tmp_path / "bad.csv").write_text("image,qty\na.jpg,3\n")
    with pytest.raises(DataError, match="needs a header 'photo,expected_quantity"):
        audit.read_records(tmp_path / "bad.csv")


@pytest.mark.slow
def test_audit_local_end_to_end_on_real_photos(trained_model_dir: Path, tmp_path: Path) -> None:
    labels = [(i, c) for i, c, split in abid_labels() if split == "test"][:8]
    rows = []
    for k, (image_id, count) in enumerate(labels):
        # half the records right, half off by two (wrapped into 1..5)
        expected = count if k % 2 == 0 else (count + 1) % 5 + 1
        rows.append((str(ABID / "images" / f"{image_id}.jpg"), expected, f"bin-{k}"))
    path = write_csv(tmp_path / "bins.csv", rows)
    out = tmp_path / "audit"
    command = [sys.executable, str(REPO / "scripts" / "audit.py"), str(path), "--local", "--out"]
    command += [str(out), "--model-dir", str(trained_model_dir)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = list(csv.DictReader((out / audit.CSV_FILE).open()))
    assert [r["bin_id"] for r in table] == [f"bin-{k}" for k in range(len(rows))]
    # an audit averages the eight variants by default, with the card's verdicts for them
    assert "TTA x8" in result.stdout + result.stderr
    card = served_card(json.loads((trained_model_dir / "model_card.json").read_text()), 8)
    assert card["verification"]["thresholds"] == card["verification"]["tta8"]["thresholds"]
    for row, (_, expected, _) in zip(table, rows, strict=True):
        assert int(row["expected_quantity"]) == expected
        assert row["verdict"] in ("match", "review", "mismatch") and row["error"] == ""
        assert 0 <= float(row["match_probability"]) <= 1
        assert abs(sum(float(row[f"p{c}"]) for c in range(1, 6)) - 1) < 1e-4
        t = card["verification"]["thresholds"]
        m = float(row["match_probability"])
        if m <= t["mismatch"] - 1e-6:
            assert row["verdict"] == "mismatch"
    summary = json.loads((out / audit.JSON_FILE).read_text())
    assert summary["photos"] == len(rows) and summary["errors"] == 0
    assert summary["flagged"] == sum(r["verdict"] == "mismatch" for r in table)
    assert summary["review"] == sum(r["verdict"] == "review" for r in table)
    assert summary["thresholds"] == card["verification"]["thresholds"]
    assert (out / audit.PNG_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
