"""A real, throw-away PostgreSQL server on loopback for the warehouse-sync tests.

The session fixture ``postgres_url`` runs Debian's ``initdb`` into a fresh folder under
/tmp, starts the server with ``pg_ctl`` on a free port of 127.0.0.1 only (its Unix socket
inside that folder), and yields ``postgresql://USER:PASSWORD@127.0.0.1:PORT/DBNAME``.
The user logs in with a random password (SCRAM, for TCP and the socket alike), so a test
can check that the password never reaches output. At the end of the session the server
is stopped (``pg_ctl stop -m fast``) and the folder removed, whatever the tests did.

``initdb`` refuses to run as root: as root, the server's programs run as the
``postgres`` system user (or ``nobody``) through ``runuser``, in a folder given to it.
Durability is switched off (``--no-sync``, ``fsync=off``): nothing here outlives the run.

Without the server's programs (Debian's ``postgresql`` package) the tests that use the
fixture are skipped with the reason, unless ``REQUIRE_POSTGRES=1`` (set by ``.ci/run``,
which installs the package), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

try:
    import psycopg
except ImportError:  # reported by ``unavailable_reason``
    psycopg = None

# Debian installs each major version's server programs here (not on PATH).
DEBIAN_ROOT = Path("/usr/lib/postgresql")
PROGRAMS = ("initdb", "pg_ctl", "postgres")
USER = "warehouse_user"
DATABASE = "warehouse"
OTHER_DATABASE = "other_warehouse"
# Accounts that may own the cluster when the tests run as root, in order of preference.
UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")
# Only so that a broken server fails the session instead of hanging it.
START_TIMEOUT_SECONDS = 60
# Server settings for a disposable cluster: loopback only, and no waiting for the disk.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where it listens, who may log in, and the folder that holds it.

    The password (and the URLs that carry it) stay out of ``repr``, so that a failing
    test's report does not print it.
    """

    port: int
    user: str
    password: str = field(repr=False)
    database: str
    other_database: str
    directory: Path
    host: str = "127.0.0.1"

    def url_for(self, database: str) -> str:
        """The SQLAlchemy-style URL of ``database`` on this server, password included."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(database, safe='')}"
        )

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    @property
    def other_url(self) -> str:
        return self.url_for(self.other_database)


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    Looks where Debian puts them (``pg_config --bindir``, then the newest
    /usr/lib/postgresql/*/bin), then on PATH (a source build or another distribution).
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            )
            candidates.append(Path(done.stdout.strip()))
    if DEBIAN_ROOT.is_dir():
        versions = [path for path in DEBIAN_ROOT.iterdir() if path.name.isdigit()]
        candidates += [path / "bin" for path in sorted(versions, key=lambda p: -int(p.name))]
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / program, os.X_OK) for program in PROGRAMS):
            return bindir
    return None


def unprivileged_account() -> str | None:
    """The account to run the server as when we are root (None if there is none)."""
    for name in UNPRIVILEGED_ACCOUNTS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    if find_bindir() is None:
        return (
            f"PostgreSQL's {', '.join(PROGRAMS)} were found neither by pg_config, nor in "
            f"{DEBIAN_ROOT}/*/bin, nor on PATH (apt-get install postgresql)"
        )
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root, and runuser (to start the server as another user) is missing"
        if unprivileged_account() is None:
            names = " or ".join(UNPRIVILEGED_ACCOUNTS)
            return f"running as root, and there is no {names} account to run the server as"
    if psycopg is None:
        return "psycopg is not installed (pip install -e '.[test]')"
    return None


def skip_or_fail(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when ``REQUIRE_POSTGRES=1`` (CI)."""
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(f"no PostgreSQL server: {reason}")


