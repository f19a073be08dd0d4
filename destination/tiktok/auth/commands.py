"""``tiktok-audiences auth login | status | logout | revoke``: what each command does.

Each function writes its result to ``out`` and progress to ``err``, and raises the
project's errors for the CLI to turn into one line and an exit code. None of them prints
a token or the app secret; the secret comes from ``TIKTOK_APP_SECRET`` or a prompt on a
terminal, never from a flag (flags end up in shell history).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from destination.backends import HttpBackend, check_base_url, check_url, redact_url
from destination.errors import ApiUnavailableError, AuthenticationError, ConfigurationError
from destination.kit.settings import Secret
from destination.tiktok.api import (
    RetryPolicy,
    StaticToken,
    TikTokApi,
    TokenProvider,
    tiktok_backend,
)
from destination.tiktok.auth.login import login
from destination.tiktok.auth.oauth import DEFAULT_AUTH_URL, TikTokOAuth
from destination.tiktok.auth.provider import (
    ENV_TOKEN_HINT,
    REQUIRED_SCOPES,
    SCOPE_NAMES,
    SECRET_VARIABLE,
    StoredToken,
    app_secret,
)
from destination.tiktok.auth.store import (
    APP_ID_VARIABLE,
    TokenEntry,
    TokenStore,
    default_token_store,
)
from destination.tiktok.settings import BASE_URL_VARIABLE, DEFAULT_BASE_URL, TOKEN_VARIABLE

__all__ = [
    "AUTH_URL_VARIABLE",
    "AuthOptions",
    "auth_login",
    "auth_logout",
    "auth_revoke",
    "auth_status",
    "read_app_secret",
]

AUTH_URL_VARIABLE = "TIKTOK_AUTH_URL"
PROBE_RETRY = RetryPolicy(max_attempts=2, max_seconds=10.0, initial_wait=0.5)


@dataclass(frozen=True)
class AuthOptions:
    """What the ``auth`` subcommands share: the app, the API root, the environment."""

    environ: Mapping[str, str]
    out: IO[str]
    err: IO[str]
    app_id: str | None = None
    base_url: str | None = None  # --base-url


def read_app_secret(
    environ: Mapping[str, str],
    *,
    stdin: IO[str] | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> Secret:
    """``TIKTOK_APP_SECRET``, else asked for on a terminal; never a flag."""
    secret = app_secret(environ)
    if secret is not None:
        return secret
    if (stdin or sys.stdin).isatty():
        typed = prompt("TikTok app secret (not shown): ").strip()
        if typed:
            return Secret(typed)
    raise ConfigurationError(
        f"the app secret is needed: set {SECRET_VARIABLE} (or run in a terminal to be asked "
        "for it); it is never taken as a flag, so that it stays out of shell history"
    )


def _base_url(options: AuthOptions, entry: TokenEntry | None = None) -> str:
    """``--base-url``, else ``TIKTOK_API_BASE_URL``, else where the token came from."""
    chosen = options.base_url or options.environ.get(BASE_URL_VARIABLE, "").strip()
    if chosen or entry is None:
        return check_base_url(chosen or DEFAULT_BASE_URL)
    try:
        return check_base_url(entry.base_url)
    except ConfigurationError as exc:  # stored by an older version, which let more through
        raise ConfigurationError(
            f"the stored token of app {entry.app_id}: {exc}; give --base-url, or run "
            f"`tiktok-audiences auth login --app-id {entry.app_id}` again"
        ) from exc


def _auth_url(environ: Mapping[str, str]) -> str:
    """``TIKTOK_AUTH_URL`` (else TikTok's consent page), rebuilt from its checked parts;
    unlike the API root, it keeps its path."""
    chosen = environ.get(AUTH_URL_VARIABLE, "").strip() or DEFAULT_AUTH_URL
    return check_url(chosen, name=AUTH_URL_VARIABLE, path=True)


def _store(options: AuthOptions) -> TokenStore:
    return TokenStore(default_token_store(options.environ))


def _chosen_app(options: AuthOptions) -> str | None:
    return options.app_id or options.environ.get(APP_ID_VARIABLE, "").strip() or None


# --------------------------------------------------------------------------- login


def auth_login(
    options: AuthOptions,
    *,
    no_browser: bool,
    port: int,
    timeout: float,
    open_browser: Callable[[str], object],
    stdin: IO[str] | None = None,
) -> None:
    app_id = options.app_id
    if not app_id:
        raise ConfigurationError("auth login needs --app-id (your TikTok developer app's id)")
    secret = read_app_secret(options.environ, stdin=stdin)
    base_url = _base_url(options)
    auth_url = _auth_url(options.environ)
    store = _store(options)

    def show(url: str) -> None:
        how = (
            "Open this URL in a browser"
            if no_browser
            else "Opening TikTok's consent page in your browser; if it does not open, open this URL"
        )
        print(
            f"{how} to authorize app {app_id} (waiting up to {timeout:g} s; Ctrl-C cancels):",
            file=options.err,
        )
        print(url, file=options.err, flush=True)
        if not no_browser:
            open_browser(url)

    result = login(
        app_id=app_id,
        secret=secret,
        backend=tiktok_backend(base_url),
        base_url=base_url,
        auth_url=auth_url,
        store=store,
        open_url=show,
        timeout=timeout,
        port=port,
    )
    entry = result.entry
    names = {a.advertiser_id: a.name for a in result.advertisers}
    out = options.out
    print(f"Connected app {app_id} for {len(entry.advertiser_ids)} advertiser(s):", file=out)
    for advertiser_id in entry.advertiser_ids:
        print(f"  {advertiser_id}  {names.get(advertiser_id, '')}".rstrip(), file=out)
    print(f"scopes: {_scopes_text(entry.scopes)}", file=out)
    print(f"token stored in {store.path} (readable by you only)", file=out)
    if options.environ.get(TOKEN_VARIABLE, "").strip():
        print(f"note: {TOKEN_VARIABLE} is set and overrides the stored token", file=out)


# -------------------------------------------------------------------------- status


def auth_status(options: AuthOptions) -> None:
    """Show every token a sync could use, and whether TikTok still accepts it."""
    store = _store(options)
    chosen = _chosen_app(options)
    entries = store.entries()
    if chosen is not None:
        if chosen not in entries:
            raise ConfigurationError(
                f"no token for app {chosen} in {store.path}: run "
                f"`tiktok-audiences auth login --app-id {chosen}`"
            )
        entries = {chosen: entries[chosen]}
    env_token = options.environ.get(TOKEN_VARIABLE, "").strip()
    if not entries and not env_token:
        raise ConfigurationError(
            f"not connected: no token in {store.path} and {TOKEN_VARIABLE} is not set; run "
            "`tiktok-audiences auth login --app-id <your app id>`"
        )
    out = options.out
    failures: list[tuple[str, Exception]] = []
    if env_token:
        print(f"{TOKEN_VARIABLE} (set: sync uses it, the token store is ignored)", file=out)
        print("  scopes:       unknown (TikTok tells them only at authorization)", file=out)
        provider = StaticToken(Secret(env_token), reauthorize_hint=ENV_TOKEN_HINT)
        _probe(tiktok_backend(_base_url(options)), provider, TOKEN_VARIABLE, out, failures)
    for app_id, entry in sorted(entries.items()):
        in_use = "" if env_token or (len(entries) > 1 and chosen is None) else " (sync uses it)"
        print(f"app {app_id}{in_use}", file=out)
        print(f"  stored:       {entry.created_at} in {store.path}", file=out)
        print(f"  issued by:    {redact_url(entry.base_url)}", file=out)
        print(f"  advertisers:  {', '.join(entry.advertiser_ids) or 'none'}", file=out)
        print(f"  scopes:       {_scopes_text(entry.scopes)}", file=out)
        refresh = "yes" if entry.refresh_token is not None else "none (advertiser tokens last)"
        print(f"  refresh:      {refresh}", file=out)
        backend = _backend_for(options, entry)
        stored = StoredToken(store, entry, backend=backend, app_secret=app_secret(options.environ))
        _probe(backend, stored, f"app {app_id}", out, failures)
    if len(entries) > 1 and chosen is None and not env_token:
        print(f"several apps are stored: sync needs {APP_ID_VARIABLE} to pick one", file=out)
    if env_token and chosen is None:
        # the exit code is about the token sync would use; stored ones are only shown
        for name, _ in failures:
            if name != TOKEN_VARIABLE:
                print(f"note: {name} does not work, but sync uses {TOKEN_VARIABLE}", file=out)
        failures = [(name, exc) for name, exc in failures if name == TOKEN_VARIABLE]
    for name, exc in failures:
        if isinstance(exc, AuthenticationError):
            raise AuthenticationError(f"the token of {name} does not work: {exc.message}")
    for name, exc in failures:
        raise ApiUnavailableError(f"cannot check the token of {name}: {exc}")


def _backend_for(options: AuthOptions, entry: TokenEntry) -> HttpBackend:
    return tiktok_backend(_base_url(options, entry), timeout=15.0)


def _probe(
    backend: HttpBackend,
    provider: TokenProvider,
    name: str,
    out: IO[str],
    failures: list[tuple[str, Exception]],
) -> None:
    """``user/info/``: the cheap call that says whether TikTok accepts the token."""
    api = TikTokApi(backend, provider, retry=PROBE_RETRY)
    try:
        api.user_info()
    except AuthenticationError as exc:
        print(f"  works:        no: TikTok refused it (code {exc.code})", file=out)
        failures.append((name, exc))
    except ApiUnavailableError as exc:
        print(f"  works:        unknown: {backend.base_url} did not answer", file=out)
        failures.append((name, exc))
    else:
        print(f"  works:        yes ({backend.base_url} accepted it)", file=out)


def _scopes_text(scopes: tuple[int, ...]) -> str:
    if not scopes:
        return "unknown (TikTok named none at authorization)"
    shown = ", ".join(f"{s} ({SCOPE_NAMES.get(s, 'other')})" for s in scopes)
    missing = sorted(REQUIRED_SCOPES - set(scopes))
    if missing:
        shown += f"; MISSING {', '.join(map(str, missing))}: sync will refuse to start"
    return shown


# ------------------------------------------------------------------ logout, revoke


def _selected(options: AuthOptions, store: TokenStore) -> TokenEntry | None:
    return store.select(_chosen_app(options))


def auth_logout(options: AuthOptions) -> None:
    """Forget the token locally (TikTok still honours it until it is revoked)."""
    store = _store(options)
    entry = _selected(options, store)
    if entry is None:
        print(f"nothing to forget: no token in {store.path}", file=options.out)
        return
    store.remove(entry.app_id)
    print(
        f"forgot the token of app {entry.app_id} (TikTok still accepts it until it is "
        "revoked: `tiktok-audiences auth revoke` does both)",
        file=options.out,
    )
    if options.environ.get(TOKEN_VARIABLE, "").strip():
        print(f"note: {TOKEN_VARIABLE} is still set in this environment", file=options.out)


def auth_revoke(options: AuthOptions) -> None:
    """Revoke the stored token at TikTok, then forget it."""
    store = _store(options)
    entry = _selected(options, store)
    if entry is None:
        raise ConfigurationError(f"no token to revoke in {store.path}")
    secret = read_app_secret(options.environ)
    oauth = TikTokOAuth(_backend_for(options, entry), entry.app_id, secret)
    try:
        oauth.revoke(entry.access_token)
    except AuthenticationError as exc:
        if exc.code != 40105:  # anything but "this token is already invalid"
            raise
        store.remove(entry.app_id)
        print(f"TikTok no longer knew the token of app {entry.app_id}; forgot it", file=options.out)
        return
    store.remove(entry.app_id)
    print(f"revoked the token of app {entry.app_id} at TikTok and forgot it", file=options.out)
