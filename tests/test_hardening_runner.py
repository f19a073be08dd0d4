"""The runner's promises when its inputs and outputs misbehave (issue 14).

Standard input with ``--state`` is checked against what the checkpoint read of it; an
output may not be an input or another output; the state directory is checked writable
and locked before the first call; a full disk on any output is one line and exit 7 with
the counts so far; without a rejected file, what was dropped is said.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from destination.cli import main
from destination.errors import ConfigurationError, OutputError
from destination.fake_server import FakeTikTok, serve_in_thread
from destination.runner.checkpoint import locked_state
from destination.runner.prefix import InputPrefix, PrefixReader
from destination.runner.reader import read_lines
from destination.runner.sync import SyncOptions, run_sync
from tests.fake_backends import CrashAfter
from tests.test_sync import (
    TOKEN,
    audience_event,
    emails_in,
    make_fake,
    write_events,
    write_mapping,
)

IN_CI = os.environ.get("CI") == "true"


def events_bytes(users: range, *, key: str = "vip_customers") -> bytes:
    return b"".join(json.dumps(audience_event(f"u{i}", key=key)).encode() + b"\n" for i in users)


def environ(tmp_path: Path) -> dict[str, str]:
    return {
        "TIKTOK_ACCESS_TOKEN": TOKEN,
        "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
    }


def sync_stdin(
    tmp_path: Path, data: bytes, backend: Any, *, state: Path, rejected: Path | None = None
) -> dict[str, Any]:
    return run_sync(
        SyncOptions(
            mapping=write_mapping(tmp_path, batch_size=10),
            events="-",
            state=state,
            rejected=rejected,
        ),
        environ=environ(tmp_path),
        backend=backend,
        stdin=io.BytesIO(data),
    )


def the_audience(fake: FakeTikTok) -> str:
    (audience,) = fake.audiences()
    return audience.audience_id


# ------------------------------------------------------------------ standard input + --state


def test_a_second_days_input_on_stdin_is_refused_not_skipped(tmp_path: Path) -> None:
    fake = make_fake()
    state = tmp_path / "state"
    first = sync_stdin(tmp_path, events_bytes(range(30)), fake, state=state)
    assert first["delivered"] == 30
    sent = len(fake.requests)

    with pytest.raises(ConfigurationError, match="standard input is not the input"):
        sync_stdin(tmp_path, events_bytes(range(100, 130)), fake, state=state)

    assert len(fake.requests) == sent  # nothing of day 2 was sent (nor counted as done)
    assert len(emails_in(fake, the_audience(fake))) == 30


def test_the_same_input_on_stdin_resumes_after_a_crash_and_delivers_everything_once(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    state = tmp_path / "state"
    data = events_bytes(range(45))
    with pytest.raises(SystemExit):  # killed after the create and two batches
        sync_stdin(tmp_path, data, CrashAfter(fake, 3), state=state)

    resumed = sync_stdin(tmp_path, data, fake, state=state)

    assert resumed["resumed"] is True
    assert resumed["received"] == resumed["delivered"] == 45
    assert len(emails_in(fake, the_audience(fake))) == 45


def test_another_input_after_a_crash_is_refused_before_any_of_it_is_sent(
    tmp_path: Path,
) -> None:
    fake = make_fake()
    state = tmp_path / "state"
    with pytest.raises(SystemExit):
        sync_stdin(tmp_path, events_bytes(range(45)), CrashAfter(fake, 3), state=state)
    sent = len(fake.requests)
    # the same first lines (those the checkpoint finished), then other users
    other = events_bytes(range(20)) + events_bytes(range(200, 225))

    with pytest.raises(ConfigurationError, match=r"first \d+ bytes differ"):
        sync_stdin(tmp_path, other, fake, state=state)

    assert len(fake.requests) == sent


def test_a_shorter_input_on_stdin_is_refused(tmp_path: Path) -> None:
    fake = make_fake()
    state = tmp_path / "state"
    sync_stdin(tmp_path, events_bytes(range(30)), fake, state=state)

    with pytest.raises(ConfigurationError, match="it ended after"):
        sync_stdin(tmp_path, events_bytes(range(10)), fake, state=state)


def test_the_cli_says_why_it_refuses_another_stdin_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = make_fake()
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("TIKTOK_AUDIENCE_STATE", str(tmp_path / "audiences.json"))
        mapping = write_mapping(tmp_path, batch_size=10)
        argv = ["sync", "--mapping", str(mapping), "--events", "-", "--state", str(tmp_path)]
        for day, code in ((range(20), 0), (range(50, 70), 2)):
            monkeypatch.setattr("sys.stdin", SimpleNamespace(buffer=io.BytesIO(events_bytes(day))))
            assert main(argv, stdout=io.StringIO()) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert "standard input is not the input the checkpoint" in err[-1]
    assert "use another --state directory" in err[-1]


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    cut=st.floats(0, 1),
    hold=st.integers(1, 35),
    limit=st.sampled_from([-1, 3, 17, 1 << 20]),
)
def test_a_prefix_reader_hands_out_the_same_lines_as_the_stream(
    lines: list[bytes], cut: float, hold: int, limit: int
) -> None:
    data = b"".join(line + b"\n" for line in lines)
    size = max(1, int(len(data) * cut)) if data else 0
    plain = list(read_lines(io.BytesIO(data), max_bytes=25))
    if size == 0:
        return
    prefix = InputPrefix(size, hashlib.sha256(data[:size]).hexdigest())
    reader = PrefixReader(io.BytesIO(data), expected=prefix, hold_from_line=hold)
    assert list(read_lines(reader, max_bytes=25)) == plain
    assert reader.read_so_far() == InputPrefix(len(data), hashlib.sha256(data).hexdigest())

    # and with ``readline(limit)`` straight, across the spool's end
    reader = PrefixReader(io.BytesIO(data), expected=prefix, hold_from_line=hold)
    chunks = []
    while chunk := reader.readline(limit):
        chunks.append(chunk)
    assert b"".join(chunks) == data


def test_a_prefix_reader_hands_out_nothing_from_the_hold_line_on_a_mismatch() -> None:
    data = b"a\nb\nc\nd\ne\n"
    prefix = InputPrefix(8, "0" * 64)  # "a\nb\nc\nd\n", wrongly hashed
    reader = PrefixReader(io.BytesIO(data), expected=prefix, hold_from_line=3, where="S")
    assert reader.readline() == b"a\n"
    assert reader.readline() == b"b\n"
    with pytest.raises(ConfigurationError, match="checkpoint in S"):
        reader.readline()


# ------------------------------------------------------------------ outputs that are inputs


@pytest.mark.parametrize("output", ["--rejected", "--retry-file"])
def test_an_output_that_is_the_events_file_is_refused_and_the_input_kept(
    tmp_path: Path, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1")])
    before = events.read_bytes()
    argv = ["sync", "--mapping", str(write_mapping(tmp_path)), "--events", str(events)]

    code = main([*argv, output, str(events), "--dry-run"], stdout=io.StringIO())

    assert code == 2
    assert events.read_bytes() == before
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{output} {events} is the same file as --events" in line


def test_outputs_that_are_one_file_under_two_names_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1")])
    out = tmp_path / "out.ndjson"
    out.write_text("kept\n")
    linked = tmp_path / "hard-link.ndjson"
    os.link(out, linked)
    symlink = tmp_path / "symlink.ndjson"
    symlink.symlink_to(out)
    mapping = write_mapping(tmp_path)
    base = ["sync", "--mapping", str(mapping), "--events", str(events), "--dry-run"]

    for a, b in ((out, out), (out, linked), (symlink, out)):
        assert main([*base, "--rejected", str(a), "--retry-file", str(b)]) == 2
        assert "is the same file as --rejected (an output)" in capsys.readouterr().err
    # an input under another name: a hard link to the mapping file
    os.link(mapping, tmp_path / "mapping-link.json")
    assert main([*base, "--rejected", str(tmp_path / "mapping-link.json")]) == 2
    assert "same file as --mapping" in capsys.readouterr().err
    assert out.read_text() == "kept\n"


def test_the_rejected_file_may_not_be_the_state_directorys_checkpoint(tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1")])
    with pytest.raises(ConfigurationError, match="is the same file as --rejected"):
        run_sync(
            SyncOptions(
                mapping=write_mapping(tmp_path),
                events=str(events),
                rejected=tmp_path / "state" / "checkpoint.json",
                state=tmp_path / "state",
            ),
            environ=environ(tmp_path),
            backend=make_fake(),
        )


def test_a_device_as_the_rejected_file_keeps_its_mode(tmp_path: Path) -> None:
    device = tmp_path / "null"
    try:
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("making a device node needs root")
    os.chmod(device, 0o666)
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1"), "not json"])

    summary = run_sync(
        SyncOptions(mapping=write_mapping(tmp_path), events=str(events), rejected=device),
        environ=environ(tmp_path),
        backend=make_fake(),
    )

    assert summary["rejected"] == 1
    assert stat.S_IMODE(device.stat().st_mode) == 0o666


# ------------------------------------------------------------------ the state directory


def test_a_state_directory_that_cannot_be_written_fails_before_the_first_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = make_fake()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1")])

    with pytest.raises(OutputError, match=r"state directory \S+ cannot be written"):
        run_sync(
            SyncOptions(
                mapping=write_mapping(tmp_path), events=str(events), state=blocker / "state"
            ),
            environ=environ(tmp_path),
            backend=fake,
        )
    assert fake.requests == []


def test_a_second_sync_on_a_state_directory_in_use_is_refused(tmp_path: Path) -> None:
    fake = make_fake()
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1")])
    state = tmp_path / "state"
    options = SyncOptions(mapping=write_mapping(tmp_path), events=str(events), state=state)

    with locked_state(state):  # what the first sync holds while it runs
        with pytest.raises(
            ConfigurationError, match=f"in use by another sync \\(process {os.getpid()}\\)"
        ):
            run_sync(options, environ=environ(tmp_path), backend=fake)
        assert fake.requests == []

    assert run_sync(options, environ=environ(tmp_path), backend=fake)["delivered"] == 1


def test_a_full_rejected_file_is_one_line_and_exit_7_with_the_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    fake = make_fake()
    lines: list[Any] = [audience_event(f"u{i}") for i in range(5)]
    lines += [{"type": "track", "event": "nobody listens", "pad": "x" * 3000}] * 10
    events = write_events(tmp_path / "events.ndjson", lines)
    with serve_in_thread(fake) as server:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("TIKTOK_AUDIENCE_STATE", str(tmp_path / "audiences.json"))
        mapping = write_mapping(tmp_path)
        argv = ["sync", "--mapping", mapping, "--events", events, "--rejected", "/dev/full"]
        code = main([str(a) for a in argv], stdout=io.StringIO())

    assert code == 7
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot write the rejected file /dev/full: No space left on device" in line
    assert "events (" in line and "delivered" in line


FULL_DISK_SCRIPT = """
set -e
mount -t tmpfs -o size=64k tmpfs "$OUT"
"$PYTHON" -m destination sync --mapping "$MAPPING" --events "$EVENTS" \\
    --rejected "$OUT/rejected.ndjson" --state "$OUT/state" && code=0 || code=$?
