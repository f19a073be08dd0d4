"""The local memory of which TikTok audience belongs to which (advertiser, key).

TikTok lets two audiences share a name, so creating must be idempotent on our side: the
registry creates an audience at most once per (API base URL, advertiser, key), even
across runs and when two runs race. An exclusive ``flock`` on a lock file beside the
state file covers the whole read / create / write, and the state file is replaced
atomically, so a crash never leaves it half written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from destination.errors import ConfigurationError, PermanentError
from destination.files import replace_file

__all__ = ["AudienceRegistry", "ResolvedAudience"]

DRY_RUN_PREFIX = "dry-run:"


@dataclass(frozen=True)
class ResolvedAudience:
    advertiser_id: str
    key: str
    name: str
    audience_id: str
    created: bool  # created by this run


class AudienceRegistry:
    """Finds or creates audiences. With ``create=None`` (a dry run) nothing is created:
    unknown keys get a ``dry-run:`` placeholder id."""

    def __init__(
        self,
        path: Path,
        *,
        namespace: str,
        create: Callable[[str, str], str] | None,
    ) -> None:
        self._path = path
        self._namespace = namespace
        self._create = create
        self._known: dict[tuple[str, str], str] = {}
        self._failed: dict[tuple[str, str], PermanentError] = {}
        self.resolved: list[ResolvedAudience] = []

    def resolve(self, advertiser_id: str, key: str, name: str) -> str:
        """The audience id for ``key`` under ``advertiser_id``, created if there is none."""
        known = self._known.get((advertiser_id, key))
        if known is not None:
            return known
        if (advertiser_id, key) in self._failed:
            raise self._failed[(advertiser_id, key)]
        if self._create is None:  # dry run: look, never create or write
            existing = self._scope(self._read(), advertiser_id).get(key)
            audience_id = self._id_of(existing) or DRY_RUN_PREFIX + key
            created = False
        else:
            audience_id, created = self._find_or_create(advertiser_id, key, name, self._create)
        self._known[(advertiser_id, key)] = audience_id
        self.resolved.append(ResolvedAudience(advertiser_id, key, name, audience_id, created))
        return audience_id

    def _find_or_create(
        self, advertiser_id: str, key: str, name: str, create: Callable[[str, str], str]
    ) -> tuple[str, bool]:
        with self._locked():
            entries = self._read()
            scope = self._scope(entries, advertiser_id)
            known = self._id_of(scope.get(key))
            if known:
                return known, False
            try:
                audience_id = create(advertiser_id, name)
            except PermanentError as exc:
                self._failed[(advertiser_id, key)] = exc
                raise
            scope[key] = {"audience_id": audience_id, "name": name, "created_at": int(time.time())}
            self._write(entries)
            return audience_id, True

    def _scope(self, entries: dict[str, Any], advertiser_id: str) -> dict[str, Any]:
        """The entries of one advertiser under this namespace (made if missing)."""
        namespace = entries.setdefault(self._namespace, {})
        scope = namespace.setdefault(advertiser_id, {}) if isinstance(namespace, dict) else None
        if not isinstance(scope, dict):
            raise ConfigurationError(
                f"the audience state file {self._path} is not in the expected shape "
                "(audiences -> base URL -> advertiser id -> key -> entry); fix or move it"
            )
        return scope

    @staticmethod
    def _id_of(entry: object) -> str | None:
        if isinstance(entry, dict) and entry.get("audience_id"):
            return str(entry["audience_id"])
        return None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self._path.with_name(self._path.name + ".lock"), "a")  # noqa: SIM115
        except OSError as exc:
            raise ConfigurationError(
                f"cannot use the audience state file {self._path}: {exc.strerror}"
            ) from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(
                f"the audience state file {self._path} is not valid JSON ({exc.msg} at line "
                f"{exc.lineno}); fix or move it: it maps audience keys to TikTok audience ids"
            ) from exc
        audiences = document.get("audiences") if isinstance(document, dict) else None
        if not isinstance(audiences, dict):
            raise ConfigurationError(
                f"the audience state file {self._path} is not in the expected shape "
                '({"version": 1, "audiences": {...}}); fix or move it'
            )
        return audiences

    def _write(self, entries: dict[str, Any]) -> None:
        document = {"version": 1, "audiences": entries}
        replace_file(self._path, json.dumps(document, indent=2, sort_keys=True) + "\n")
