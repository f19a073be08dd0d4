"""One sync run, from a mapping file and an events input to a summary.

Order matters: the mapping file is read and checked, settings are resolved (the token:
``TIKTOK_ACCESS_TOKEN``, else the token store), the token's scopes are checked and every
subscription is compiled before the first event is read or the first call is made.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from destination.auth.provider import check_scopes, stored_entry, token_for_run
from destination.auth.store import TokenStore, default_token_store
from destination.backends import Backend, DryRunBackend, HttpBackend
from destination.errors import InputError
from destination.runner.pipeline import Pipeline
from destination.runner.reader import read_ndjson
from destination.runner.rejected import RejectedSink
from destination.settings import TOKEN_VARIABLE, Secret, resolve_settings
from destination.tiktok.actions import Context
from destination.tiktok.api import RetryPolicy, TikTokApi
from destination.tiktok.audiences import AudienceRegistry
from destination.tiktok.destination import bind, load_mapping_file

__all__ = ["SyncOptions", "run_sync"]


@dataclass(frozen=True)
class SyncOptions:
    mapping: Path
    events: str  # a path, or "-" for standard input
    rejected: Path | None = None
    dry_run: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _open_events(events: str, stdin: IO[bytes] | None) -> Iterator[IO[bytes]]:
    if events == "-":
        yield stdin if stdin is not None else sys.stdin.buffer
        return
    try:
        handle = open(events, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError as exc:
        raise InputError(f"events file {events} does not exist") from exc
    except OSError as exc:
        raise InputError(f"cannot read events file {events}: {exc.strerror}") from exc
    with handle:
        yield handle


def run_sync(
    options: SyncOptions,
    *,
    environ: Mapping[str, str],
    backend: Backend | None = None,
    stdin: IO[bytes] | None = None,
) -> dict[str, Any]:
    """Run one sync and return its summary (see the README for the keys)."""
    mapping_file = load_mapping_file(options.mapping)
    store = TokenStore(default_token_store(environ))
    # The environment's token wins; the store is not even read when it is set.
    use_store = not options.dry_run and not environ.get(TOKEN_VARIABLE, "").strip()
    entry = stored_entry(store, environ) if use_store else None
    settings = resolve_settings(
        mapping_file.settings,
        environ=environ,
        overrides=options.overrides,
        need_token=not options.dry_run and backend is None and entry is None,
    )
    if options.dry_run:
        backend = DryRunBackend()
    elif backend is None:
        backend = HttpBackend(settings.base_url, timeout=settings.timeout_seconds)
    tokens = token_for_run(
        env_token=settings.access_token,
        entry=entry,
        store=store,
        backend=backend,
        base_url=settings.base_url,
        environ=environ,
    )
    if tokens is not None and not options.dry_run:
        check_scopes(tokens)
    api = TikTokApi(
        backend,
        tokens or Secret("dry-run"),
        retry=RetryPolicy(
            max_attempts=settings.max_attempts,
            max_seconds=settings.retry_max_seconds,
            initial_wait=settings.retry_initial_wait,
        ),
        qps=settings.qps,
    )
    registry = AudienceRegistry(
        settings.audience_state,
        namespace=settings.base_url,
        create=None if options.dry_run else api.create_segment_audience,
    )
    context = Context(settings=settings, api=api, registry=registry)
    subscriptions = bind(mapping_file, context)

    with _open_events(options.events, stdin) as stream, RejectedSink(options.rejected) as sink:
        tally = Pipeline(subscriptions, batch_size=settings.batch_size, rejected=sink).run(
            read_ndjson(stream)
        )
    return {
        "received": tally.received,
        "delivered": tally.delivered,
        "rejected": tally.rejected,
        "requests": api.requests_sent,
        "dry_run": options.dry_run,
        "mode": mapping_file.mode,
        "rejected_by_reason": dict(sorted(tally.rejected_by_reason.items())),
        "delivered_by_subscription": dict(sorted(tally.delivered_by_subscription.items())),
        "dropped_identifiers": dict(sorted(context.dropped.items())),
        "audiences": [
            {
                "advertiser_id": a.advertiser_id,
                "key": a.key,
                "name": a.name,
                "audience_id": a.audience_id,
                "created": a.created,
            }
            for a in registry.resolved
        ],
        "rejected_file": str(options.rejected) if options.rejected else None,
        "stopped": tally.stopped,
    }
