"""Settings, resolved once into a frozen object: flags over environment over mapping file.

Every problem found is reported together in one ``ConfigurationError``. Secrets are held
in ``Secret``, whose ``repr`` and ``str`` never show the value.

The ranges are declared once, in the settings part of the mapping-file JSON Schema: a
mapping file is checked against it when loaded, and the merged values (environment
variables and flags included) are checked against the same declarations here, so
``TIKTOK_QPS=-1`` is refused exactly as ``"qps": -1`` in a file is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal

from jsonschema import Draft202012Validator

from destination.backends import check_base_url
from destination.errors import ConfigurationError
from destination.resources import load_schema

__all__ = [
    "DEFAULT_BASE_URL",
    "ENVIRONMENT",
    "Secret",
    "Settings",
    "default_audience_state",
    "resolve_settings",
]

DEFAULT_BASE_URL = "https://business-api.tiktok.com"

# setting name -> environment variable that overrides the mapping file's value
ENVIRONMENT: Mapping[str, str] = {
    "base_url": "TIKTOK_API_BASE_URL",
    "advertiser_id": "TIKTOK_ADVERTISER_ID",
    "audience_id": "TIKTOK_AUDIENCE_ID",
    "batch_size": "TIKTOK_BATCH_SIZE",
    "default_phone_region": "TIKTOK_DEFAULT_PHONE_REGION",
    "audience_state": "TIKTOK_AUDIENCE_STATE",
    "qps": "TIKTOK_QPS",
    "concurrency": "TIKTOK_CONCURRENCY",
    "workers": "TIKTOK_WORKERS",
}
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


def default_audience_state(environ: Mapping[str, str]) -> Path:
    """Where native audience ids are remembered: ``$XDG_STATE_HOME/tiktok-audiences``."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tiktok-audiences" / "audiences.json"


@dataclass(frozen=True)
class Settings:
    """Everything a sync needs to know besides the mapping itself."""

    base_url: str = DEFAULT_BASE_URL
    advertiser_id: str | None = None
    audience_id: str | None = None
    batch_size: int = 1000
    default_phone_region: str | None = None
    phone_format: Literal["e164", "e164_no_plus"] = "e164"
    email_remove_plus_suffix: bool = False
    email_remove_dots: bool = False
    qps: float = 10.0
    advertiser_qps: float | None = None  # None: the same as qps
    concurrency: int = 4
    # processes for parsing and hashing; 0: all in the main process; "auto": see auto_workers
    workers: int | Literal["auto"] = "auto"
    max_event_bytes: int = 1 << 20
    max_attempts: int = 5
    retry_initial_wait: float = 1.0
    retry_max_seconds: float = 120.0
    timeout_seconds: float = 30.0
    audience_state: Path = field(default_factory=lambda: default_audience_state(os.environ))
    access_token: Secret | None = None


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}


def _convert(name: str, raw: str) -> Any:
    """The environment's text as the setting's type; ``ValueError`` if it is no number."""
    kind = str(_FIELD_TYPES[name])
    if name == "workers" and raw == "auto":
        return raw
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        number = float(raw)
        if not math.isfinite(number):  # float() reads "nan" and "inf"
            raise ValueError(raw)
        return number
    if kind == "Path":
        return Path(raw)
    return raw


def resolve_settings(
    file_settings: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    need_token: bool,
) -> Settings:
    """Merge the three sources and check the result; all problems in one error.

    ``file_settings`` was already checked against the mapping-file schema; environment
    values and flags are checked here.
    """
    problems: list[str] = []
    values: dict[str, Any] = dict(file_settings)
    for name, variable in ENVIRONMENT.items():
        raw = environ.get(variable, "").strip()
        if raw:
            try:
                values[name] = _convert(name, raw)
            except ValueError:
                problems.append(f"{variable}={raw!r} is not a number")
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["audience_state"] = (
        Path(values["audience_state"]).expanduser()
        if "audience_state" in values
        else default_audience_state(environ)
    )

    token = environ.get(TOKEN_VARIABLE, "").strip()
    if token and (not token.isascii() or not token.isprintable() or " " in token):
        # never quoted: a token with a line break would end up in an HTTP header
        problems.append(
            f"{TOKEN_VARIABLE} holds whitespace, a control character or non-ASCII text, "
            "which no TikTok token does: set it again (without quotes or line breaks)"
        )
    elif token:
        values["access_token"] = Secret(token)
    elif need_token:
        problems.append(
            "no access token: run `tiktok-audiences auth login --app-id <your app id>` once, "
            f"or set {TOKEN_VARIABLE} to a TikTok Marketing API access token for the "
            "advertiser (or use --dry-run to check the input without sending)"
        )

    problems += _out_of_range(values, environ=environ, overrides=overrides)
    region = values.get("default_phone_region")
    if isinstance(region, str):
        values["default_phone_region"] = region.upper()
    try:
        values["base_url"] = check_base_url(str(values.get("base_url", DEFAULT_BASE_URL)))
    except ConfigurationError as exc:
        problems.append(str(exc))

    if problems:
        raise ConfigurationError("invalid settings: " + "; ".join(problems))
    return Settings(**values)


@cache
def _declarations() -> tuple[Draft202012Validator, Mapping[str, Any]]:
    """The settings' declarations (the mapping-file schema's ``$defs/settings``)."""
    schema = load_schema("mapping-file.schema.json")
    declared = {"$defs": schema["$defs"], "$ref": "#/$defs/settings"}
    return Draft202012Validator(declared), schema["$defs"]["settings"]["properties"]


def _out_of_range(
    values: Mapping[str, Any], *, environ: Mapping[str, str], overrides: Mapping[str, Any]
) -> list[str]:
    """Each setting whose merged value breaks its declaration, once, with where it came
    from (a flag or an environment variable: a file's values were checked on loading)."""
    validator, properties = _declarations()
    document = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    problems = []
    wrong = {str(e.path[0]) for e in validator.iter_errors(document) if e.path}
    wrong.discard("base_url")  # check_base_url judges it, with the parser that connects
    # NaN compares false with every bound, so no range refuses it
    wrong.update(k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v))
    for name in sorted(wrong):
        value = values[name]
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN: say it plainly
        source = ""
        if overrides.get(name) is not None:
            source = f" (from --{name.replace('_', '-')})"
        elif name in ENVIRONMENT and environ.get(ENVIRONMENT[name], "").strip():
            source = f" (from {ENVIRONMENT[name]})"
        problems.append(f"{name} must be {_expected(properties[name])}, got {value!r}{source}")
    return problems


def _expected(declaration: Mapping[str, Any]) -> str:
    """A setting's declaration in words: "a whole number from 1 to 10000"."""
    for combined in ("anyOf", "oneOf"):
        if combined in declaration:
            return " or ".join(_expected(d) for d in declaration[combined])
    if "const" in declaration:
        return _json_text(declaration["const"])
    if "enum" in declaration:
        return "one of " + ", ".join(_json_text(v) for v in declaration["enum"])
    kind = declaration.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "integer" in kinds or "number" in kinds:
        words = "a whole number" if "integer" in kinds else "a number"
        low = declaration.get("minimum", declaration.get("exclusiveMinimum"))
        high = declaration.get("maximum")
        if "exclusiveMinimum" in declaration:
            return f"{words} above {low} and at most {high}"
        return f"{words} from {low} to {high}"
    if "pattern" in declaration:
        return f"text matching {declaration['pattern']}"
    if "boolean" in kinds:
        return "true or false"
    return "text" if "string" in kinds else "valid"


def _json_text(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


AUTO_WORKERS_MIN_BYTES = 64 << 20


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
