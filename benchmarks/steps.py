"""Time each step of the event route on one core, per event, best of 3.

    python -m benchmarks.steps [--events N] [--mapping M]

Reads the first N lines (default 20,000) of the benchmark's events file (generated if
missing), binds the mapping file's subscriptions for a dry run, and times the steps one
at a time on the same lines: parse, match, map (leaving out empty values), validate, hash the
identifiers, place (count, audience and batch group), then the whole route of a line
(``route_line``, then ``Subscription.place``), the main process's part for lines a worker
routed (from the worker's JSON to the finished event: place, batch, the request bodies,
the results) and a whole ``sync --dry-run`` in this process. Each step's input is
computed beforehand, so a row is that step alone. This is the "Where the time goes"
table of ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gc
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarks.generate import cached_events
from destination.backends import DryRunBackend
from destination.runner.outputs import OutputFile
from destination.runner.pipeline import Pipeline
from destination.runner.route import decode_routed, encode_routed, route_line
from destination.runner.sync import SyncOptions, run_sync
from destination.runner.workers import CHUNK_LINES, route_lines
from destination.settings import Secret, resolve_settings
from destination.tiktok.actions import Context, user_identifiers
from destination.tiktok.api import TikTokApi
from destination.tiktok.audiences import AudienceRegistry
from destination.tiktok.destination import bind, load_mapping_file

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
BENCH_SETTINGS = {"qps": 0, "batch_size": 1000, "default_phone_region": "US"}


def best_of(runs: int, work: Callable[[], object], count: int) -> float:
    """The fastest of ``runs`` runs of ``work``, in µs per item of ``count``."""
    best = float("inf")
    gc.disable()  # as the pipeline (which collects seldom); the lists here would trip it
    try:
        for _ in range(runs):
            started = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - started)
    finally:
        gc.enable()
    return best / count * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000, help="lines to time (20,000)")
    parser.add_argument("--mapping", type=Path, default=ROOT / "mappings" / "segment-native.json")
    args = parser.parse_args(argv)

    source = cached_events(100_000, 42)
    with source.open("rb") as handle:
        lines = [handle.readline() for _ in range(args.events)]
    count = len(lines)

    mapping_file = load_mapping_file(args.mapping)
    settings = resolve_settings(
        mapping_file.settings, environ={}, overrides=BENCH_SETTINGS, need_token=False
    )
    with tempfile.TemporaryDirectory() as scratch:
        registry = AudienceRegistry(
            Path(scratch) / "audiences.json", namespace="bench", create=None
        )
        api = TikTokApi(DryRunBackend(), Secret("dry-run"), qps=0, advertiser_qps=0)
        context = Context(settings=settings, api=api, registry=registry)
        subscriptions = bind(mapping_file, context)

        events = [orjson.loads(line) for line in lines]
        matched = [[s for s in subscriptions if s.condition.matches(e)] for e in events]
        pairs = [(s, e) for e, subs in zip(events, matched, strict=True) for s in subs]
        payloads = [s.mapping.payload(e) for s, e in pairs]
        checked = [(s, p) for (s, _), p in zip(pairs, payloads, strict=True)]
        numbered = list(enumerate(lines, 1))
        steps = [
            (subscriptions[step.subscription], step)
            for number, line in numbered
            for step in route_line(subscriptions, number, line).steps
        ]

        rows: list[tuple[str, float]] = [
            ("parse a line (orjson)", best_of(3, lambda: [orjson.loads(x) for x in lines], count)),
            (
                "match the subscriptions",
                best_of(
                    3,
                    lambda: [[s for s in subscriptions if s.condition.matches(e)] for e in events],
                    count,
                ),
            ),
            (
                "apply the mapping, leaving out empty values",
                best_of(3, lambda: [s.mapping.payload(e) for s, e in pairs], count),
            ),
            (
                "validate the payload",
                best_of(3, lambda: [s.validator.problems(p) for s, p in checked], count),
            ),
            (
                "normalize + hash the identifiers",
                best_of(3, lambda: [user_identifiers(p, settings) for p in payloads], count),
            ),
            (
                "place (count, audience, batch group)",
                best_of(3, lambda: [s.place(step) for s, step in steps], count),
            ),
            (
                "the whole route of a line (parse, match, ..., digest, then place)",
                best_of(
                    3,
                    lambda: [
                        subscriptions[step.subscription].place(step)
                        for number, line in numbered
                        for step in route_line(subscriptions, number, line).steps
                    ],
                    count,
                ),
            ),
        ]

        # the worker's documents, a chunk each, as the main process takes them in
        chunks = [numbered[i : i + CHUNK_LINES] for i in range(0, count, CHUNK_LINES)]
        documents = [(encode_routed(route_lines(subscriptions, c)), c) for c in chunks]

        def main_part() -> None:
            pipeline = Pipeline(
                subscriptions,
                batch_size=settings.batch_size,
                rejected=OutputFile(None, what="rejected file"),
                retry=OutputFile(None, what="retry file"),
                concurrency=4,
            )
            pipeline.run(line for d, c in documents for line in decode_routed(d, c))

        rows.append(
            ("main process's part for events a worker routed", best_of(3, main_part, count))
        )

        data = b"".join(lines)
        environ: dict[str, Any] = {}

        def dry_run() -> None:
            run_sync(
                SyncOptions(
                    mapping=args.mapping,
                    events="-",
                    dry_run=True,
                    rejected=Path(scratch) / "rejected.ndjson",  # as a real run keeps them
                    overrides={**BENCH_SETTINGS, "audience_state": str(Path(scratch) / "a.json")},
                ),
                environ=environ,
                stdin=io.BytesIO(data),
            )

        rows.append(("sync --dry-run, in this process, all of it", best_of(3, dry_run, count)))

    width = max(len(name) for name, _ in rows)
    print(f"{count:,} events of {source.name}, µs per event (best of 3)")
    for name, micros in rows:
        print(f"  {name:<{width}}  {micros:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
