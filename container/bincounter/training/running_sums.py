"""Running sums of an epoch and their exact reduction over ranks (torchvision's ``MetricLogger``).

The loop adds to named sums after every batch and asks for the job-wide figures once, at the
end of the epoch: one ``all_reduce`` of all of them in float64, so the reported means are exact
over every rank's photos, not means of per-rank means.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .distributed import DistContext, all_reduce_sum


class RunningSums:
    """Named sums, added to per batch, summed over ranks on demand.

    ``start`` carries sums over from a checkpoint written mid-epoch (the names it lacks start
    at 0): a resumed epoch reports the same figures as one never stopped.
    """

    def __init__(self, names: Iterable[str], start: Iterable[float] = ()) -> None:
        self.names = tuple(names)
        carried = list(start)
        self._sums = {n: carried[i] if i < len(carried) else 0 for i, n in enumerate(self.names)}

    def update(self, **amounts: float) -> None:
        """Add ``amounts`` (by name) to the sums."""
        for name, amount in amounts.items():
            self._sums[name] += amount

    def __getitem__(self, name: str) -> float:
        return self._sums[name]

    def values(self, *names: str) -> list[float]:
        """This rank's sums of ``names`` (all of them if none), in order: what a checkpoint keeps."""
        return [self._sums[n] for n in names or self.names]

    def mean(self, name: str, per: str) -> float:
        """This rank's ``name`` per ``per`` so far (0 before anything was added)."""
        return self._sums[name] / max(1, self._sums[per])

    def reduced(self, ctx: DistContext) -> dict[str, float]:
        """The sums over every rank (a collective: call it on every rank)."""
        totals = all_reduce_sum(torch.tensor(self.values(), dtype=torch.float64), ctx)
        return dict(zip(self.names, totals.tolist(), strict=True))
