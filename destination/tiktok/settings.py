"""TikTok's settings: what its API client, identifiers and audiences need.

The base URL, rate limits, retries and timeout belong to the client (``TikTokApi`` and
its backend), the phone and email options to the identifier normalizers, the advertiser,
audience and audience state file to TikTok's audiences. The runner's own settings
(batch size, concurrency, workers, event size) are declared in ``runner/settings.py``.
The access token is not a setting: it comes from the environment or the token store.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from destination.backends import check_base_url
from destination.kit.settings import Setting

__all__ = ["DEFAULT_BASE_URL", "TIKTOK_SETTINGS", "default_audience_state"]

DEFAULT_BASE_URL = "https://business-api.tiktok.com"
_NUMERIC_ID = "^[0-9]{1,32}$"


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
        env="TIKTOK_API_BASE_URL",
        flag="--base-url",
        pattern="^https?://",
        # parsed as requests connects (urllib3), rebuilt, and never quoted with a password
        check=check_base_url,
    ),
    Setting(
        "advertiser_id",
        "string",
        "Advertiser when the event names none (legacy: the chosen one).",
        env="TIKTOK_ADVERTISER_ID",
        pattern=_NUMERIC_ID,
    ),
    Setting(
        "audience_id",
        "string",
        "Legacy: the audience Add Users and Remove Users change.",
        env="TIKTOK_AUDIENCE_ID",
        pattern=_NUMERIC_ID,
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
