"""One sync, composed: a mapping file and an events input (or its source) to a summary.

``run_sync`` reads the mapping file, finds its destination in the registry, opens the
destination's session (settings resolved, credentials checked, subscriptions bound),
checks the output paths against the inputs and each other, then hands the NDJSON
source and the session to ``runner.run.deliver`` and sums up. All of that happens
before the first event is read or the first call is made; the run loop itself knows
neither the destination nor NDJSON. A file with a ``source`` (a warehouse query) is
diffed first (``destination.warehouse``): its changes are the events, and a dry run is
that plan alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from destination.backends import Backend
from destination.errors import ConfigurationError, MappingError
from destination.kit.action import Subscription
from destination.kit.destination import Destination, MappingFile, MirroredSession, Session
from destination.kit.mapping_file import read_mapping_file
from destination.kit.registry import destination_named
from destination.kit.settings import Setting, resolve
from destination.resources import load_schema
from destination.runner.checkpoint import FILE_NAME, locked_state
from destination.runner.meter import Show
from destination.runner.outputs import refuse_clashes
from destination.runner.pipeline import Tally
from destination.runner.run import RunOptions, deliver
from destination.runner.settings import RunnerSettings, with_runner_settings
from destination.runner.source import NdjsonSource, Source
from destination.warehouse.spec import SOURCE_SCHEMA_FILE, SourceSpec, read_spec

if TYPE_CHECKING:  # the warehouse modules are imported by a warehouse run only
    from destination.warehouse.snapshot import Plan

__all__ = ["SyncOptions", "open_mapping", "run_sync", "summarize"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncOptions:
    mapping: Path
    events: str | None  # a path, or "-" for standard input; None for a warehouse source
    rejected: Path | None = None
    retry: Path | None = None  # where events go when the destination stays unavailable
    state: Path | None = None  # checkpoint directory: resume where a killed run stopped
    dry_run: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)  # settings from flags
    progress: Show | None = None  # what shows the run's progress (a bar, log lines)
    progress_interval: float = 1.0  # seconds between two looks at the run
    allow_mass_removal: bool = False  # a warehouse mirror may remove most of the audience


@dataclass(frozen=True)
class OpenedMapping:
    """A mapping file, the destination it names, and the run's settings declarations."""

    mapping: MappingFile
    destination: Destination
    declared: tuple[Setting, ...]


def open_mapping(path: Path) -> OpenedMapping:
    """A mapping file, checked against the schema of the destination it names, with the
    settings the runner and that destination declare."""
    found: list[tuple[Destination, tuple[Setting, ...]]] = []

    def schema_of(name: str, source: str) -> Mapping[str, Any]:
        destination = destination_named(name, source=source)
        found.append((destination, with_runner_settings(destination.settings)))
        return destination.document_schema(found[-1][1])

    def default_subscriptions(name: str) -> list[dict[str, Any]]:
        try:
            subscriptions: list[dict[str, Any]] = destination_named(
                name, source=str(path)
            ).template("warehouse")["subscriptions"]
        except ValueError:
            raise MappingError(
                str(path), "/subscriptions", f"subscriptions: {name} has no default for a source"
            ) from None
        return subscriptions

    mapping = read_mapping_file(
        path,
        schema_of,
        source_schema=load_schema(SOURCE_SCHEMA_FILE),
        default_subscriptions=default_subscriptions,
    )
    return OpenedMapping(mapping, *found[-1])


def run_sync(
    options: SyncOptions,
    *,
    environ: Mapping[str, str],
    backend: Backend | None = None,
    stdin: IO[bytes] | None = None,
) -> dict[str, Any]:
    """Run one sync and return its summary (see the README for the keys)."""
    opened = open_mapping(options.mapping)
    if opened.mapping.warehouse is None and options.events is None:
        raise ConfigurationError(
            f"--events is required: {options.mapping} has no source (a warehouse query)"
        )
    values = resolve(
        opened.declared, opened.mapping.settings, environ=environ, flags=options.overrides
    )
    session = opened.destination.open(
        opened.mapping, values, environ=environ, dry_run=options.dry_run, backend=backend
    )
    if opened.mapping.warehouse is not None:
        return _sync_warehouse(opened, session, values, options)
    assert options.events is not None
    state = None if options.dry_run else options.state  # a dry run keeps no checkpoint
    source = NdjsonSource(options.events, stdin=stdin, digest=state is not None)
    _refuse_clashing_paths(options, source, session)
    ran = deliver(
        source, session, RunnerSettings.from_values(values), _run_options(options, state=state)
    )
    return summarize(ran.tally, session, options, resumed=ran.resumed, route=ran.route)


