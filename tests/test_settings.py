"""Tests of settings resolution (destination.settings): flags over environment over file,
all problems in one error, the token kept out of every text form.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from destination.errors import ConfigurationError
from destination.settings import (
    DEFAULT_BASE_URL,
    ENVIRONMENT,
    Secret,
    Settings,
    resolve_settings,
)

TOKEN = "tok-secret-123"

FILE_SETTINGS: dict[str, Any] = {
    "base_url": "https://file.example.com",
    "advertiser_id": "1001",
    "audience_id": "2001",
    "batch_size": 100,
    "default_phone_region": "US",
    "audience_state": "/file/audiences.json",
}

ENVIRONMENT_VALUES = {
    "TIKTOK_API_BASE_URL": "https://env.example.com",
    "TIKTOK_ADVERTISER_ID": "1002",
    "TIKTOK_AUDIENCE_ID": "2002",
    "TIKTOK_BATCH_SIZE": "200",
    "TIKTOK_DEFAULT_PHONE_REGION": "GB",
    "TIKTOK_AUDIENCE_STATE": "/env/audiences.json",
}

OVERRIDES: dict[str, Any] = {
    "base_url": "https://flag.example.com",
    "advertiser_id": "1003",
    "audience_id": "2003",
    "batch_size": 300,
    "default_phone_region": "DE",
    "audience_state": "/flag/audiences.json",
}


def resolve(
    file_settings: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    need_token: bool = False,
) -> Settings:
    return resolve_settings(
        file_settings or {},
        environ=environ or {},
        overrides=overrides or {},
        need_token=need_token,
    )


def problems_of(error: ConfigurationError) -> list[str]:
    """The problems listed by a ConfigurationError from resolve_settings (one line)."""
    text = str(error)
    assert "\n" not in text
    return text.removeprefix("invalid settings: ").split("; ")


def test_developer_environment_does_not_leak_into_tests(isolated_environment: Path) -> None:
    assert not [name for name in os.environ if name.startswith("TIKTOK_")]
    assert os.environ["XDG_STATE_HOME"] == str(isolated_environment)


def test_environment_variable_names_are_the_documented_ones() -> None:
    assert dict(ENVIRONMENT) == {
        "base_url": "TIKTOK_API_BASE_URL",
        "advertiser_id": "TIKTOK_ADVERTISER_ID",
        "audience_id": "TIKTOK_AUDIENCE_ID",
        "batch_size": "TIKTOK_BATCH_SIZE",
        "default_phone_region": "TIKTOK_DEFAULT_PHONE_REGION",
        "audience_state": "TIKTOK_AUDIENCE_STATE",
        "qps": "TIKTOK_QPS",
        "concurrency": "TIKTOK_CONCURRENCY",
        "workers": "TIKTOK_WORKERS",
        "route": "TIKTOK_ROUTE",
    }


def test_defaults_apply_when_no_source_sets_anything(isolated_environment: Path) -> None:
    settings = resolve(environ={"XDG_STATE_HOME": str(isolated_environment)})

    assert settings == Settings()
    assert settings.base_url == DEFAULT_BASE_URL == "https://business-api.tiktok.com"
    assert settings.advertiser_id is None
    assert settings.audience_id is None
    assert settings.batch_size == 1000
    assert settings.default_phone_region is None
    assert settings.phone_format == "e164"
    assert settings.qps == 10.0
    assert settings.max_attempts == 5
    assert settings.access_token is None
    assert settings.audience_state == isolated_environment / "tiktok-audiences" / "audiences.json"


def test_file_settings_are_used_when_nothing_overrides_them() -> None:
    settings = resolve(FILE_SETTINGS)

    assert settings.base_url == "https://file.example.com"
    assert settings.advertiser_id == "1001"
    assert settings.audience_id == "2001"
    assert settings.batch_size == 100
    assert settings.default_phone_region == "US"
    assert settings.audience_state == Path("/file/audiences.json")


def test_environment_overrides_the_file() -> None:
    settings = resolve(FILE_SETTINGS, ENVIRONMENT_VALUES)

    assert settings.base_url == "https://env.example.com"
    assert settings.advertiser_id == "1002"
    assert settings.audience_id == "2002"
    assert settings.batch_size == 200
    assert settings.default_phone_region == "GB"
    assert settings.audience_state == Path("/env/audiences.json")


@pytest.mark.parametrize(
    ("variable", "raw", "name", "expected"),
    [
        ("TIKTOK_API_BASE_URL", "https://sandbox-ads.tiktok.com/", "base_url",
         "https://sandbox-ads.tiktok.com"),
        ("TIKTOK_ADVERTISER_ID", "777", "advertiser_id", "777"),
        ("TIKTOK_AUDIENCE_ID", "888", "audience_id", "888"),
        ("TIKTOK_BATCH_SIZE", " 10000 ", "batch_size", 10000),
        ("TIKTOK_DEFAULT_PHONE_REGION", "fr", "default_phone_region", "FR"),
        ("TIKTOK_AUDIENCE_STATE", "/tmp/a.json", "audience_state", Path("/tmp/a.json")),
    ],
)  # fmt: skip
def test_each_environment_variable_overrides_its_setting_with_the_right_type(
    variable: str, raw: str, name: str, expected: Any
) -> None:
    settings = resolve(FILE_SETTINGS, {variable: raw})

    value = getattr(settings, name)
    assert value == expected
    assert type(value) is type(expected)


def test_blank_environment_variable_does_not_override_the_file() -> None:
    settings = resolve(FILE_SETTINGS, {"TIKTOK_BATCH_SIZE": "  ", "TIKTOK_ADVERTISER_ID": ""})

    assert settings.batch_size == 100
    assert settings.advertiser_id == "1001"


def test_flags_override_the_environment() -> None:
    settings = resolve(FILE_SETTINGS, ENVIRONMENT_VALUES, OVERRIDES)

    assert settings.base_url == "https://flag.example.com"
    assert settings.advertiser_id == "1003"
    assert settings.audience_id == "2003"
    assert settings.batch_size == 300
    assert settings.default_phone_region == "DE"
    assert settings.audience_state == Path("/flag/audiences.json")


def test_flags_of_none_are_ignored() -> None:
    overrides = dict.fromkeys(OVERRIDES)

    settings = resolve(FILE_SETTINGS, ENVIRONMENT_VALUES, overrides)

    assert settings.advertiser_id == "1002"
    assert settings.batch_size == 200
    assert settings.base_url == "https://env.example.com"
    assert settings.audience_state == Path("/env/audiences.json")


def test_audience_state_expands_the_home_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    settings = resolve(environ={"TIKTOK_AUDIENCE_STATE": "~/audiences.json"})

    assert settings.audience_state == tmp_path / "home" / "audiences.json"


def test_token_comes_from_the_environment_as_a_secret() -> None:
    settings = resolve(environ={"TIKTOK_ACCESS_TOKEN": f"  {TOKEN}\n"}, need_token=True)

    assert settings.access_token == Secret(TOKEN)
    assert settings.access_token is not None
    assert settings.access_token.reveal() == TOKEN


def test_missing_token_is_fine_when_no_token_is_needed() -> None:
    assert resolve(need_token=False).access_token is None


@pytest.mark.parametrize("environ", [{}, {"TIKTOK_ACCESS_TOKEN": "   "}], ids=["unset", "blank"])
def test_missing_token_when_needed_names_the_variable(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve(environ=environ, need_token=True)

    assert "TIKTOK_ACCESS_TOKEN" in str(caught.value)
    assert len(problems_of(caught.value)) == 1


def test_reports_every_problem_in_one_error() -> None:
    environ = {
        "TIKTOK_BATCH_SIZE": "lots",
        "TIKTOK_API_BASE_URL": "http://example.com",
    }

    with pytest.raises(ConfigurationError) as caught:
        resolve({"default_phone_region": "USA"}, environ, need_token=True)

    message = str(caught.value)
    assert "TIKTOK_BATCH_SIZE='lots'" in message
    assert "default_phone_region" in message
    assert "'USA'" in message
    assert "http://example.com" in message
    assert "TIKTOK_ACCESS_TOKEN" in message
    assert len(problems_of(caught.value)) >= 4


def test_non_numeric_batch_size_is_reported_once_with_the_value_given() -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve(environ={"TIKTOK_BATCH_SIZE": "lots"})

    assert problems_of(caught.value) == ["TIKTOK_BATCH_SIZE='lots' is not a number"]


@pytest.mark.parametrize("batch_size", [0, -1, 10_001])
def test_refuses_batch_size_outside_1_to_10000(batch_size: int) -> None:
    with pytest.raises(ConfigurationError, match="batch_size must be a whole number"):
        resolve(overrides={"batch_size": batch_size})


@pytest.mark.parametrize("batch_size", [1, 10_000])
def test_accepts_batch_size_at_the_limits(batch_size: int) -> None:
    assert resolve(overrides={"batch_size": batch_size}).batch_size == batch_size


@pytest.mark.parametrize("region", ["USA", "U", "1A", ""])
def test_refuses_region_that_is_not_two_letters(region: str) -> None:
    with pytest.raises(ConfigurationError, match="default_phone_region"):
        resolve({"default_phone_region": region})


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"file_settings": {"default_phone_region": "us"}}, "US"),
        ({"environ": {"TIKTOK_DEFAULT_PHONE_REGION": "gb"}}, "GB"),
        ({"overrides": {"default_phone_region": "dE"}}, "DE"),
    ],
    ids=["file", "environment", "flag"],
)
def test_region_is_upper_cased_from_any_source(sources: dict[str, Any], expected: str) -> None:
    assert resolve(**sources).default_phone_region == expected


@pytest.mark.parametrize("base_url", ["http://example.com", "http://10.0.0.1", "ftp://x.example"])
def test_refuses_base_url_that_is_not_https_off_loopback(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        resolve(environ={"TIKTOK_API_BASE_URL": base_url})


def test_accepts_plain_http_to_loopback_for_the_fake_server() -> None:
    settings = resolve(overrides={"base_url": "http://127.0.0.1:8080/"})

    assert settings.base_url == "http://127.0.0.1:8080"


def test_settings_text_forms_never_show_the_token() -> None:
    settings = resolve(FILE_SETTINGS, {"TIKTOK_ACCESS_TOKEN": TOKEN}, need_token=True)

    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert TOKEN not in text
        assert "Secret('***')" in text


def test_configuration_error_never_shows_the_token() -> None:
    environ = {"TIKTOK_ACCESS_TOKEN": TOKEN, "TIKTOK_BATCH_SIZE": "0"}

    with pytest.raises(ConfigurationError) as caught:
        resolve(environ=environ, need_token=True)

    assert TOKEN not in str(caught.value)
    assert "batch_size" in str(caught.value)


def test_secret_hides_its_value_in_every_text_form() -> None:
    secret = Secret(TOKEN)

    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"
    assert f"{secret}" == "Secret('***')"
    assert TOKEN not in repr([secret, {"token": secret}])
    assert secret.reveal() == TOKEN


def test_secrets_are_equal_only_to_secrets_with_the_same_value() -> None:
    assert Secret(TOKEN) == Secret(TOKEN)
    assert hash(Secret(TOKEN)) == hash(Secret(TOKEN))
    assert Secret(TOKEN) != Secret("other")
    assert Secret(TOKEN) != TOKEN
    assert len({Secret(TOKEN), Secret(TOKEN), Secret("other")}) == 2


def test_settings_are_frozen() -> None:
    settings = resolve(FILE_SETTINGS)

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch_size = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.access_token = Secret("x")  # type: ignore[misc]
    assert settings.batch_size == 100


def test_resolving_does_not_change_the_sources() -> None:
    file_settings = dict(FILE_SETTINGS)
    environ = dict(ENVIRONMENT_VALUES)
    overrides = dict(OVERRIDES)

    resolve(file_settings, environ, overrides)

    assert file_settings == FILE_SETTINGS
    assert environ == ENVIRONMENT_VALUES
    assert overrides == OVERRIDES


def test_malformed_base_url_is_reported_with_the_other_problems() -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve(environ={"TIKTOK_API_BASE_URL": "http://[::1"}, need_token=True)

    assert "TIKTOK_ACCESS_TOKEN" in str(caught.value)
    assert "[::1" in str(caught.value)
