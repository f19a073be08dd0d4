"""The runner's own settings: how a run reads, batches and spreads its work.

They hold for every destination, so the runner declares them and adds them to the
destination's (``with_runner_settings``); what a destination's client needs (its URL,
rate limits, retries, timeouts) the destination declares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from destination.kit.settings import Setting, merge_settings

__all__ = [
    "AUTO_WORKERS_MIN_BYTES",
    "ROUTES",
    "RUNNER_SETTINGS",
    "RunnerSettings",
    "with_runner_settings",
]

# "auto" starts a worker from this input size on (see run.workers_for)
AUTO_WORKERS_MIN_BYTES = 64 << 20
ROUTES = ("auto", "python", "compiled")

RUNNER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "batch_size",
        "integer",
        "Events an action sends in one request.",
        default=1000,
        env="TIKTOK_BATCH_SIZE",
        flag="--batch-size",
        minimum=1,
        maximum=10_000,
    ),
    Setting(
        "concurrency",
        "integer",
        "Requests in flight at once; the rate limits hold whatever it is.",
        default=4,
        env="TIKTOK_CONCURRENCY",
        flag="--concurrency",
        minimum=1,
        maximum=64,
    ),
    Setting(
        "workers",
        "integer",
        "Processes that parse, map and check events (identifiers hashed): 0 (all in the "
        'main process), N, or `"auto"`: one for an events file of '
        f"{AUTO_WORKERS_MIN_BYTES >> 20} MiB or more on 2 or more CPUs, else none "
        "(standard input: none). Same results in the same order; workers never get a "
        "secret such as the access token.",
        default="auto",
        env="TIKTOK_WORKERS",
        flag="--workers",
        minimum=0,
        maximum=64,
        also=("auto",),
    ),
    Setting(
        "route",
        "string",
        'How events are parsed, mapped, checked and hashed: `"python"` (each event in '
        'Python objects), `"compiled"` (the whole mapping file as one DuckDB query per '
        "chunk of lines; refused, naming why, for a file it cannot express; the same "
        'results, but slower today: benchmarks/RESULTS.md) or `"auto"`: the faster of '
        "the two, which is Python for now.",
        default="auto",
        env="TIKTOK_ROUTE",
        flag="--route",
        choices=ROUTES,
    ),
    Setting(
        "max_event_bytes",
        "integer",
        "Longest input line read as an event; longer lines are rejected unread.",
        default=1 << 20,
        minimum=1024,
        maximum=64 << 20,
    ),
)


def with_runner_settings(destination_settings: Sequence[Setting]) -> tuple[Setting, ...]:
    """The settings of a run: the runner's, then the destination's. A destination that
    declares one of the runner's names (or environment variables, or flags) is refused
    with a ``ValueError``: which of the two a value went to would be a guess."""
    return merge_settings(RUNNER_SETTINGS, destination_settings)


@dataclass(frozen=True)
class RunnerSettings:
    """The runner's part of a run's resolved values."""

    batch_size: int
    concurrency: int
    workers: int | str  # a number, or "auto"
    route: str  # one of ROUTES
    max_event_bytes: int

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RunnerSettings:
        return cls(**{s.name: values[s.name] for s in RUNNER_SETTINGS})
