"""``tiktok-audiences audiences list | get | delete``: an advertiser's audiences by hand.

Each function writes its result to ``out`` (the last line, or all of it for ``get``, is
JSON a script can read) and questions to ``err``, and raises the project's errors for
the CLI to turn into one line and an exit code. TikTok refusing a request (no such
audience, another advertiser's, no permission) is a usage error here (exit 2, TikTok's
message), not a run's data problem. Tokens are never printed.

The token is the one a sync would use (``TIKTOK_ACCESS_TOKEN``, else the stored one);
the advertiser is ``--advertiser-id``, else ``TIKTOK_ADVERTISER_ID``, else the stored
token's only advertiser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from destination.backends import check_base_url
from destination.errors import ConfigurationError, MisconfiguredError, PermanentError
from destination.tiktok.api import (
    MAX_IDS_PER_REQUEST,
    RetryPolicy,
    TikTokApi,
    tiktok_backend,
)
from destination.tiktok.auth.provider import stored_entry, token_for_run
from destination.tiktok.auth.store import TokenEntry, TokenStore, default_token_store
from destination.tiktok.dmp.facts import MIN_TARGETABLE
from destination.tiktok.settings import (
    ADVERTISER_VARIABLE,
    BASE_URL_VARIABLE,
    DEFAULT_BASE_URL,
    NUMERIC_ID,
    TOKEN_VARIABLE,
    access_token,
)

__all__ = [
    "Connection",
    "ManageOptions",
    "audiences_delete",
    "audiences_get",
    "audiences_list",
    "connect",
    "print_table",
    "refused",
]

#: A person waits at the other end: fewer, shorter retries than a sync's.
COMMAND_RETRY = RetryPolicy(max_attempts=3, max_seconds=30.0, initial_wait=0.5)
_NUMERIC_ID = re.compile(NUMERIC_ID)
# what `list` shows of each audience: (heading, the key in TikTok's reply)
_COLUMNS = (
    ("ID", "audience_id"),
    ("NAME", "name"),
    ("TYPE", "type"),
    ("SIZE", "cover_num"),
    ("VALID", "is_valid"),
    ("EXPIRING", "is_expiring"),
    ("SHARED", "shared"),
    ("TARGETABLE", "targetable"),  # not TikTok's: valid, and at least 1,000 users
)
_NAME_WIDTH = 40


@dataclass(frozen=True)
class ManageOptions:
    """What the ``audiences`` subcommands share: where to connect, and for whom."""

    environ: Mapping[str, str]
    out: IO[str]
    err: IO[str]
    advertiser_id: str | None = None  # --advertiser-id
    base_url: str | None = None  # --base-url


@dataclass(frozen=True)
class Connection:
    api: TikTokApi
    advertiser_id: str


def connect(options: ManageOptions) -> Connection:
    """The API client with the run's token, and the advertiser; nothing is sent yet."""
    environ = options.environ
    env_token, problems = access_token(environ, needed=False)
    if problems:
        raise ConfigurationError("; ".join(problems))
    store = TokenStore(default_token_store(environ))
    # as for a sync: the environment's token wins, the store is not even read then
    entry = None if env_token is not None else stored_entry(store, environ)
    if env_token is None and entry is None:
        raise ConfigurationError(
            "no access token: run `tiktok-audiences auth login --app-id <your app id>` once, "
            f"or set {TOKEN_VARIABLE} to a TikTok Marketing API access token"
        )
    advertiser_id = _advertiser(options, entry)
    base_url = _base_url(options, entry)
    backend = tiktok_backend(base_url, timeout=30.0)
    tokens = token_for_run(
        env_token=env_token,
        entry=entry,
        store=store,
        backend=backend,
        base_url=base_url,
        environ=environ,
    )
    assert tokens is not None  # a token or a stored entry: checked above
    return Connection(TikTokApi(backend, tokens, retry=COMMAND_RETRY), advertiser_id)


def _base_url(options: ManageOptions, entry: TokenEntry | None) -> str:
    """``--base-url``, else ``TIKTOK_API_BASE_URL``, else where the stored token came
    from, else TikTok's; always through the URL check."""
    chosen = options.base_url or options.environ.get(BASE_URL_VARIABLE, "").strip()
    if not chosen:
        chosen = entry.base_url if entry is not None else DEFAULT_BASE_URL
    return check_base_url(chosen)


def _advertiser(options: ManageOptions, entry: TokenEntry | None) -> str:
    chosen = options.advertiser_id or options.environ.get(ADVERTISER_VARIABLE, "").strip()
    if not chosen and entry is not None and len(entry.advertiser_ids) == 1:
        chosen = entry.advertiser_ids[0]
    if not chosen:
        known = f" (the stored token has {len(entry.advertiser_ids)})" if entry else ""
        raise ConfigurationError(
            f"which advertiser? give --advertiser-id or set {ADVERTISER_VARIABLE}{known}"
        )
    if not _NUMERIC_ID.fullmatch(chosen):
        raise ConfigurationError(f"advertiser id {chosen!r} is not a number")
    return chosen