def _sync_warehouse(
    opened: OpenedMapping, session: Session, values: Mapping[str, Any], options: SyncOptions
) -> dict[str, Any]:
    """A mapping file with a ``source``: the query's changes since the last run."""
    assert opened.mapping.warehouse is not None
    if options.events is not None:
        raise ConfigurationError(
            f"--events: {options.mapping} has a source (a warehouse query): its rows are the "
            "events; leave --events out"
        )
    if options.retry is not None:
        raise ConfigurationError(
            "--retry-file: a warehouse sync sends what TikTok did not take on its next run"
        )
    if not isinstance(session, MirroredSession):
        raise ConfigurationError(
            f"{options.mapping}: destination {opened.destination.name} cannot sync a "
            "warehouse query (it does not record what it holds)"
        )
    from destination.warehouse.source import WarehouseSource  # noqa: PLC0415 (see above)

    spec = read_spec(opened.mapping.warehouse, mapping=str(options.mapping))
    with contextlib.ExitStack() as held:
        if options.state is not None and not options.dry_run:
            held.enter_context(locked_state(options.state))
        source = WarehouseSource(spec, session, state=options.state, dry_run=options.dry_run)
        _refuse_clashing_paths(options, source, session)
        held.callback(source.close)
        plan = source.prepare()
        log.info(
            "%s: %d rows to add, %d to remove, %d changed, %d unchanged",
            spec.shown_url,
            plan.added,
            plan.removed,
            plan.changed,
            plan.unchanged,
        )
        _refuse_mass_removal(spec, plan, allowed=options.allow_mass_removal)
        tally, route = Tally(), None
        if not options.dry_run:  # a dry run is the plan: not one request
            # the snapshot is this source's checkpoint: no runner checkpoint
            knobs = RunnerSettings.from_values(values)
            ran = deliver(source, session, knobs, _run_options(options, state=None))
            tally, route = ran.tally, ran.route
        summary = summarize(tally, session, options, resumed=False, route=route)
        return {**summary, **source.summary()}


def _run_options(options: SyncOptions, *, state: Path | None) -> RunOptions:
    """The run loop's outputs: the options', with the checkpoint directory ``state``."""
    return RunOptions(
        mapping=options.mapping,
        rejected=options.rejected,
        retry=options.retry,
        state=state,
        progress=options.progress,
        progress_interval=options.progress_interval,
    )


def _refuse_mass_removal(spec: SourceSpec, plan: Plan, *, allowed: bool) -> None:
    """A mirror run must not empty an audience because a query broke."""
    if allowed or not plan.held or plan.removed <= spec.max_removal_fraction * plan.held:
        return
    raise ConfigurationError(
        f"{spec.mapping}: this run would remove {plan.removed} of the {plan.held} rows the "
        f"audience holds, more than source.max_removal_fraction ({spec.max_removal_fraction:g});"
        " check the query, or give --allow-mass-removal to remove them"
    )


def _refuse_clashing_paths(options: SyncOptions, source: Source, session: Session) -> None:
    """No output may be an input or another output: opening it would destroy that file."""
    refuse_clashes(
        {"--mapping": options.mapping, **source.paths()},
        {
            "--rejected": options.rejected,
            "--retry-file": options.retry,
            "the checkpoint": None if options.state is None else options.state / FILE_NAME,
            **session.files_written(),
        },
    )


def summarize(
    tally: Tally, session: Session, options: SyncOptions, *, resumed: bool, route: str | None
) -> dict[str, Any]:
    """The run's summary: the runner's counts, then what the destination adds, and the
    route the events took (None: no event was routed, a warehouse dry run)."""
    stopped = tally.stopped
    if stopped is None and (stop := session.stop()) is not None:
        stopped = {"reason": stop[0], "message": stop[1]}
    warnings = _unmapped_warnings(session.subscriptions, str(options.mapping))
    if options.rejected is None and tally.rejected:
        warnings.append(
            f"{tally.rejected} rejected events were only counted: no --rejected file was given"
        )
    return {
        **tally.to_json(),
        **session.summary(),
        "dry_run": options.dry_run,
        "rejected_file": str(options.rejected) if options.rejected else None,
        "retry_file": str(options.retry) if options.retry else None,
        "resumed": resumed,
        "route": route,
        "stopped": stopped,
        "warnings": warnings,
    }


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
