"""The command line's smaller promises: flags on either side of the subcommand, the
help's exit codes and variables, ``--version``, ``fake-server --port 0`` and the demo's
report (no deleted files named, its counts explained)."""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from destination import cli as cli_module
from destination.cli import _parser, main
from destination.demo import run_demo
from destination.errors import MisconfiguredError, PermanentError

ROOT = Path(__file__).resolve().parent.parent
NATIVE_MAPPING = ROOT / "mappings" / "segment-native.json"
DEMO_EVENTS = ROOT / "fixtures" / "demo" / "native-events.ndjson"
# every leaf command with its required arguments (flags are added before/after it)
COMMANDS = [
    ["sync", "--mapping", str(NATIVE_MAPPING), "--events", str(DEMO_EVENTS)],
    ["auth", "login", "--app-id", "1"],
    ["auth", "status"],
    ["auth", "logout"],
    ["auth", "revoke"],
    ["demo"],
    ["fake-server"],
    ["schema", "addToAudience"],
    ["mapping-template", "--mode", "native"],
]
GUARD_SECONDS = 60  # only ends a hung subprocess; no assertion is about time


# ------------------------------------------------------------- -v / --debug anywhere


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("flag", ["-v", "--verbose", "--debug"])
def test_log_flags_are_accepted_before_and_after_every_subcommand(
    command: list[str], flag: str
) -> None:
    name = "debug" if flag == "--debug" else "verbose"
    other = "verbose" if name == "debug" else "debug"

    before = _parser().parse_args([flag, *command])
    after = _parser().parse_args([*command, flag])
    neither = _parser().parse_args(command)

    assert getattr(before, name) is True and getattr(before, other) is False
    assert getattr(after, name) is True and getattr(after, other) is False
    assert neither.verbose is False and neither.debug is False


def test_log_flags_after_the_auth_group_and_after_its_action() -> None:
    assert _parser().parse_args(["auth", "-v", "logout"]).verbose is True
    assert _parser().parse_args(["auth", "logout", "--debug"]).debug is True


def test_a_flag_before_the_subcommand_is_not_undone_by_the_subcommand() -> None:
    args = _parser().parse_args(["--debug", "schema", "addToAudience", "-v"])

    assert (args.debug, args.verbose) == (True, True)