def _checked_ids(audience_ids: Sequence[str]) -> list[str]:
    """The ids, each once, in the order given; refused before any call if not numbers."""
    wrong = [a for a in audience_ids if not _NUMERIC_ID.fullmatch(a)]
    if wrong:
        raise ConfigurationError(f"not an audience id (digits only): {', '.join(map(repr, wrong))}")
    return list(dict.fromkeys(audience_ids))


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
        yield ids[start : start + MAX_IDS_PER_REQUEST]


def refused(exc: PermanentError | MisconfiguredError) -> ConfigurationError:
    """TikTok refused the request itself: for a command, the user asked for something
    TikTok will not do (exit 2 with TikTok's message)."""
    return ConfigurationError(f"TikTok refused it: {exc}")


# ---------------------------------------------------------------------------- list


def audiences_list(options: ManageOptions) -> None:
    """Every audience of the advertiser (own and shared, all pages): a table, then JSON."""
    connection = connect(options)
    try:
        audiences = connection.api.list_audiences(connection.advertiser_id)
    except (PermanentError, MisconfiguredError) as exc:
        raise refused(exc) from exc
    rows = [[heading for heading, _ in _COLUMNS]]
    for audience in audiences:
        shown = {**audience, "targetable": _targetable(audience)}
        rows.append([_cell(shown.get(key)) for _, key in _COLUMNS])
    print_table(rows, options.out)
    options.out.write(json.dumps({"audiences": audiences}, sort_keys=True) + "\n")


def print_table(rows: Sequence[Sequence[str]], out: IO[str]) -> None:
    """``rows`` (the headings first) as columns two spaces apart, each as wide as its
    widest cell."""
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _targetable(audience: Mapping[str, Any]) -> bool:
    """Whether TikTok lets an ad group target the audience: valid, and at least
    ``MIN_TARGETABLE`` matched users."""
    size = audience.get("cover_num")
    return audience.get("is_valid") is True and isinstance(size, int) and size >= MIN_TARGETABLE


def _cell(value: Any) -> str:
    """One table cell: yes / no for flags, ``-`` when TikTok gave nothing, names cut to
    fit and stripped of control characters (a name is whatever its author typed)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text if len(text) <= _NAME_WIDTH else text[: _NAME_WIDTH - 3] + "..."


# ----------------------------------------------------------------------------- get


def audiences_get(options: ManageOptions, audience_ids: Sequence[str]) -> None:
    """The details TikTok gives of each id, as one JSON document."""
    ids = _checked_ids(audience_ids)
    connection = connect(options)
    found: list[dict[str, Any]] = []
    try:
        for chunk in _chunks(ids):
            found.extend(connection.api.get_audiences(connection.advertiser_id, chunk))
    except (PermanentError, MisconfiguredError) as exc:
        raise refused(exc) from exc
    options.out.write(json.dumps({"audiences": found}, indent=2, sort_keys=True) + "\n")


# -------------------------------------------------------------------------- delete


def audiences_delete(
    options: ManageOptions, audience_ids: Sequence[str], *, yes: bool, stdin: IO[str]
) -> None:
    """Delete the audiences, at most 100 a request, after a yes typed on a terminal (or
    ``--yes``); without a terminal and without ``--yes`` nothing is sent."""
    ids = _checked_ids(audience_ids)
    if not yes and not stdin.isatty():
        raise ConfigurationError(
            "deleting audiences needs a confirmation: pass --yes (there is no terminal to ask on)"
        )
    connection = connect(options)
    api, advertiser_id = connection.api, connection.advertiser_id
    deleted: list[str] = []
    try:
        if not yes and not _confirmed(options, api, advertiser_id, ids, stdin):
            print("nothing deleted", file=options.err)
        else:
            for chunk in _chunks(ids):
                api.delete_audiences(advertiser_id, chunk)
                deleted.extend(chunk)
                for audience_id in chunk:
                    print(f"deleted audience {audience_id}", file=options.out)
    except (PermanentError, MisconfiguredError) as exc:
        raise refused(exc) from exc
    finally:
        if deleted and len(deleted) < len(ids):
            print(f"deleted before the failure: {', '.join(deleted)}", file=options.err)
    options.out.write(json.dumps({"deleted": deleted}) + "\n")


def _confirmed(
    options: ManageOptions, api: TikTokApi, advertiser_id: str, ids: list[str], stdin: IO[str]
) -> bool:
    """Show what would go (looked up, so a wrong id fails before the question), then
    ask; only ``y`` or ``yes`` confirms."""
    err = options.err
    print(f"About to delete {len(ids)} audience(s) of advertiser {advertiser_id}:", file=err)
    for chunk in _chunks(ids):
        for entry in api.get_audiences(advertiser_id, chunk):
            details = entry.get("audience_details")
            if isinstance(details, dict):
                shown = f"{_cell(details.get('audience_id'))}  {_cell(details.get('name'))}"
                print(f"  {shown}  (size {_cell(details.get('cover_num'))})", file=err)
    print("Delete them? This cannot be undone. [y/N] ", end="", file=err, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")
