"""Per-photo work on a thread pool, with a progress bar a person can switch off.

Fetching and writing thousands of small photos is bound by waiting (network, disk), not by
the CPU, so both steps run their per-photo function through this one helper.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def parallel(
    fn: Callable[[Any], Any], items: list[Any], workers: int, desc: str, progress: bool
) -> list[Any]:
    """``[fn(item) for item in items]`` on ``workers`` threads, in order."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(
            tqdm(
                pool.map(fn, items),
                total=len(items),
                desc=desc,
                unit="photo",
                disable=not progress,
                dynamic_ncols=True,
            )
        )
