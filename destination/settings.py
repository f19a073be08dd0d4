"""A whole TikTok run's settings in one object: the runner's and TikTok's, composed.

The settings are declared once, the runner's in ``runner/settings.py`` and TikTok's in
``tiktok/settings.py`` (``DECLARED``: both, the runner's first); the resolver, the
mapping-file schema's settings part, the README's settings table and the error messages
all come from those declarations (``kit/settings.py``). A run resolves them in the
runner and hands each side its part; this module composes the two for scripts and tests
that want one object (``resolve_settings``), as the CLI composes the commands. Every
problem found is reported together in one ``ConfigurationError``; the access token is a
``Secret`` from the environment only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from destination.kit.settings import Secret, resolve
from destination.runner.settings import (
    AUTO_WORKERS_MIN_BYTES,
    RUNNER_SETTINGS,
    with_runner_settings,
)
from destination.tiktok.settings import (
    DEFAULT_BASE_URL,
    TIKTOK_SETTINGS,
    TOKEN_VARIABLE,
    access_token,
    default_audience_state,
)
from destination.tiktok.settings import Settings as TikTokSettings

__all__ = [
    "AUTO_WORKERS_MIN_BYTES",
    "DECLARED",
    "DEFAULT_BASE_URL",
    "ENVIRONMENT",
    "TOKEN_VARIABLE",
    "Secret",
    "Settings",
    "default_audience_state",
    "resolve_settings",
]

DECLARED = with_runner_settings(TIKTOK_SETTINGS)
_RUNNER = {s.name: s.default for s in RUNNER_SETTINGS}

# setting name -> environment variable that overrides the mapping file's value
ENVIRONMENT: Mapping[str, str] = {s.name: s.env for s in DECLARED if s.env is not None}


@dataclass(frozen=True)
class Settings(TikTokSettings):
    """TikTok's settings and the runner's knobs, as a TikTok run resolves them."""

    batch_size: int = _RUNNER["batch_size"]
    concurrency: int = _RUNNER["concurrency"]
    workers: int | Literal["auto"] = _RUNNER["workers"]
    route: str = _RUNNER["route"]
    max_event_bytes: int = _RUNNER["max_event_bytes"]


def resolve_settings(
    file_settings: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    need_token: bool,
) -> Settings:
    """Merge the three sources and check the result; all problems in one error.

    Every value is held to its declaration, whatever its source, so ``TIKTOK_QPS=-1``
    or ``--concurrency 0`` is refused exactly as ``"qps": -1`` in a file is.
    """
    token, problems = access_token(environ, needed=need_token)
    values = resolve(DECLARED, file_settings, environ=environ, flags=overrides, problems=problems)
    return Settings(**values, access_token=token)