def free_loopback_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on at the moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _Runner:
    """Runs the server's programs as the account that owns the cluster."""

    def __init__(self, bindir: Path, account: str | None) -> None:
        self.bindir = bindir
        self.account = account
        # The developer's PG* variables (PGPORT, PGDATA, PGHOST...) must not steer the
        # programs; everything they need is given on their command line.
        self.environment = {
            name: value for name, value in os.environ.items() if not name.startswith("PG")
        }

    def run(self, program: str, *arguments: str, cwd: Path) -> None:
        command = [str(self.bindir / program), *arguments]
        if self.account is not None:
            command = ["runuser", "-u", self.account, "--", *command]
        done = subprocess.run(
            command,
            cwd=cwd,
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(arguments)} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )


def _hand_over(path: Path, account: str | None) -> None:
    """Give ``path`` to the account that runs the server (when we are root)."""
    if account is not None:
        entry = pwd.getpwnam(account)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _initialize(runner: _Runner, directory: Path, password: str) -> Path:
    """Create the cluster in ``directory``/data; return the data folder."""
    data = directory / "data"
    password_file = directory / "password"
    password_file.write_text(password + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    _hand_over(password_file, runner.account)
    try:
        runner.run(
            "initdb",
            "--pgdata",
            str(data),
            "--username",
            USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            cwd=directory,
        )
    finally:
        password_file.unlink()
    socket_dir = directory / "socket"
    socket_dir.mkdir(mode=0o700)
    _hand_over(socket_dir, runner.account)
    with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("\n# tests/postgres_server.py: a disposable cluster on loopback\n")
        for name, value in {**SETTINGS, "unix_socket_directories": f"'{socket_dir}'"}.items():
            conf.write(f"{name} = {value}\n")
    return data


def _start(runner: _Runner, directory: Path, data: Path) -> int:
    """Start the server on a free port of 127.0.0.1; return the port.

    Another process may take the chosen port between the probe and the server's bind:
    then the next free port is tried.
    """
    log = directory / "server.log"
    failure: RuntimeError | None = None
    for _attempt in range(3):
        port = free_loopback_port()
        try:
            runner.run(
                "pg_ctl",
                "start",
                "--pgdata",
                str(data),
                "--wait",
                f"--timeout={START_TIMEOUT_SECONDS}",
                f"--log={log}",
                f"--options=-c port={port}",
                cwd=directory,
            )
        except RuntimeError as error:
            log_text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            failure = RuntimeError(f"{error}\nserver log:\n{log_text}")
            if "Address already in use" not in log_text:
                break
        else:
            return port
    assert failure is not None
    raise failure


def _stop(runner: _Runner, directory: Path, data: Path) -> None:
    """Stop the server: fast (open sessions are rolled back), else immediately."""
    try:
        runner.run("pg_ctl", "stop", "--pgdata", str(data), "--mode=fast", "--wait", cwd=directory)
    except RuntimeError:
        runner.run("pg_ctl", "stop", "--pgdata", str(data), "--mode=immediate", cwd=directory)


def _create_databases(server: PostgresServer) -> None:
    with psycopg.connect(server.url_for("postgres"), autocommit=True) as connection:
        for name in (server.database, server.other_database):
            connection.execute(f'CREATE DATABASE "{name}"')


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Initialize and start a throw-away server; on leaving, stop it and delete it.

    The caller checks ``unavailable_reason()`` first. Leaving by an exception also stops
    the server and removes its folder.
    """
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(unavailable_reason())
    account = unprivileged_account() if os.geteuid() == 0 else None
    runner = _Runner(bindir, account)
    directory = Path(tempfile.mkdtemp(prefix="tiktok-audiences-pg-", dir="/tmp"))
    try:
        _hand_over(directory, account)
        password = secrets.token_urlsafe(24)
        data = _initialize(runner, directory, password)
        port = _start(runner, directory, data)
        try:
            server = PostgresServer(
                port=port,
                user=USER,
                password=password,
                database=DATABASE,
                other_database=OTHER_DATABASE,
                directory=directory,
            )
            _create_databases(server)
            yield server
        finally:
            _stop(runner, directory, data)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole session (skipped, or failed under REQUIRE_POSTGRES=1,
    when it cannot run here)."""
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://USER:PASSWORD@127.0.0.1:PORT/DBNAME`` of the session's server."""
    return postgres_server.url
