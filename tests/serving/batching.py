"""Test-only ways into ``serving.batcher.Batcher``: queue decoded images without waiting for
them, and name the thread that runs the network. The server needs neither (it calls
``Batcher.predict``), so they live here rather than in the shipped class."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from bincounter.serving.batcher import Batcher, check_pixels


def submit(batcher: Batcher, images: Sequence[np.ndarray]) -> list[Future[np.ndarray]]:
    """Queue already decoded images; each future yields one image's probabilities ``[5]``."""
    return batcher._enqueue(check_pixels(images), decoded=0)


def network_thread_id(batcher: Batcher) -> int | None:
    """``threading.get_ident()`` of the batcher's thread: the only one that runs the model."""
    return batcher._thread.ident
