"""The run loop: every line of a source through a session's subscriptions, accounted for.

``deliver`` knows neither TikTok nor NDJSON: it takes a ``Source`` (numbered lines), a
destination's ``Session`` (bound subscriptions, the runner's settings, a recipe for
worker processes) and the run's outputs, and does the rest: the state directory (locked,
the checkpoint loaded and saved after each answered batch), the rejected and retry
files, the pipeline, worker processes and the progress meter. Whatever happens, every
line read is finished as delivered, rejected or deferred; an output that cannot be
written ends the run with ``OutputError`` giving the counts so far.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from destination.errors import ConfigurationError, OutputError
from destination.kit.action import Subscription
from destination.kit.destination import Session
from destination.kit.sql import NotCompiled
from destination.runner.checkpoint import Checkpoint, locked_state
from destination.runner.compiled import CompiledRoute, compile_route
from destination.runner.meter import Show, watching
from destination.runner.outputs import OutputFile
from destination.runner.pipeline import Pipeline, Tally
from destination.runner.settings import AUTO_WORKERS_MIN_BYTES, RunnerSettings
from destination.runner.source import Opened, Source
from destination.runner.workers import routed

__all__ = ["Ran", "RunOptions", "deliver", "route_for", "workers_for"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """The run's outputs and state; ``mapping`` is the file a checkpoint belongs to."""

    mapping: Path
    rejected: Path | None = None
    retry: Path | None = None  # where events go when the destination stays unavailable
    state: Path | None = None  # checkpoint directory: resume where a killed run stopped
    progress: Show | None = None
    progress_interval: float = 1.0


class Ran(NamedTuple):
    tally: Tally
    resumed: bool
    route: str  # "compiled" or "python"


def workers_for(setting: int | str, size: int | None) -> int:
    """The worker processes a run uses: the setting, or for ``"auto"`` one worker when
    the input holds 64 MiB or more (~80k events) and the machine has 2 CPUs or more.

    Starting a worker costs ~0.3 s and pays from tens of thousands of events on
    (``benchmarks/RESULTS.md``); an input of unknown size (standard input) gets none.
    """
    if setting != "auto":
        return int(setting)
    if size is None or (os.cpu_count() or 1) < 2:
        return 0
    return 1 if size >= AUTO_WORKERS_MIN_BYTES else 0


def route_for(setting: str, subscriptions: Sequence[Subscription]) -> CompiledRoute | None:
    """The compiled route for a run whose ``route`` setting is ``setting``, or None for
    the Python route.

    ``"auto"`` takes the faster route, which is the Python route for now: the compiled
    route gives the same results at about 60% of its speed and 1.2x its CPU per event on
    the 1M-event dry run (``benchmarks/RESULTS.md``). ``"compiled"`` refuses a mapping
    file the compiled route does not cover (``ConfigurationError`` naming what).
    """
    if setting != "compiled":
        log.debug("Python route (route %s)", setting)
        return None
    try:
        route = compile_route(subscriptions)
    except NotCompiled as exc:
        raise ConfigurationError(
            f'route compiled: the compiled route does not cover {exc}; use route "auto" or "python"'
        ) from exc
    log.debug("compiled route")
    return route


def deliver(source: Source, session: Session, knobs: RunnerSettings, options: RunOptions) -> Ran:
    """Read, route, send and account for every line of ``source``, with the runner's
    settings ``knobs``."""
    compiled = route_for(knobs.route, session.subscriptions)
    with contextlib.ExitStack() as held:
        checkpoint: Checkpoint | None = None
        if options.state is not None:
            expected = source.fingerprint(options.mapping)
            held.enter_context(locked_state(options.state))
            checkpoint = Checkpoint.load(options.state, expected) or Checkpoint(expected)
        resuming = checkpoint is not None and checkpoint.progress.read_up_to > 0
        if resuming and checkpoint is not None:
            log.info("resuming from line %d (%s)", checkpoint.progress.next_line, options.state)
        opened = held.enter_context(
            source.open(
                resume=(checkpoint.source_state or {}) if resuming and checkpoint else None,
                hold_from_line=checkpoint.progress.next_line if checkpoint else 1,
                where=str(options.state),
            )
        )
        tally = _run(
            source,
            session,
            options,
            knobs=knobs,
            opened=opened,
            checkpoint=checkpoint,
            resuming=resuming,
            compiled=compiled,
        )
        return Ran(tally, resuming, "python" if compiled is None else "compiled")


def _run(
    source: Source,
    session: Session,
    options: RunOptions,
    *,
    knobs: RunnerSettings,
    opened: Opened,
    checkpoint: Checkpoint | None,
    resuming: bool,
    compiled: CompiledRoute | None,
) -> Tally:
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
                session.subscriptions,
                batch_size=knobs.batch_size,
                rejected=rejected,
                retry=retry,
                concurrency=knobs.concurrency,
                tally=Tally.from_json(checkpoint.tally) if resuming and checkpoint else None,
                progress=checkpoint.progress if checkpoint else None,
                on_progress=_saver(checkpoint, options.state, rejected, retry, opened),
                listener=source.listener(),
            )
            workers = 0 if compiled is not None else workers_for(knobs.workers, source.size())
            earlier = pipeline.tally.received  # a resumed run's count: not this run's pace
            meter = watching(
                options.progress,
                stream=opened.raw,
                events=lambda: pipeline.tally.received - earlier,
                interval=options.progress_interval,
            )
            # closed here, whatever happens, so that any workers stop with the run
            lines = (
                routed(
                    opened,
                    max_bytes=knobs.max_event_bytes,
                    workers=workers,
                    recipe=session.worker_recipe(),
                    subscriptions=session.subscriptions,
                    skip=pipeline.progress.is_finished,
                )
                if compiled is None
                else compiled.routed(
                    opened, max_bytes=knobs.max_event_bytes, skip=pipeline.progress.is_finished
                )
            )
            with meter, contextlib.closing(lines):
                tally = pipeline.run(lines)
            if checkpoint is not None and options.state is not None:
                checkpoint.complete = True
                _save(
                    checkpoint,
                    options.state,
                    pipeline,
                    rejected=rejected,
                    retry=retry,
                    opened=opened,
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
    return tally


def _save(
    checkpoint: Checkpoint,
    directory: Path,
    pipeline: Pipeline,
    *,
    rejected: OutputFile,
    retry: OutputFile,
    opened: Opened,
) -> None:
    checkpoint.tally = pipeline.tally.to_json()
    checkpoint.rejected_length = rejected.durable_length()
    checkpoint.retry_length = retry.durable_length()
    checkpoint.source_state = opened.position()
    checkpoint.save(directory)


def _saver(
    checkpoint: Checkpoint | None,
    directory: Path | None,
    rejected: OutputFile,
    retry: OutputFile,
    opened: Opened,
) -> Callable[[Pipeline], None] | None:
    if checkpoint is None or directory is None:
        return None
    return lambda pipeline: _save(
        checkpoint, directory, pipeline, rejected=rejected, retry=retry, opened=opened
    )
