"""The token store: one private JSON file, one entry per app id, replaced atomically.

The file lives at ``$TIKTOK_TOKEN_STORE``, else
``$XDG_CONFIG_HOME/tiktok-audiences/tokens.json`` (``~/.config/...`` by default)::

    {"version": 1,
     "apps": {"<app id>": {"access_token": "...", "refresh_token": null,
                           "advertiser_ids": ["..."], "scopes": [30, 31],
                           "created_at": "2026-01-31T12:00:00Z",
                           "base_url": "https://business-api.tiktok.com"}}}

It is created with mode 0600 in a 0700 folder (an existing file with a looser mode is
made private when read or written). A change is written to a temporary file in the same
folder, synced, and moved over the old file with ``os.replace``, under an exclusive lock,
so readers see the old or the new file, never half of one, and two writers do not undo
each other. In memory the tokens are ``Secret`` values; nothing here logs or raises
with a token in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from destination.errors import ConfigurationError
from destination.kit.settings import Secret

__all__ = [
    "APP_ID_VARIABLE",
    "STORE_VARIABLE",
    "TokenEntry",
    "TokenStore",
    "default_token_store",
    "utc_now",
]

STORE_VARIABLE = "TIKTOK_TOKEN_STORE"
APP_ID_VARIABLE = "TIKTOK_APP_ID"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


def default_token_store(environ: Mapping[str, str]) -> Path:
    """``$TIKTOK_TOKEN_STORE``, else ``$XDG_CONFIG_HOME/tiktok-audiences/tokens.json``."""
    explicit = environ.get(STORE_VARIABLE, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = environ.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    return Path(base) / "tiktok-audiences" / "tokens.json"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class TokenEntry:
    """What one app's authorization left: its token and what the token may touch."""

    app_id: str
    access_token: Secret
    advertiser_ids: tuple[str, ...]
    scopes: tuple[int, ...]
    created_at: str
    base_url: str
    refresh_token: Secret | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token.reveal(),
            "refresh_token": None if self.refresh_token is None else self.refresh_token.reveal(),
            "advertiser_ids": list(self.advertiser_ids),
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "base_url": self.base_url,
        }

    @classmethod
    def from_json(cls, app_id: str, value: Any) -> TokenEntry:
        """Read one entry; ``ValueError`` naming the bad key (never its value)."""
        if not isinstance(value, dict):
            raise ValueError(f"apps/{app_id} is not an object")

        def text(key: str, *, optional: bool = False) -> str | None:
            found = value.get(key)
            if found is None and optional:
                return None
            if not isinstance(found, str) or not found:
                raise ValueError(f"apps/{app_id}/{key} is not a non-empty string")
            return found

        advertisers = value.get("advertiser_ids")
        if not isinstance(advertisers, list) or not all(isinstance(a, str) for a in advertisers):
            raise ValueError(f"apps/{app_id}/advertiser_ids is not a list of strings")
        scopes = value.get("scopes")
        if not isinstance(scopes, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in scopes
        ):
            raise ValueError(f"apps/{app_id}/scopes is not a list of numbers")
        refresh = text("refresh_token", optional=True)
        return cls(
            app_id=app_id,
            access_token=Secret(str(text("access_token"))),
            advertiser_ids=tuple(advertisers),
            scopes=tuple(scopes),
            created_at=str(text("created_at")),
            base_url=str(text("base_url")),
            refresh_token=None if refresh is None else Secret(refresh),
        )


class TokenStore:
    """The token file at ``path``; each method reads it afresh (another process may write)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    # ----------------------------------------------------------------------- reading

    def entries(self) -> dict[str, TokenEntry]:
        """Every stored entry by app id; an absent file is an empty store."""
        return self._read()

    def get(self, app_id: str) -> TokenEntry | None:
        return self._read().get(app_id)

    def select(self, app_id: str | None) -> TokenEntry | None:
        """The entry a run uses: ``app_id`` (``TIKTOK_APP_ID``) if given, else the only one.

        ``None`` when nothing is stored; a ``ConfigurationError`` when ``app_id`` has no
        entry or several apps are stored and none was named.
        """
        entries = self._read()
        if app_id:
            entry = entries.get(app_id)
            if entry is None:
                raise ConfigurationError(
                    f"no token for app {app_id} in {self.path}: run "
                    f"`tiktok-audiences auth login --app-id {app_id}`"
                )
            return entry
        if len(entries) > 1:
            raise ConfigurationError(
                f"{self.path} holds tokens of several apps ({', '.join(sorted(entries))}): "
                f"set {APP_ID_VARIABLE} to the one to use"
            )
        return next(iter(entries.values()), None)

    # ----------------------------------------------------------------------- writing

    def save(self, entry: TokenEntry) -> None:
        """Add or replace the entry of ``entry.app_id``."""
        with self._locked():
            entries = self._read()
            entries[entry.app_id] = entry
            self._write(entries)

    def remove(self, app_id: str) -> bool:
        """Forget ``app_id``'s entry; False if there was none."""
        with self._locked():
            entries = self._read()
            if entries.pop(app_id, None) is None:
                return False
            self._write(entries)
            return True

    # --------------------------------------------------------------------- internals

    def _read(self) -> dict[str, TokenEntry]:
        try:
            with open(self.path, "rb") as handle:
                _make_private(handle.fileno(), self.path)
                raw = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the token store {self.path}: {exc.strerror}"
            ) from exc
        fix = (
            f"; move it away (or delete it) and run `tiktok-audiences auth login` again, "
            f"or point {STORE_VARIABLE} elsewhere"
        )
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
            raise ConfigurationError(
                f"the token store {self.path} is not valid JSON{where}{fix}"
            ) from None
        try:
            if not isinstance(document, dict) or not isinstance(document.get("apps"), dict):
                raise ValueError('it is not an object with an "apps" object')
            if document.get("version") != FORMAT_VERSION:
                raise ValueError(f"version is not {FORMAT_VERSION}")
            return {
                str(app_id): TokenEntry.from_json(str(app_id), value)
                for app_id, value in document["apps"].items()
            }
        except ValueError as exc:
            raise ConfigurationError(
                f"the token store {self.path} is damaged: {exc}{fix}"
            ) from None

    def _write(self, entries: Mapping[str, TokenEntry]) -> None:
        document = {
            "version": FORMAT_VERSION,
            "apps": {app_id: entries[app_id].to_json() for app_id in sorted(entries)},
        }
        data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
        folder = self.path.parent
        try:
            fd, temporary = tempfile.mkstemp(dir=folder, prefix=".tokens-", suffix=".tmp")
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the token store in {folder}: {exc.strerror}"
            ) from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)  # mkstemp's default, made explicit
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ConfigurationError(
                f"cannot write the token store {self.path}: {exc.strerror}"
            ) from exc
        _fsync_folder(folder)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = self.path.with_name(self.path.name + ".lock")
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create the token store in {folder}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _make_private(fd: int, path: Path) -> None:
    """An existing store readable by others is made owner-only (it holds tokens)."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        log.warning("the token store %s had mode %o; making it 0600", path, mode)
        os.fchmod(fd, 0o600)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