ls -a "$OUT/state" > "$LISTING" || true
exit $code
"""


def test_a_full_disk_under_the_outputs_is_exit_7_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    """A 64 KiB file system (in a mount namespace of its own) fills up mid-run."""
    if shutil.which("unshare") is None or (
        subprocess.run(["unshare", "-m", "true"], check=False, capture_output=True).returncode
    ):
        if IN_CI:
            pytest.fail("unshare -m is needed for this test in CI")
        pytest.skip("unshare -m (a mount namespace) is not available here")
    fake = make_fake()
    # every event rejected (~3 KiB each): the rejected file fills the 64 KiB quickly
    lines = [{"type": "track", "event": "nobody listens", "pad": "x" * 3000}] * 60
    lines += [audience_event(f"u{i}") for i in range(5)]
    events = write_events(tmp_path / "events.ndjson", lines)
    out = tmp_path / "small"
    out.mkdir()
    with serve_in_thread(fake) as server:
        env = {
            **os.environ,
            "OUT": str(out),
            "PYTHON": sys.executable,
            "MAPPING": str(write_mapping(tmp_path)),
            "EVENTS": str(events),
            "LISTING": str(tmp_path / "listing"),
            "TIKTOK_API_BASE_URL": server.base_url,
            "TIKTOK_ACCESS_TOKEN": TOKEN,
            "TIKTOK_AUDIENCE_STATE": str(tmp_path / "audiences.json"),
        }
        done = subprocess.run(
            ["unshare", "-m", "sh", "-c", FULL_DISK_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
    if "mount:" in done.stderr and "permission denied" in done.stderr.lower():
        pytest.skip("mounting a tmpfs is not allowed here")
    assert done.returncode == 7, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "error" in x]
    assert "No space left on device" in line and "stopped after" in line
    assert "rerun with the same --state to resume" in line
    assert not [n for n in (tmp_path / "listing").read_text().split() if n.endswith(".tmp")]


# ------------------------------------------------------------------ no rejected file


def test_without_a_rejected_file_the_run_says_what_it_only_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1"), "not json", "[]"])

    summary = run_sync(
        SyncOptions(mapping=write_mapping(tmp_path), events=str(events)),
        environ=environ(tmp_path),
        backend=make_fake(),
    )

    assert "no --rejected file: events that cannot be delivered will only be counted" in (
        caplog.text
    )
    assert (
        "2 rejected events were only counted: no --rejected file was given" in (summary["warnings"])
    )
