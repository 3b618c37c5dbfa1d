"""What a channel's verification found bad: named in the log, summed up, and held against
``max_bad_fraction``, in the same words for every layout (photo folders, tar shards, Pipe)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import DataError

log = logging.getLogger(__name__)

#: Problems named one by one in the log before the rest are summed up.
NAMED_PROBLEMS = 20


def judge_problems(
    name: str,
    problems: Sequence[object],
    met: int,
    max_bad_fraction: float,
    *,
    noun: str,
    summary: str,
    refusal: str,
    first: object | None = None,
) -> None:
    """Log the first problems by name and the rest as a number, then ``summary`` with the
    share skipped; ``DataError`` when that share of the ``met`` samples exceeds
    ``max_bad_fraction``, naming the first problem (or ``first``, when a layout names it
    otherwise than in the log).

    ``refusal`` is the layout's own words for the share, formatted with ``percent``.
    """
    for problem in problems[:NAMED_PROBLEMS]:
        log.warning("channel '%s': skipping %s", name, problem)
    if len(problems) > NAMED_PROBLEMS:
        log.warning("channel '%s': ... and %d more %s", name, len(problems) - NAMED_PROBLEMS, noun)
    share = len(problems) / max(1, met)
    log.info("channel '%s': %s (%.1f%%)", name, summary, 100 * share)
    if share > max_bad_fraction:
        raise DataError(
            f"channel '{name}': {refusal.format(percent=100 * share)}, above "
            f"max_bad_fraction={max_bad_fraction:g}; first: "
            f"{problems[0] if first is None else first}"
        )
