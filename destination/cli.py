"""The command line: ``main(argv) -> int``, one clear line per failure.

Exit codes: ``EXIT_CODES`` maps error classes to them, ``STOP_CODES`` a run's stop
reasons, and ``_EXIT_CODE_MEANINGS`` words them for ``sync --help``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import webbrowser
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from destination.demo import (
    DEMO_ADVERTISER_ID,
    DEMO_APP_ID,
    DEMO_APP_SECRET,
    DEMO_TOKEN,
    demo_fake,
    run_demo,
)
from destination.errors import (
    ApiUnavailableError,
    AuthenticationError,
    ConfigurationError,
    DestinationError,
    InputError,
    MappingError,
    MisconfiguredError,
    OutputError,
    PermanentError,
)
from destination.fake_server import FaultPlan, parse_faults, serve_forever
from destination.kit.fields import payload_schema
from destination.kit.registry import registered
from destination.kit.settings import Setting
from destination.runner.meter import LogLines, TerminalBar
from destination.runner.settings import RUNNER_SETTINGS
from destination.runner.sync import SyncOptions, run_sync
from destination.tiktok.auth.commands import (
    AuthOptions,
    auth_login,
    auth_logout,
    auth_revoke,
    auth_status,
)
from destination.tiktok.auth.provider import SECRET_VARIABLE
from destination.tiktok.auth.store import APP_ID_VARIABLE, STORE_VARIABLE
from destination.tiktok.dmp.commands import (
    audiences_apply,
    audiences_import,
    audiences_link,
    audiences_plan,
)
from destination.tiktok.manage import (
    ManageOptions,
    audiences_delete,
    audiences_get,
    audiences_list,
)
from destination.tiktok.settings import TOKEN_VARIABLE

__all__ = ["EXIT_CODES", "main", "main_entry"]

OK = 0
EXIT_CODES: dict[type[BaseException], int] = {
    ConfigurationError: 2,
    MappingError: 3,
    AuthenticationError: 4,
    ApiUnavailableError: 5,
    InputError: 6,
    OutputError: 7,
    # TikTok refused a request a command made (a sync answers these per event instead)
    PermanentError: 2,
    MisconfiguredError: 2,
}
UNEXPECTED = 1
STOP_CODES = {"auth": 4, "api_unavailable": 5, "configuration": 2}

log = logging.getLogger("destination")
DEFAULT_CALLBACK_PORT = 8766
FAKE_SERVER_KEPT_REQUESTS = 1000  # what `fake-server` keeps of the requests it answered


def _flag_type(setting: Setting) -> Callable[[str], Any]:
    """How a setting's flag reads its text: by the declared type (the resolver checks
    the range); words the declaration also allows (``"auto"``) are taken as they are."""
    kinds: dict[str, Callable[[str], Any]] = {"integer": int, "number": float, "path": Path}
    kind = kinds.get(setting.type, str)
    allowed = [str(value) for value in setting.also]

    def read(text: str) -> Any:
        if text in allowed:
            return text
        try:
            return kind(text)
        except ValueError:
            words = " or ".join([*(f'"{a}"' for a in allowed), f"a {setting.type}"])
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None

    return read


def _setting_flags() -> list[Setting]:
    """The settings that have a flag: the runner's and every installed destination's."""
    flagged: dict[str, Setting] = {}
    for setting in (*RUNNER_SETTINGS, *(s for d in registered().values() for s in d.settings)):
        if setting.flag is not None and setting.flag not in flagged:
            flagged[setting.flag] = setting
    return list(flagged.values())


_DISTRIBUTION = "tiktok-audiences"  # the name pip knows the package by

_EXIT_CODE_MEANINGS = (
    (0, "done: every event delivered, or rejected for its own data (see --rejected)"),
    (1, "unexpected error, a bug: rerun with --debug and report it"),
    (2, "bad settings or usage, or TikTok refused the run's first requests all alike"),
    (3, "bad mapping file"),
    (4, "TikTok refused the token (or an authorization was denied or forged)"),
    (5, "TikTok stayed unavailable"),
    (6, "the events input cannot be read"),
    (7, "an output or the state directory cannot be written (disk full, read-only)"),
)
_TOKEN_VARIABLES = (
    (TOKEN_VARIABLE, "an access token; when set, the token store is not read"),
    (APP_ID_VARIABLE, "whose stored token to use (`auth login`), when several are stored"),
    (SECRET_VARIABLE, "the app secret, to refresh a stored token that expired"),
    (STORE_VARIABLE, "the token store (default ~/.config/tiktok-audiences/tokens.json)"),
)


def _sync_epilog() -> str:
    """What ``sync --help`` adds below the flags: what a script calling it must know."""
    codes = "\n".join(f"  {code}  {meaning}" for code, meaning in _EXIT_CODE_MEANINGS)
    width = max(len(name) for name, _ in _TOKEN_VARIABLES)
    variables = "\n".join(f"  {name:<{width}}  {meaning}" for name, meaning in _TOKEN_VARIABLES)
    return (
        "output:\n"
        "  progress and errors go to stderr; the last line on stdout is a JSON summary\n"
        "  (received, delivered, rejected, deferred, requests, ...: see the README)\n\n"
        f"exit codes:\n{codes}\n\n"
        f"token (environment variables; or none with --dry-run):\n{variables}\n"
    )


def _version() -> str:
    """The installed package's version, or a plain note when run from a bare checkout."""
    try:
        return metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "(version unknown: not installed)"


