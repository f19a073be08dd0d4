"""One sync run, from a mapping file and an events input to a summary.

Order matters: the mapping file is read and checked, settings are resolved (the token:
``TIKTOK_ACCESS_TOKEN``, else the token store), the output paths are checked against the
inputs and each other, the token's scopes are checked, every subscription is compiled,
and the state directory is checked writable and locked, all before the first event is
read or the first call is made.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from destination.backends import Backend, DryRunBackend, HttpBackend
from destination.errors import InputError, OutputError
from destination.kit.action import Subscription
from destination.runner.checkpoint import FILE_NAME, Checkpoint, fingerprint, locked_state
from destination.runner.meter import Show, watching
from destination.runner.outputs import OutputFile, refuse_clashes
from destination.runner.pipeline import Pipeline, Tally
from destination.runner.prefix import PrefixReader
from destination.runner.reader import LineStream, read_ndjson
from destination.runner.workers import routed_lines
from destination.settings import (
    TOKEN_VARIABLE,
    Secret,
    Settings,
    auto_workers,
    resolve_settings,
)
from destination.tiktok.actions import Context
from destination.tiktok.api import RetryPolicy, TikTokApi
from destination.tiktok.audiences import DRY_RUN_PREFIX, AudienceRegistry
from destination.tiktok.auth.provider import check_scopes, stored_entry, token_for_run
from destination.tiktok.auth.store import TokenStore, default_token_store
from destination.tiktok.destination import MappingFile, bind, load_mapping_file

__all__ = ["SyncOptions", "run_sync"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncOptions:
    mapping: Path
    events: str  # a path, or "-" for standard input
    rejected: Path | None = None
    retry: Path | None = None  # where events go when TikTok stays unavailable
    state: Path | None = None  # checkpoint directory: resume where a killed run stopped
    dry_run: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)
    progress: Show | None = None  # what shows the run's progress (a bar, log lines)
    progress_interval: float = 1.0  # seconds between two looks at the run


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
    _refuse_clashing_paths(options, settings, stdin)
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
        # a dry run sends nothing, so nothing needs pacing
        qps=0 if options.dry_run else settings.qps,
        advertiser_qps=0
        if options.dry_run
        else settings.qps
        if settings.advertiser_qps is None
        else settings.advertiser_qps,
    )
    registry = AudienceRegistry(
        settings.audience_state,
        namespace=settings.base_url,
        create=None if options.dry_run else api.create_segment_audience,
    )
    context = Context(settings=settings, api=api, registry=registry)
    subscriptions = bind(mapping_file, context)
    with contextlib.ExitStack() as held:
        checkpoint: Checkpoint | None = None
        if options.state is not None and not options.dry_run:
            if options.events != "-" and not Path(options.events).is_file():
                raise InputError(f"events file {options.events} does not exist")
            held.enter_context(locked_state(options.state))
            expected = fingerprint(options.events, options.mapping)
            checkpoint = Checkpoint.load(options.state, expected) or Checkpoint(expected)
        stream = held.enter_context(_open_events(options.events, stdin))
        tally, resumed = _deliver(
            options,
            settings,
            mapping_file=mapping_file,
            subscriptions=subscriptions,
            stream=stream,
            checkpoint=checkpoint,
        )

    if tally.stopped is None and (why := api.refusals.verdict()) is not None:
        tally.stopped = {"reason": "configuration", "message": why}
    summary: dict[str, Any] = tally.to_json()
    # a dry run creates no audience, but a real run would make one call for each
    would_create = sum(a.audience_id.startswith(DRY_RUN_PREFIX) for a in registry.resolved)
    warnings = _unmapped_warnings(subscriptions, mapping_file.source)
    if options.rejected is None and tally.rejected:
        warnings.append(
            f"{tally.rejected} rejected events were only counted: no --rejected file was given"
        )
    summary.update(
        {
            "requests": api.requests_sent + (would_create if options.dry_run else 0),
            "dry_run": options.dry_run,
            "mode": mapping_file.mode,
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
            "retry_file": str(options.retry) if options.retry else None,
            "resumed": resumed,
            "stopped": tally.stopped,
            "warnings": warnings,
        }
    )
    return summary


def _refuse_clashing_paths(
    options: SyncOptions, settings: Settings, stdin: IO[bytes] | None
) -> None:
    """No output may be an input or another output: opening it would destroy that file."""
    inputs = {"--mapping": options.mapping}
    if options.events != "-":
        inputs["--events"] = Path(options.events)
    else:
        # what standard input is on the file system, if anything
        with contextlib.suppress(OSError, ValueError, AttributeError):
            inputs["standard input"] = Path(f"/proc/self/fd/{(stdin or sys.stdin).fileno()}")
    refuse_clashes(
        inputs,
        {
            "--rejected": options.rejected,
            "--retry-file": options.retry,
            "the checkpoint": None if options.state is None else options.state / FILE_NAME,
            "the audience state file": None if options.dry_run else settings.audience_state,
        },
    )


def _deliver(
    options: SyncOptions,
    settings: Settings,
    *,
    mapping_file: MappingFile,
    subscriptions: Sequence[Subscription],
    stream: IO[bytes],
    checkpoint: Checkpoint | None,
) -> tuple[Tally, bool]:
    """Read, route, send and account for every event; the tally, and whether it resumed.

    An output that cannot be written ends the run with ``OutputError``, its message
    giving the counts so far.
    """
    resuming = checkpoint is not None and checkpoint.progress.read_up_to > 0
    if resuming and checkpoint is not None:
        log.info("resuming from line %d (%s)", checkpoint.progress.next_line, options.state)
    lines: LineStream = stream
    prefix: PrefixReader | None = None
    if checkpoint is not None and options.events == "-":
        prefix = PrefixReader(
            stream,
            expected=checkpoint.stdin_prefix if resuming else None,
            hold_from_line=checkpoint.progress.next_line,
            where=str(options.state),
        )
        lines = prefix
    if options.rejected is None:
        log.warning(
            "no --rejected file: events that cannot be delivered will only be counted, not kept"
        )
    rejected = OutputFile(options.rejected, what="rejected file")
    retry = OutputFile(options.retry, what="retry file")
    pipeline: Pipeline | None = None
    try:
        rejected.open(resume_at=checkpoint.rejected_length if resuming and checkpoint else None)
        retry.open(resume_at=checkpoint.retry_length if resuming and checkpoint else None)
        try:
            pipeline = Pipeline(
                subscriptions,
                batch_size=settings.batch_size,
                rejected=rejected,
                retry=retry,
                concurrency=settings.concurrency,
                tally=Tally.from_json(checkpoint.tally) if resuming and checkpoint else None,
                progress=checkpoint.progress if checkpoint else None,
                on_progress=_saver(checkpoint, options.state, rejected, retry, prefix),
            )
            workers = auto_workers(settings, options.events)
            earlier = pipeline.tally.received  # a resumed run's count: not this run's pace
            meter = watching(
                options.progress,
                stream=stream,
                events=lambda: pipeline.tally.received - earlier,
                interval=options.progress_interval,
            )
            if workers > 0:
                # closed here, whatever happens, so the workers stop with the run
                with (
                    meter,
                    contextlib.closing(
                        routed_lines(
                            lines,
                            max_bytes=settings.max_event_bytes,
                            workers=workers,
                            mapping_file=mapping_file,
                            settings=settings,
                            subscriptions=subscriptions,
                            skip=pipeline.progress.is_finished,
                        )
                    ) as routed,
                ):
                    tally = pipeline.run_routed(routed)
            else:
                with meter:
                    tally = pipeline.run(read_ndjson(lines, max_bytes=settings.max_event_bytes))
            if checkpoint is not None and options.state is not None:
                checkpoint.complete = True
                _save(
                    checkpoint,
                    options.state,
                    pipeline,
                    rejected=rejected,
                    retry=retry,
                    prefix=prefix,
                )
        finally:
            try:
                rejected.close()
            finally:
                retry.close()
    except OutputError as exc:
        if pipeline is None:
            raise
        counts = pipeline.tally
        resume = "; rerun with the same --state to resume" if checkpoint is not None else ""
        raise OutputError(
            f"{exc}; stopped after {counts.received} events ({counts.delivered} delivered, "
            f"{counts.rejected} rejected, {counts.deferred} deferred){resume}"
        ) from exc
    return tally, resuming


def _save(
    checkpoint: Checkpoint,
    directory: Path,
    pipeline: Pipeline,
    *,
    rejected: OutputFile,
    retry: OutputFile,
    prefix: PrefixReader | None,
) -> None:
    checkpoint.tally = pipeline.tally.to_json()
    checkpoint.rejected_length = rejected.durable_length()
    checkpoint.retry_length = retry.durable_length()
    if prefix is not None:
        checkpoint.stdin_prefix = prefix.read_so_far()
    checkpoint.save(directory)


def _saver(
    checkpoint: Checkpoint | None,
    directory: Path | None,
    rejected: OutputFile,
    retry: OutputFile,
    prefix: PrefixReader | None,
) -> Callable[[Pipeline], None] | None:
    if checkpoint is None or directory is None:
        return None
    return lambda pipeline: _save(
        checkpoint, directory, pipeline, rejected=rejected, retry=retry, prefix=prefix
    )


def _unmapped_warnings(subscriptions: Sequence[Subscription], source: str) -> list[str]:
    """Fields mapped from the event that were empty in every event a subscription took."""
    warnings = []
    for subscription in subscriptions:
        if not subscription.routed:
            continue
        seen = subscription.seen
        for name in subscription.mapped_from_event:
            if name not in seen:
                warnings.append(
                    f"{source}: subscription {subscription.name!r}: field {name} was empty in "
                    f"all {subscription.routed} events it took; check its mapping"
                )
    return warnings