@pytest.mark.parametrize(
    ("flags_before", "flags_after", "level"),
    [
        (["-v"], [], logging.INFO),
        ([], ["-v"], logging.INFO),
        ([], ["--verbose"], logging.INFO),
        (["--debug"], [], logging.DEBUG),
        ([], ["--debug"], logging.DEBUG),
        ([], [], logging.WARNING),
    ],
)
def test_sync_takes_its_log_level_from_flags_on_either_side(
    flags_before: list[str],
    flags_after: list[str],
    level: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [*flags_before, "sync", "--mapping", str(NATIVE_MAPPING)]
    argv += ["--events", str(DEMO_EVENTS), "--dry-run", *flags_after]
    out = io.StringIO()

    code = main(argv, stdout=out)

    assert code == 0, capsys.readouterr().err
    assert logging.getLogger().level == level
    assert json.loads(out.getvalue().splitlines()[-1])["dry_run"] is True


def test_auth_logout_runs_with_verbose_after_its_action(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()

    assert main(["auth", "logout", "-v"], stdout=out) == 0
    assert "nothing to forget" in out.getvalue()
    assert logging.getLogger().level == logging.INFO


# ------------------------------------------------------------------ sync --help


def test_sync_help_lists_exit_codes_token_variables_and_the_json_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sync", "--help"]) == 0
    text = capsys.readouterr().out

    codes = dict(re.findall(r"^ +(\d) +(\S.*)$", text, flags=re.MULTILINE))
    assert sorted(codes) == [str(code) for code in range(8)]
    assert "bug" in codes["1"] and "--debug" in codes["1"]
    assert "mapping" in codes["3"]
    assert "token" in codes["4"]
    assert "unavailable" in codes["5"]
    assert "events" in codes["6"]
    assert "cannot be written" in codes["7"]
    for variable in (
        "TIKTOK_ACCESS_TOKEN",
        "TIKTOK_APP_ID",
        "TIKTOK_APP_SECRET",
        "TIKTOK_TOKEN_STORE",
    ):
        assert re.search(rf"^ +{variable} +\S", text, flags=re.MULTILINE), variable
    assert "last line on stdout is a JSON summary" in " ".join(text.split())


# ------------------------------------------------------------------- --version


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0

    version = importlib.metadata.version("tiktok-audiences")
    assert capsys.readouterr().out == f"tiktok-audiences {version}\n"


def test_version_says_so_when_the_package_is_not_installed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == "tiktok-audiences (version unknown: not installed)\n"


# ------------------------------------------------------------- fake-server --port 0


@pytest.fixture
def fake_server_on_port_0() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``fake-server --port 0 -v`` in a subprocess, and the first line it printed.

    Its stderr is drained by a thread, so the server never blocks writing log lines no
    one reads; the guard only keeps a hung server from hanging pytest, and is generous,
    since starting Python on a loaded machine can take long."""
    process = subprocess.Popen(
        [sys.executable, "-m", "destination", "fake-server", "--port", "0", "-v"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # Ctrl-C as a terminal sends it: a suite started in the background by a script
        # runs with SIGINT ignored, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    guard = threading.Timer(4 * GUARD_SECONDS, process.kill)
    guard.start()
    assert process.stderr is not None
    stderr = process.stderr
    first = stderr.readline()
    drain = threading.Thread(target=stderr.read, daemon=True)
    drain.start()
    try:
        yield process, first
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        guard.cancel()
        drain.join(GUARD_SECONDS)
        stderr.close()


def test_fake_server_on_port_0_prints_the_port_it_got_and_answers_there(
    fake_server_on_port_0: tuple[subprocess.Popen[str], str],
) -> None:
    process, first_line = fake_server_on_port_0

    match = re.search(r"http://127\.0\.0\.1:(\d+)", first_line)
    assert match is not None, first_line
    port = int(match.group(1))
    assert port != 0
    url = f"http://127.0.0.1:{port}/open_api/v1.3/user/info/"
    with urllib.request.urlopen(url, timeout=GUARD_SECONDS) as reply:
        assert json.loads(reply.read())["code"] == 40104  # TikTok's "no Access-Token"

    process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
    assert process.wait(timeout=GUARD_SECONDS) == 0


# ------------------------------------------------------------------------- demo


def test_the_demo_names_no_file_it_deletes_and_shows_rejected_lines_inline() -> None:
    out = io.StringIO()

    assert run_demo(out) == 0
    report = out.getvalue()

    assert "tiktok-audiences-demo-" not in report  # the temporary folder's prefix
    for path in re.findall(r'"(/[^"]+)"', report):
        assert Path(path).exists(), f"the demo names {path}, which does not exist"
    assert "rejected line 12: invalid_json" in report
    assert "rejected line 9: invalid: Create Audience" in report


def test_the_demo_explains_two_create_audience_events_for_one_audience() -> None:
    out = io.StringIO()

    assert run_demo(out) == 0
    legacy = out.getvalue().split("== legacy instance")[1].split("== what the fake")[0]

    assert '"Create Audience": 2' in legacy
    (note,) = [line for line in legacy.splitlines() if "counts events" in line]
    assert "2 Create Audience events, 1 audience created" in note


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("list audiences: No permission | code 40001"),
        MisconfiguredError("TikTok refused the first 3 requests the same way"),
    ],
)
def test_a_refusal_a_command_does_not_translate_is_exit_2_not_a_bug(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(_args: Any, _stdout: Any) -> int:
        raise error

    monkeypatch.setattr(cli_module, "_run", refuse)
    assert main(["schema", "addToAudience"], stdout=io.StringIO()) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"tiktok-audiences: error: {error}"
