"""The cyclic garbage collector, run seldom where many short-lived containers are made.

Streaming events (the pipeline, the worker processes) and answering large requests (the
fake server) allocate dozens of containers per event or thousands per request that die
young and never form cycles; reference counting frees them. At the default thresholds
(700, 10, 10) the collector runs every 700 allocations, took a quarter of a sync's time,
and promoted bodies still in use to the oldest generation, whose full passes then went
over everything the fake server holds: half of its CPU after a million events.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["FEW_COLLECTIONS", "few_collections"]

# the thresholds while streaming or serving (the defaults are 700, 10, 10)
FEW_COLLECTIONS = (100_000, 50, 100)


@contextlib.contextmanager
def few_collections() -> Iterator[None]:
    """Run the collector at ``FEW_COLLECTIONS`` inside the block, as before after it."""
    thresholds = gc.get_threshold()
    gc.set_threshold(*FEW_COLLECTIONS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