def _log_flags(default: Any) -> argparse.ArgumentParser:
    """``--debug`` and ``-v``, accepted before and after any subcommand.

    Subcommands get them with ``default=SUPPRESS``: a subparser that does not see a flag
    sets nothing, so ``-v sync`` keeps the top level's True.
    """
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and debug logs"
    )
    flags.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log progress to stderr"
    )
    return flags


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand that also takes the log flags."""
    return commands.add_parser(name, parents=[_log_flags(argparse.SUPPRESS)], **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiktok-audiences",
        description="Keep TikTok Ads audiences in sync with your customer data.",
        parents=[_log_flags(False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sync = _command(
        commands,
        "sync",
        help="send NDJSON events to TikTok through a mapping file",
        epilog=_sync_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument("--mapping", required=True, type=Path, help="mapping JSON file")
    sync.add_argument(
        "--events", help="NDJSON events file, or - for stdin (not with a mapping file's source)"
    )
    sync.add_argument("--rejected", type=Path, help="write rejected events here (NDJSON)")
    sync.add_argument(
        "--retry-file",
        type=Path,
        help="write events TikTok could not take (down past every retry) here, as input",
    )
    sync.add_argument(
        "--state", type=Path, help="checkpoint directory: a rerun resumes where a run stopped"
    )
    sync.add_argument(
        "--dry-run",
        action="store_true",
        help="map, validate and batch, but send nothing (a warehouse source: print the plan)",
    )
    sync.add_argument(
        "--allow-mass-removal",
        action="store_true",
        help="let a warehouse mirror remove more than source.max_removal_fraction of the audience",
    )
    for setting in _setting_flags():  # from the declarations: README's settings table
        sync.add_argument(
            str(setting.flag),
            dest=f"setting_{setting.name}",
            type=_flag_type(setting),
            metavar=setting.name.upper(),
            help=f"the {setting.name} setting (overrides the mapping file and "
            + (f"{setting.env})" if setting.env else "its default)"),
        )

    _auth_parser(commands)
    _audiences_parser(commands)

    _command(commands, "demo", help="sync sample events against the embedded fake TikTok")

    fake = _command(commands, "fake-server", help="run the fake TikTok API on loopback")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8765, help="0 picks a free one (printed)")
    fake.add_argument(
        "--faults",
        default="",
        help="fault rates, e.g. 50000=0.05,http_503=0.02,drop_after=0.01,slow=0.1",
    )
    fake.add_argument("--fault-seed", type=int, default=0, help="seed of the fault schedule")
    fake.add_argument("--slow-seconds", type=float, default=0.2, help="delay of a slow reply")

    destinations = sorted(registered())
    schema = _command(commands, "schema", help="print an action's payload JSON Schema")
    schema.add_argument(
        "action", choices=sorted({k for d in registered().values() for k in d.catalogue()})
    )
    schema.add_argument("--destination", choices=destinations, help="whose action (if several)")

    mapping = _command(commands, "mapping-template", help="print a default mapping file")
    mapping.add_argument(
        "--destination",
        choices=destinations,
        default=_DISTRIBUTION,
        help=f"the destination (default {_DISTRIBUTION})",
    )
    mapping.add_argument("--mode", help="the destination's mode, where it has modes")
    return parser


def _auth_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = _command(commands, "auth", help="connect your TikTok account (OAuth login, tokens)")
    actions = auth.add_subparsers(dest="auth_command", required=True, metavar="ACTION")
    login = _command(
        actions,
        "login",
        help="authorize the app in TikTok's consent page and store the token",
        description="The app secret is read from TIKTOK_APP_SECRET, or asked for on a "
        "terminal; it is never a flag.",
    )
    login.add_argument("--app-id", required=True, help="your TikTok developer app's id")
    login.add_argument(
        "--no-browser", action="store_true", help="print the consent URL instead of opening it"
    )
    login.add_argument(
        "--port",
        type=int,
        default=DEFAULT_CALLBACK_PORT,
        help="loopback port of the redirect http://127.0.0.1:PORT/callback "
        f"(default {DEFAULT_CALLBACK_PORT}; 0 picks a free one)",
    )
    login.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the consent page"
    )
    status = _command(actions, "status", help="which app and advertisers; does the token work")
    logout = _command(actions, "logout", help="forget the stored token (locally)")
    revoke = _command(actions, "revoke", help="revoke the stored token at TikTok, then forget it")
    for action in (status, logout, revoke):
        action.add_argument("--app-id", help="the app (default: TIKTOK_APP_ID or the only one)")
    for action in (login, status, revoke):
        action.add_argument("--base-url", help="API root (overrides TIKTOK_API_BASE_URL)")


def _auth(args: argparse.Namespace, stdout: IO[str]) -> int:
    options = AuthOptions(
        environ=os.environ,
        out=stdout,
        err=sys.stderr,
        app_id=args.app_id,
        base_url=getattr(args, "base_url", None),
    )
    if args.auth_command == "login":
        auth_login(
            options,
            no_browser=args.no_browser,
            port=args.port,
            timeout=args.timeout,
            open_browser=webbrowser.open,
        )
    elif args.auth_command == "status":
        auth_status(options)
    elif args.auth_command == "logout":
        auth_logout(options)
    else:
        auth_revoke(options)
    return OK


def _audiences_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audiences = _command(
        commands, "audiences", help="list, show, delete audiences; plan and apply definitions"
    )
    actions = audiences.add_subparsers(dest="audiences_command", required=True, metavar="ACTION")
    listing = _command(
        actions,
        "list",
        help="the advertiser's audiences, own and shared: a table, then JSON as the last line",
    )
    get = _command(actions, "get", help="the details of audiences, as JSON")
    get.add_argument("ids", nargs="+", metavar="ID", help="audience id")
    delete = _command(actions, "delete", help="delete audiences (asks first on a terminal)")
    delete.add_argument("ids", nargs="+", metavar="ID", help="audience id")
    delete.add_argument(
        "--yes", action="store_true", help="do not ask (needed when there is no terminal)"
    )
    plan = _command(
        actions, "plan", help="what apply would do for a folder of definitions: a table, then JSON"
    )
    apply = _command(actions, "apply", help="make TikTok hold what a folder of definitions says")
    for action in (plan, apply):
        action.add_argument("--dir", required=True, type=Path, help="the definitions folder")
        action.add_argument(
            "--prune",
            action="store_true",
            help="also delete the audiences the state knows and no definition names any more",
        )
    adopt = _command(actions, "import", help="adopt an existing audience as a definition's key")
    adopt.add_argument("--dir", required=True, type=Path, help="the definitions folder")
    adopt.add_argument("key", help="the definition's key")
    adopt.add_argument("id", metavar="ID", help="the audience id")
    link = _command(actions, "apply-to-adgroup", help="target ad groups with an audience")
    unlink = _command(actions, "disconnect", help="stop ad groups targeting an audience")
    for action in (link, unlink):
        action.add_argument("audience", metavar="KEY_OR_ID", help="a definition's key, or an id")
        action.add_argument(
            "--adgroup-id", dest="adgroup_ids", action="append", required=True, metavar="ID"
        )
        action.add_argument("--dir", type=Path, help="the definitions folder (to use a key)")
        action.add_argument(
            "--exclude", action="store_true", help="exclude the audience (default: include)"
        )
    for action in (listing, get, delete, plan, apply, adopt, link, unlink):
        action.add_argument(
            "--advertiser-id",
            help="whose audiences (default: TIKTOK_ADVERTISER_ID, else the stored token's "
            "only advertiser)",
        )
        action.add_argument("--base-url", help="API root (overrides TIKTOK_API_BASE_URL)")


def _audiences(args: argparse.Namespace, stdout: IO[str]) -> int:
    options = ManageOptions(
        environ=os.environ,
        out=stdout,
        err=sys.stderr,
        advertiser_id=args.advertiser_id,
        base_url=args.base_url,
    )
    command = args.audiences_command
    if command == "list":
        audiences_list(options)
    elif command == "get":
        audiences_get(options, args.ids)
    elif command == "delete":
        audiences_delete(options, args.ids, yes=args.yes, stdin=sys.stdin)
    elif command == "plan":
        audiences_plan(options, args.dir, prune=args.prune)
    elif command == "apply":
        audiences_apply(options, args.dir, prune=args.prune)
    elif command == "import":
        audiences_import(options, args.dir, args.key, args.id)
    else:
        audiences_link(
            options,
            args.dir,
            args.audience,
            args.adgroup_ids,
            exclude=args.exclude,
            disconnect=command == "disconnect",
        )
    return OK


BAR_SECONDS = 0.5  # how often the terminal's progress bar is redrawn
LOG_LINE_SECONDS = 10.0  # how often -v logs a progress line without a terminal


def _progress(args: argparse.Namespace, err: IO[str]) -> dict[str, Any]:
    """How a sync shows its progress: a bar on a terminal, lines with -v, else nothing."""
    if err.isatty() and not args.debug:
        return {"progress": TerminalBar(err), "progress_interval": BAR_SECONDS}
    if args.verbose:
        return {"progress": LogLines(), "progress_interval": LOG_LINE_SECONDS}
    return {}


def _sync(args: argparse.Namespace, stdout: IO[str]) -> int:
    overrides = {s.name: getattr(args, f"setting_{s.name}") for s in _setting_flags()}
    summary = run_sync(
        SyncOptions(
            mapping=args.mapping,
            events=args.events,
            rejected=args.rejected,
            retry=args.retry_file,
            state=args.state,
            dry_run=args.dry_run,
            allow_mass_removal=args.allow_mass_removal,
            overrides=overrides,
            **_progress(args, sys.stderr),
        ),
        environ=os.environ,
    )
    if "source" in summary:  # a warehouse query: its plan first
        print(_plan_line(summary, dry_run=args.dry_run), file=sys.stderr)
    where = f" (see {args.rejected})" if args.rejected and summary["rejected"] else ""
    print(
        f"tiktok-audiences: {summary['received']} events: {summary['delivered']} delivered, "
        f"{summary['rejected']} rejected{where}, {summary['deferred']} deferred, "
        f"{summary['requests']} requests" + (" [dry run]" if args.dry_run else ""),
        file=sys.stderr,
    )
    stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    for warning in summary["warnings"]:
        print(f"tiktok-audiences: warning: {warning}", file=sys.stderr)
    stopped = summary["stopped"]
    if stopped:
        print(f"tiktok-audiences: stopped: {stopped['message']}", file=sys.stderr)
        return STOP_CODES[stopped["reason"]]
    return OK


def _plan_line(summary: dict[str, Any], *, dry_run: bool) -> str:
    """The rows a warehouse sync found changed, with a few keys of each kind on a dry run."""
    counts = ", ".join(f"{summary[k]} {k}" for k in ("added", "removed", "changed", "unchanged"))
    line = f"tiktok-audiences: rows: {counts}"
    if dry_run:
        for kind, keys in summary["source"]["samples"].items():
            line += f"\n  {kind}: {', '.join(keys)}" + (" ..." if len(keys) >= 5 else "")
    return line


def _announce(base_url: str) -> None:
    """Where the fake server listens, once bound (so ``--port 0`` shows the real port)."""
    print(
        f"fake TikTok on {base_url} (advertiser {DEMO_ADVERTISER_ID}, "
        f"token {DEMO_TOKEN!r}: a demo token the fake server alone accepts); Ctrl-C stops\n"
        f"try the login: TIKTOK_APP_SECRET={DEMO_APP_SECRET} "
        f"TIKTOK_AUTH_URL={base_url}/portal/auth "
        f"TIKTOK_API_BASE_URL={base_url} "
        f"tiktok-audiences auth login --app-id {DEMO_APP_ID}",
        file=sys.stderr,
        flush=True,  # a script reading the port must not wait for more output
    )


def _fake_server(args: argparse.Namespace) -> int:
    # it may run for long and nothing reads its requests back: keep only the latest
    fake = demo_fake(keep_requests=FAKE_SERVER_KEPT_REQUESTS)
    if args.faults:
        try:
            plan = FaultPlan(
                parse_faults(args.faults), seed=args.fault_seed, slow_seconds=args.slow_seconds
            )
        except ValueError as exc:
            raise ConfigurationError(f"--faults: {exc}") from exc
        fake.inject_faults(plan)
    serve_forever(fake, host=args.host, port=args.port, on_ready=_announce)
    return OK


def _run(args: argparse.Namespace, stdout: IO[str]) -> int:
    if args.command == "sync":
        return _sync(args, stdout)
    if args.command == "auth":
        return _auth(args, stdout)
    if args.command == "audiences":
        return _audiences(args, stdout)
    if args.command == "demo":
        return run_demo(stdout)
    if args.command == "fake-server":
        return _fake_server(args)
    if args.command == "schema":
        return _schema(args, stdout)
    destination = registered()[args.destination]
    try:
        document = destination.template(args.mode)
    except ValueError as exc:
        raise ConfigurationError(
            f"mapping-template --destination {args.destination}: {exc}"
        ) from None
    stdout.write(json.dumps(document, indent=2) + "\n")
    return OK


def _schema(args: argparse.Namespace, stdout: IO[str]) -> int:
    """The payload schema of the action named, looked up in every installed destination."""
    owners = [
        d
        for name, d in sorted(registered().items())
        if args.action in d.catalogue() and args.destination in (None, name)
    ]
    if len(owners) != 1:
        names = ", ".join(d.name for d in owners) or "none"
        raise ConfigurationError(
            f"schema {args.action}: name the destination with --destination (it is one of {names})"
        )
    spec = owners[0].catalogue()[args.action]
    stdout.write(json.dumps(payload_schema(spec.fields, title=spec.title), indent=2) + "\n")
    return OK


def main(argv: list[str] | None = None, *, stdout: IO[str] | None = None) -> int:
    out = stdout or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage line
        return int(exc.code or 0) and EXIT_CODES[ConfigurationError]
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    try:
        return _run(args, out)
    except DestinationError as exc:
        if args.debug:
            log.exception("failed")
        code = next((c for cls, c in EXIT_CODES.items() if isinstance(exc, cls)), UNEXPECTED)
        print(f"tiktok-audiences: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("tiktok-audiences: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"tiktok-audiences: unexpected error ({type(exc).__name__}); "
            "rerun with --debug for the traceback and please report it",
            file=sys.stderr,
        )
        return UNEXPECTED


def main_entry() -> None:
    sys.exit(main())
