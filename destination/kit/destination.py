"""What a destination is to the runner: the seams a new destination plugs into.

A ``Destination`` is registered under the name mapping files give in ``"destination"``
(see ``kit.registry``). The runner asks it to check the destination's part of a mapping
file, reads its settings declarations, and opens a ``Session`` for one run: the bound
subscriptions, what the run's summary gains, and a ``WorkerRecipe`` from which a worker
process rebuilds the same subscriptions without any secret. Nothing here knows TikTok.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from destination.backends import Backend
from destination.kit.action import ActionSpec, Subscription
from destination.kit.settings import Setting

__all__ = [
    "ActionSpec",
    "Destination",
    "MappingFile",
    "MirroredSession",
    "Session",
    "WorkerRecipe",
]


@dataclass(frozen=True)
class MappingFile:
    """A mapping file, checked against its destination's schema.

    ``options`` are the destination's own top-level keys (TikTok's ``mode``);
    ``warehouse`` is the file's ``source`` object, when its events are a query's rows."""

    source: str
    destination: str
    settings: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    options: dict[str, Any]
    warehouse: dict[str, Any] | None = None  # the "source" object: rows from a query


class WorkerRecipe(Protocol):
    """A picklable description of a run's subscriptions, without secrets: a worker
    process calls ``subscriptions()`` once and routes events through them."""

    def subscriptions(self) -> Sequence[Subscription]: ...


class Session(Protocol):
    """One run of a destination: its subscriptions, bound to a client for the run."""

    @property
    def subscriptions(self) -> Sequence[Subscription]: ...

    def files_written(self) -> Mapping[str, Path]:
        """Files the run writes besides the runner's (named for messages): no output
        of the run may be one of them."""
        ...

    def worker_recipe(self) -> WorkerRecipe: ...

    def summary(self) -> dict[str, Any]:
        """What the run's summary gains (requests made, objects created, ...)."""
        ...

    def stop(self) -> tuple[str, str] | None:
        """After the run: a ``(reason, message)`` to stop with although every event was
        answered (TikTok refused every request alike), else None."""
        ...


@runtime_checkable
class MirroredSession(Protocol):
    """A session that can mirror a warehouse query (``destination.warehouse``): the
    snapshot of what the destination holds belongs to its ``mirror_target`` and records,
    for each row it accepted, ``replay_fields``: payload fields that reach the same
    person again (for TikTok, the hashes it accepted), which "Row Removed" events carry.
    """

    def mirror_target(self) -> str:
        """The one place every change of the run goes (TikTok: advertiser and audience);
        ``ConfigurationError`` if the run has no single one."""
        ...

    def identity_tag(self) -> str:
        """Changes when a setting changes what is sent for the same row (hash options):
        rows recorded under another tag are sent again."""
        ...

    def replay_fields(self, subscription: str, item: Any) -> dict[str, Any] | None:
        """What ``subscription`` sent as ``item``, as fields of its payload (None: not a
        change the snapshot records)."""
        ...


class Destination(Protocol):
    """A destination the ``sync`` command can send to."""

    @property
    def name(self) -> str:
        """The mapping files' ``"destination"``."""
        ...

    @property
    def settings(self) -> Sequence[Setting]:
        """The settings it declares (the runner adds its own)."""
        ...

    def document_schema(self, settings: Sequence[Setting]) -> Mapping[str, Any]:
        """The JSON Schema its mapping files are checked against; ``settings`` are the
        run's declarations (the runner's and its own) for the ``settings`` object."""
        ...

    def catalogue(self) -> Mapping[str, ActionSpec]:
        """Its actions by key (for ``schema`` and templates)."""
        ...

    def template(self, variant: str | None) -> dict[str, Any]:
        """A complete mapping file (``variant``: a mode, where the destination has them;
        ``"warehouse"``: a file syncing a query's rows, whose subscriptions are the
        default of a file with a ``source`` and none of its own); ``ValueError`` for a
        variant it does not have."""
        ...

    def open(
        self,
        mapping: MappingFile,
        values: Mapping[str, Any],
        *,
        environ: Mapping[str, str],
        dry_run: bool,
        backend: Backend | None,
    ) -> Session:
        """Bind the mapping file's subscriptions for one run. ``values`` are the run's
        resolved settings (its own among them: the runner's it may ignore); ``environ``
        holds its secrets; ``backend`` replaces the network (tests, the fake server
        in-process); ``dry_run`` sends nothing."""
        ...
