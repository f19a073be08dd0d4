"""Settings from the environment and flags are held to the ranges a mapping file is
(issue 14): ``TIKTOK_QPS=nan`` or ``-1`` turned the rate limit off, ``1e-9`` hung the run,
``--concurrency 0`` or ``100000`` was taken."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from destination.cli import main
from destination.errors import ConfigurationError
from destination.settings import resolve_settings
from tests.test_sync import audience_event, write_events, write_mapping


def resolve(environ: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> Any:
    return resolve_settings({}, environ=environ or {}, overrides=overrides or {}, need_token=False)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf"])
def test_a_qps_that_is_not_a_finite_number_is_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=f"TIKTOK_QPS='{raw}' is not a number"):
        resolve({"TIKTOK_QPS": raw})


@pytest.mark.parametrize("raw", ["-1", "1e-9", "0.05", "1001"])
def test_a_qps_out_of_range_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve({"TIKTOK_QPS": raw})
    assert str(caught.value) == (
        "invalid settings: qps must be 0 or a number from 0.1 to 1000, "
        f"got {float(raw)!r} (from TIKTOK_QPS)"
    )


@pytest.mark.parametrize(("raw", "qps"), [("0", 0.0), ("0.1", 0.1), ("10", 10.0), ("1000", 1000.0)])
def test_a_qps_in_range_is_taken(raw: str, qps: float) -> None:
    assert resolve({"TIKTOK_QPS": raw}).qps == qps


@pytest.mark.parametrize("concurrency", [0, -3, 65, 100_000])
def test_a_concurrency_flag_out_of_range_is_refused(concurrency: int) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve(overrides={"concurrency": concurrency})
    assert str(caught.value) == (
        "invalid settings: concurrency must be a whole number from 1 to 64, "
        f"got {concurrency} (from --concurrency)"
    )


def test_every_setting_out_of_range_is_reported_together() -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve(
            {"TIKTOK_CONCURRENCY": "0", "TIKTOK_QPS": "-1", "TIKTOK_WORKERS": "99"},
            overrides={"batch_size": 0},
        )
    problems = str(caught.value).removeprefix("invalid settings: ").split("; ")
    assert [p.split(" ", 1)[0] for p in problems] == ["batch_size", "concurrency", "qps", "workers"]
    assert 'workers must be "auto" or a whole number from 0 to 64, got 99' in problems[3]


def test_the_cli_refuses_a_zero_concurrency_before_sending_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path / "events.ndjson", [audience_event("u1")])
    argv = ["sync", "--mapping", str(write_mapping(tmp_path)), "--events", str(events)]

    code = main([*argv, "--concurrency", "0", "--dry-run"], stdout=io.StringIO())

    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "concurrency must be a whole number from 1 to 64, got 0 (from --concurrency)" in line
