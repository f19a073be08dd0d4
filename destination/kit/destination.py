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
from typing import Any, Protocol

from destination.backends import Backend
from destination.kit.action import Action, Subscription
from destination.kit.settings import Setting

__all__ = ["Destination", "MappingFile", "Session", "WorkerRecipe"]


@dataclass(frozen=True)
class MappingFile:
    """A mapping file, checked against its destination's schema.

    ``options`` are the destination's own top-level keys (TikTok's ``mode``)."""

    source: str
    destination: str
    settings: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    options: dict[str, Any]


class WorkerRecipe(Protocol):
    """A picklable description of a run's subscriptions, without secrets: a worker
    process calls ``subscriptions()`` once and routes events through them."""

    def subscriptions(self) -> Sequence[Subscription]: ...


class Session(Protocol):
    """One run of a destination: its subscriptions, bound to a client for the run."""

    @property
    def subscriptions(self) -> Sequence[Subscription]: ...

    def worker_recipe(self) -> WorkerRecipe: ...

    def summary(self) -> dict[str, Any]:
        """What the run's summary gains (requests made, objects created, ...)."""
        ...

    def stop(self) -> tuple[str, str] | None:
        """After the run: a ``(reason, message)`` to stop with although every event was
        answered (TikTok refused every request alike), else None."""
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

    @property
    def document_schema(self) -> Mapping[str, Any]:
        """The JSON Schema its mapping files are checked against."""
        ...

    def actions(self) -> Mapping[str, Action]:
        """Its actions by key, unbound (for ``schema`` and templates)."""
        ...

    def template(self, variant: str | None) -> dict[str, Any]:
        """A complete mapping file (``variant``: a mode, where the destination has them)."""
        ...

    def open(
        self,
        mapping: MappingFile,
        settings: Mapping[str, Any],
        *,
        environ: Mapping[str, str],
        dry_run: bool,
        backend: Backend | None,
    ) -> Session:
        """Bind the mapping file's subscriptions for one run, with resolved settings."""
        ...
