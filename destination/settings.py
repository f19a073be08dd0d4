"""Settings, resolved once into a frozen object: flags over environment over mapping file.

The settings are declared once, the runner's in ``runner/settings.py`` and TikTok's in
``tiktok/settings.py`` (``DECLARED``: both, the runner's first); the resolver, the
mapping-file schema's settings part, the README's settings table and the error messages
all come from those declarations (``kit/settings.py``). ``Settings`` is the typed view
every module reads; its defaults are the declared ones. Every problem found is reported
together in one ``ConfigurationError``. Secrets are held in ``Secret``, whose ``repr`` and
``str`` never show the value; the access token is one, and no setting (environment only).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from destination.kit.settings import resolve
from destination.runner.settings import AUTO_WORKERS_MIN_BYTES, with_runner_settings
from destination.tiktok.settings import (
    DEFAULT_BASE_URL,
    TIKTOK_SETTINGS,
    default_audience_state,
)

__all__ = [
    "AUTO_WORKERS_MIN_BYTES",
    "DECLARED",
    "DEFAULT_BASE_URL",
    "ENVIRONMENT",
    "TOKEN_VARIABLE",
    "Secret",
    "Settings",
    "auto_workers",
    "default_audience_state",
    "resolve_settings",
]

DECLARED = with_runner_settings(TIKTOK_SETTINGS)
_BY_NAME = {s.name: s for s in DECLARED}

# setting name -> environment variable that overrides the mapping file's value
ENVIRONMENT: Mapping[str, str] = {s.name: s.env for s in DECLARED if s.env is not None}
TOKEN_VARIABLE = "TIKTOK_ACCESS_TOKEN"  # noqa: S105 (a variable name)


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _default(name: str) -> Any:
    """The ``Settings`` field default of a declared setting."""
    return _BY_NAME[name].default


def _computed(name: str) -> Callable[[], Any]:
    """The ``Settings`` field default factory of a setting whose default is computed."""
    compute = _BY_NAME[name].default_from
    if compute is None:
        raise ValueError(f"{name} has a fixed default")
    return lambda: compute(os.environ)


@dataclass(frozen=True)
class Settings:
    """Everything a sync needs to know besides the mapping itself: one field per declared
    setting (the runner's, then TikTok's), and the access token."""

    batch_size: int = _default("batch_size")
    concurrency: int = _default("concurrency")
    # processes for parsing and hashing; 0: all in the main process; "auto": see auto_workers
    workers: int | Literal["auto"] = _default("workers")
    max_event_bytes: int = _default("max_event_bytes")
    base_url: str = _default("base_url")
    advertiser_id: str | None = _default("advertiser_id")
    audience_id: str | None = _default("audience_id")
    default_phone_region: str | None = _default("default_phone_region")
    phone_format: Literal["e164", "e164_no_plus"] = _default("phone_format")
    email_remove_plus_suffix: bool = _default("email_remove_plus_suffix")
    email_remove_dots: bool = _default("email_remove_dots")
    qps: float = _default("qps")
    advertiser_qps: float | None = _default("advertiser_qps")  # None: the same as qps
    max_attempts: int = _default("max_attempts")
    retry_initial_wait: float = _default("retry_initial_wait")
    retry_max_seconds: float = _default("retry_max_seconds")
    timeout_seconds: float = _default("timeout_seconds")
    audience_state: Path = field(default_factory=_computed("audience_state"))
    access_token: Secret | None = None


def resolve_settings(
    file_settings: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    need_token: bool,
) -> Settings:
    """Merge the three sources and check the result; all problems in one error.

    ``file_settings`` were checked against the mapping-file schema on loading; every
    value is held to its declaration here again, whatever its source, so ``TIKTOK_QPS=-1``
    or ``--concurrency 0`` is refused exactly as ``"qps": -1`` in a file is.
    """
    problems: list[str] = []
    access_token = None
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if token and (not token.isascii() or not token.isprintable() or " " in token):
        # never quoted: a token with a line break would end up in an HTTP header
        problems.append(
            f"{TOKEN_VARIABLE} holds whitespace, a control character or non-ASCII text, "
            "which no TikTok token does: set it again (without quotes or line breaks)"
        )
    elif token:
        access_token = Secret(token)
    elif need_token:
        problems.append(
            "no access token: run `tiktok-audiences auth login --app-id <your app id>` once, "
            f"or set {TOKEN_VARIABLE} to a TikTok Marketing API access token for the "
            "advertiser (or use --dry-run to check the input without sending)"
        )
    values = resolve(DECLARED, file_settings, environ=environ, flags=overrides, problems=problems)
    return Settings(**values, access_token=access_token)


def auto_workers(settings: Settings, events: str) -> int:
    """The worker processes a run uses: the setting, or for ``"auto"`` one worker when the
    events file holds 64 MiB or more (~80k events) and the machine has 2 CPUs or more.

    Starting a worker costs ~0.3 s and one worker takes a run from ~19k to ~25k events/s
    on 2 cores (``benchmarks/RESULTS.md``): it pays from tens of thousands of events on.
    Standard input, whose size is unknown, gets none.
    """
    if settings.workers != "auto":
        return settings.workers
    if events == "-" or (os.cpu_count() or 1) < 2:
        return 0
    try:
        size = os.stat(events).st_size
    except OSError:
        return 0
    return 1 if size >= AUTO_WORKERS_MIN_BYTES else 0
