"""TikTok's settings: what its API client, identifiers and audiences need.

The base URL, rate limits, retries and timeout belong to the client (``TikTokApi`` and
its backend), the phone and email options to the identifier normalizers, the advertiser,
audience and audience state file to TikTok's audiences. The runner's own settings
(batch size, concurrency, workers, event size) are declared in ``runner/settings.py``.
The access token is not a setting: it comes from the environment or the token store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from destination.backends import check_base_url
from destination.kit.settings import Secret, Setting

__all__ = [
    "ADVERTISER_VARIABLE",
    "BASE_URL_VARIABLE",
    "DEFAULT_BASE_URL",
    "NUMERIC_ID",
    "TIKTOK_SETTINGS",
    "TOKEN_VARIABLE",
    "Settings",
    "access_token",
    "default_audience_state",
]

TOKEN_VARIABLE = "TIKTOK_ACCESS_TOKEN"  # noqa: S105 (a variable name)
BASE_URL_VARIABLE = "TIKTOK_API_BASE_URL"
ADVERTISER_VARIABLE = "TIKTOK_ADVERTISER_ID"

DEFAULT_BASE_URL = "https://business-api.tiktok.com"
NUMERIC_ID = "^[0-9]{1,32}$"  # TikTok's advertiser and audience ids


def default_audience_state(environ: Mapping[str, str]) -> Path:
    """Where native audience ids are remembered: ``$XDG_STATE_HOME/tiktok-audiences``."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tiktok-audiences" / "audiences.json"


def _upper_case(region: Any) -> Any:
    """Region codes are upper case (``phonenumbers`` reads only those); null stays null."""
    return region.upper() if isinstance(region, str) else region


TIKTOK_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "base_url",
        "string",
        "API root: scheme, host and optional port only (a trailing `/` is dropped); "
        "`/open_api/v1.3/...` is added. Sandbox: `https://sandbox-ads.tiktok.com`. Plain "
        "`http` only to loopback (127.0.0.0/8, ::1, localhost). Refused before any "
        "request: a user name or password, a path, a query, a fragment, a backslash, "
        "whitespace, control or non-ASCII characters (write international names in their "
        "`xn--` form), odd host forms, a port outside 1 to 65535; messages show user info "
        "as `***`.",
        default=DEFAULT_BASE_URL,
        env=BASE_URL_VARIABLE,
        flag="--base-url",
        pattern="^https?://",
        # parsed as requests connects (urllib3), rebuilt, and never quoted with a password
        check=check_base_url,
    ),
    Setting(
        "advertiser_id",
        "string",
        "Advertiser when the event names none (legacy: the chosen one).",
        env=ADVERTISER_VARIABLE,
        pattern=NUMERIC_ID,
    ),
    Setting(
        "audience_id",
        "string",
        "Legacy: the audience Add Users and Remove Users change.",
        env="TIKTOK_AUDIENCE_ID",
        pattern=NUMERIC_ID,
    ),
    Setting(
        "default_phone_region",
        "string",
        "Region (ISO 3166 alpha-2) for phone numbers without a country code; without it "
        "such numbers are invalid.",
        env="TIKTOK_DEFAULT_PHONE_REGION",
        pattern="^[A-Za-z]{2}$",
        nullable=True,
        convert=_upper_case,
    ),
    Setting(
        "phone_format",
        "string",
        "`e164` hashes `+14155550100` (TikTok's documented form); `e164_no_plus` hashes "
        "`14155550100`.",
        default="e164",
        choices=("e164", "e164_no_plus"),
    ),
    Setting(
        "email_remove_plus_suffix",
        "boolean",
        "Hash `a+news@x.com` as `a@x.com`.",
        default=False,
    ),
    Setting(
        "email_remove_dots",
        "boolean",
        "Remove dots from the local part before hashing.",
        default=False,
    ),
    Setting(
        "qps",
        "number",
        "Most requests per second for the app (your TikTok app tier: 10, 20, 30 or 50); "
        "0: no limit.",
        default=10.0,
        env="TIKTOK_QPS",
        minimum=0.1,
        maximum=1000,
        also=(0,),
    ),
    Setting(
        "advertiser_qps",
        "number",
        "Most requests per second for one advertiser; 0: no limit.",
        default_text="`qps`",
        minimum=0.1,
        maximum=1000,
        also=(0,),
    ),
    Setting(
        "max_attempts",
        "integer",
        "Tries per request for retryable failures.",
        default=5,
        minimum=1,
        maximum=20,
    ),
    Setting(
        "retry_initial_wait",
        "number",
        "First backoff in seconds, doubled each retry, with jitter (at most 30 s a wait).",
        default=1.0,
        minimum=0,
        maximum=60,
    ),
    Setting(
        "retry_max_seconds",
        "number",
        "Most time spent retrying one request, in seconds.",
        default=120.0,
        minimum=0,
        maximum=3600,
    ),
    Setting(
        "timeout_seconds",
        "number",
        "HTTP timeout per request, in seconds.",
        default=30.0,
        above=0,
        maximum=600,
    ),
    Setting(
        "audience_state",
        "path",
        "Where created audience ids are remembered (per base URL and advertiser).",
        default_from=default_audience_state,
        default_text="`$XDG_STATE_HOME/tiktok-audiences/audiences.json`",
        env="TIKTOK_AUDIENCE_STATE",
        flag="--audience-state",
    ),
)


_BY_NAME = {s.name: s for s in TIKTOK_SETTINGS}


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
    """What TikTok's side of a run reads: one field per setting TikTok declares, and the
    access token. Built from the values the runner resolved (``from_values``)."""

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

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, token: Secret | None) -> Settings:
        """TikTok's part of a run's resolved values (others, the runner's, are left)."""
        return cls(**{name: values[name] for name in _BY_NAME}, access_token=token)


def access_token(environ: Mapping[str, str], *, needed: bool) -> tuple[Secret | None, list[str]]:
    """``TIKTOK_ACCESS_TOKEN``, and what is wrong with it (missing when ``needed``)."""
    token = environ.get(TOKEN_VARIABLE, "").strip()
    if token and (not token.isascii() or not token.isprintable() or " " in token):
        # never quoted: a token with a line break would end up in an HTTP header
        return None, [
            f"{TOKEN_VARIABLE} holds whitespace, a control character or non-ASCII text, "
            "which no TikTok token does: set it again (without quotes or line breaks)"
        ]
    if token:
        return Secret(token), []
    if needed:
        return None, [
            "no access token: run `tiktok-audiences auth login --app-id <your app id>` once, "
            f"or set {TOKEN_VARIABLE} to a TikTok Marketing API access token for the "
            "advertiser (or use --dry-run to check the input without sending)"
        ]
    return None, []
