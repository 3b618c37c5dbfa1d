"""The data report: what a prepared folder holds, in numbers (JSON) and at a glance (PNG).

A person deciding whether a sample is good enough to train on wants the photos per split and
count (is a count starved?), the image sizes before and after ``--resize`` (what the job will
decode) and every excluded id with its reason, without opening the manifest's thousands of
entries. The report is built from the manifest entries alone, so it can be rebuilt from a
prepared folder on any machine.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import CLASSES
from ..files import atomic_write_json
from .layout import SPLITS
from .records import Excluded

REPORT_JSON = "report.json"
REPORT_PNG = "report.png"


def _size_summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "mean": round(statistics.fmean(values), 1),
    }


def build_report(
    entries: list[dict[str, Any]], excluded: list[Excluded], source: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """Counts per split and count, image sizes before/after resizing, excluded files."""
    counts = {s: {str(c): 0 for c in CLASSES} for s in SPLITS}
    for e in entries:
        counts[e["split"]][str(e["count"])] += 1
    reasons = Counter(x.reason.split(" (")[0].split(":")[0] for x in excluded)
    return {
        "source": source,
        "settings": settings,
        "photos": len(entries),
        "counts": counts,
        "totals": {s: sum(counts[s].values()) for s in SPLITS},
        "per_count": {str(c): sum(counts[s][str(c)] for s in SPLITS) for c in CLASSES},
        "source_images": {
            "width": _size_summary([e["source_width"] for e in entries]),
            "height": _size_summary([e["source_height"] for e in entries]),
            "bytes": _size_summary([e["source_bytes"] for e in entries]),
            "total_bytes": sum(e["source_bytes"] for e in entries),
        },
        "written_images": {
            "width": _size_summary([e["width"] for e in entries]),
            "height": _size_summary([e["height"] for e in entries]),
            "bytes": _size_summary([e["bytes"] for e in entries]),
            "total_bytes": sum(e["bytes"] for e in entries),
        },
        "excluded": [asdict(x) for x in excluded],
        "excluded_by_reason": dict(reasons),
    }


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Grouped bar chart: photos per count, one bar per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    width = 0.27
    xs = list(range(len(CLASSES)))
    for i, split in enumerate(SPLITS):
        values = [report["counts"][split][str(c)] for c in CLASSES]
        bars = ax.bar([x + (i - 1) * width for x in xs], values, width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(xs, [str(c) for c in CLASSES])
    ax.set_xlabel("items in bin (EXPECTED_QUANTITY)")
    ax.set_ylabel("photos")
    n_excluded = len(report["excluded"])
    ax.set_title(f"{report['photos']} photos from {report['source']}; {n_excluded} excluded")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    out_dir: Path, report: dict[str, Any], chart: bool = True
) -> tuple[Path, Path | None]:
    """``report.json`` and, with ``chart``, ``report.png`` in ``out_dir``."""
    report_json = out_dir / REPORT_JSON
    atomic_write_json(report_json, report, indent=1)
    report_png = plot_report(report, out_dir / REPORT_PNG) if chart else None
    return report_json, report_png
