"""Progress of long runs (issue 14): a bar with rate and ETA on a terminal, periodic
lines with ``-v`` otherwise; sampled from a thread, so the event route pays nothing."""

from __future__ import annotations

import io
import logging
import sys
import threading
from pathlib import Path

import pytest

from destination.cli import main
from destination.runner.meter import LogLines, Sample, TerminalBar, watching
from tests.test_cli import audience_events, served, write_mapping  # noqa: F401 (a fixture)


class Recorder:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.closed = False
        self.two = threading.Event()

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)
        if len(self.samples) >= 2:
            self.two.set()

    def close(self) -> None:
        self.closed = True


def test_the_last_sample_has_the_whole_file_read_and_every_event(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_bytes(b"x\n" * 1000)
    recorder = Recorder()
    done = 0
    ticks = iter(range(100))
    with path.open("rb") as stream:
        with watching(
            recorder,
            stream=stream,
            events=lambda: done,
            interval=3600,  # no sample in between: only the last
            clock=lambda: float(next(ticks)),
        ):
            while stream.readline():
                done += 1
    (last,) = recorder.samples
    assert last == Sample(bytes_read=2000, total_bytes=2000, events=1000, seconds=1.0)
    assert recorder.closed


def test_the_thread_samples_while_the_run_goes_on() -> None:
    recorder = Recorder()
    with watching(recorder, stream=io.BytesIO(b""), events=lambda: 7, interval=0.001):
        assert recorder.two.wait(timeout=60)  # only a guard against a hang
    assert all(s.events == 7 and s.total_bytes is None for s in recorder.samples)


def test_a_sample_knows_its_rate_and_what_is_left() -> None:
    sample = Sample(bytes_read=250, total_bytes=1000, events=500, seconds=10.0)
    assert sample.events_per_second == 50.0
    assert sample.eta_seconds == 30.0
    assert Sample(10, None, 5, 1.0).eta_seconds is None  # standard input: size unknown


def test_log_lines_say_share_read_events_rate_and_time_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="destination.runner.meter")
    LogLines().sample(Sample(bytes_read=250, total_bytes=1000, events=12_000, seconds=100.0))
    assert "progress: 25% read, 12,000 events finished (120/s), about 5:00 left" in caplog.text


def test_the_terminal_bar_shows_events_and_their_rate() -> None:
    out = io.StringIO()
    bar = TerminalBar(out)
    bar.sample(Sample(bytes_read=500, total_bytes=1000, events=2500, seconds=5.0))
    bar.close()
    assert "2,500 events, 500/s" in out.getvalue()
    assert "50%" in out.getvalue()


@pytest.mark.usefixtures("served")
def test_sync_with_v_and_no_terminal_logs_progress_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text(audience_events(30))
    argv = ["sync", "-v", "--mapping", str(write_mapping(tmp_path)), "--events", str(events)]

    assert main(argv, stdout=io.StringIO()) == 0

    assert "progress: 100% read, 30 events finished" in capsys.readouterr().err


@pytest.mark.usefixtures("served")
def test_sync_on_a_terminal_draws_a_bar(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text(audience_events(30))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = ["sync", "--mapping", str(write_mapping(tmp_path)), "--events", str(events)]

    assert main(argv, stdout=io.StringIO()) == 0

    assert "30 events" in capsys.readouterr().err
