"""The throw-away PostgreSQL server of tests/postgres_server.py, checked for real.

The warehouse-sync tests trust it to be a real server that takes SQL, listens on
127.0.0.1 only, wants the password, computes MD5 and SHA-256 as hashlib does (the
fingerprint templates rely on lowercase hex), and disappears at the end.
"""

from __future__ import annotations

import hashlib
import re
import socket
from pathlib import Path

import psycopg
import pytest

from tests.clock import HANG_GUARD
from tests.postgres_server import (
    PostgresServer,
    running_postgres,
    skip_or_fail,
    unavailable_reason,
)

EMAIL = "a@example.com"


@pytest.fixture
def no_client_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """libpq must not find a password anywhere but in what the test passes."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


def test_the_url_names_a_user_with_a_password_on_loopback(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    match = re.fullmatch(r"postgresql://(\w+):([\w-]+)@127\.0\.0\.1:(\d+)/(\w+)", postgres_url)
    assert match is not None
    assert match.groups() == (
        postgres_server.user,
        postgres_server.password,
        str(postgres_server.port),
        postgres_server.database,
    )
    assert postgres_server.password not in repr(postgres_server)


def test_a_table_takes_rows_and_gives_them_back(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        connection.execute("create table round_trip (id integer primary key, email text)")
        connection.execute(
            "insert into round_trip values (%s, %s), (%s, %s)", (1, EMAIL, 2, "b@example.com")
        )
        rows = connection.execute("select id, email from round_trip order by id").fetchall()
        connection.rollback()  # leaves the shared database as it was
    assert rows == [(1, EMAIL), (2, "b@example.com")]


def test_the_second_database_is_a_separate_one(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.other_url, autocommit=True) as other:
        assert other.execute("select current_database()").fetchone() == (
            postgres_server.other_database,
        )
        other.execute("create table only_in_other (id integer)")
    try:
        with psycopg.connect(postgres_server.url) as main:
            found = main.execute("select to_regclass('only_in_other')").fetchone()
        assert found == (None,)
    finally:
        with psycopg.connect(postgres_server.other_url, autocommit=True) as other:
            other.execute("drop table only_in_other")


def test_the_server_listens_on_127_0_0_1_only(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url) as connection:
        assert connection.execute("show listen_addresses").fetchone() == ("127.0.0.1",)
        assert connection.execute("select host(inet_server_addr())").fetchone() == ("127.0.0.1",)
    # Linux routes all of 127/8 to the loopback interface: a server bound to every
    # address (or to the whole loopback) would answer on 127.0.0.2 too.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(HANG_GUARD)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.2", postgres_server.port))


@pytest.mark.usefixtures("no_client_defaults")
@pytest.mark.parametrize("password", ["", "not-the-password"])
def test_a_login_without_the_password_is_refused(
    postgres_server: PostgresServer, password: str
) -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(
            host=postgres_server.host,
            port=postgres_server.port,
            user=postgres_server.user,
            password=password,
            dbname=postgres_server.database,
        )
    message = str(refused.value)
    assert "password" in message
    assert postgres_server.password not in message
    log = (postgres_server.directory / "server.log").read_text(encoding="utf-8")
    assert postgres_server.password not in log


def test_md5_is_the_lowercase_hex_digest_of_hashlib(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("select md5(%s)", (EMAIL,)).fetchone()
    assert row == (hashlib.md5(EMAIL.encode()).hexdigest(),)


def test_sha256_encoded_as_hex_is_the_lowercase_digest_of_hashlib(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute(
            "select encode(sha256(convert_to(%s, 'UTF8')), 'hex')", (EMAIL,)
        ).fetchone()
    assert row == (hashlib.sha256(EMAIL.encode()).hexdigest(),)


def test_leaving_stops_the_server_and_removes_its_folder_even_after_an_error() -> None:
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)
    with pytest.raises(RuntimeError, match="a failing test"), running_postgres() as server:
        with psycopg.connect(server.url) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
        raise RuntimeError("a failing test")
    assert not server.directory.exists()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(HANG_GUARD)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", server.port))


def test_missing_programs_skip_the_tests_or_fail_them_under_require_postgres(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("tests.postgres_server.DEBIAN_ROOT", tmp_path / "no-postgresql")
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = unavailable_reason()
    assert reason is not None
    assert "apt-get install postgresql" in reason

    outcomes = (pytest.skip.Exception, pytest.fail.Exception)
    monkeypatch.delenv("REQUIRE_POSTGRES", raising=False)
    with pytest.raises(outcomes) as skipped:
        skip_or_fail(reason)
    assert skipped.type is pytest.skip.Exception
    assert str(skipped.value).startswith("no PostgreSQL server: PostgreSQL's initdb")
    monkeypatch.setenv("REQUIRE_POSTGRES", "1")
    with pytest.raises(outcomes) as failed:
        skip_or_fail(reason)
    assert failed.type is pytest.fail.Exception
    assert str(failed.value).startswith("REQUIRE_POSTGRES=1 but PostgreSQL's initdb")
