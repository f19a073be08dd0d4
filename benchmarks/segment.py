"""Side by side: Segment's published TikTok Audiences destination on the benchmark's file.

Runs ``benchmarks/segment/bench.mjs`` in one node process, timed whole (node's start,
loading Segment's modules, reading the file, everything), over the same NDJSON file as
``benchmarks.run``. It routes each event with Segment's FQL by our mapping file's
subscriptions (``mappings/segment-native.json``) to the npm package
``@segment/action-destinations``'s own ``addToAudience`` / ``removeFromAudience`` actions,
in batches of 1000 through the framework's batch entry point (``Destination.executeBatch``:
map, drop empty values, validate, ``performBatch``), 4 batches in flight as our
``concurrency`` setting. Modes:

- ``http``: every request goes over HTTP to a mock TikTok on 127.0.0.1 in this Python
  process (not the measured one, as ``benchmarks.run``'s fake is a process of its own),
  which counts the users each request carries and answers TikTok's success envelope;
- ``dry-run``: every request is built, then answered inside the node process by a stub that
  counts its users (the time spent counting is reported, part of the wall time).

The package is installed into ``benchmarks/segment/node_modules`` with ``npm ci`` (versions
pinned in ``package.json`` and ``package-lock.json``) on first use. Without ``node`` or
``npm``, or if the install fails, the run is skipped with the reason printed. Two
``overrides`` in ``package.json`` make the published package install and run: its exact
``@aws-sdk/client-kinesis`` version is not served by the registry (a nearby one is used;
TikTok Audiences never loads it), and ``fast-uri`` 3.1.6 and later refuse the schema keys
Segment's framework gives ajv ("TikTok Audiences:Add to Audience": every payload would fail
validation with "URI scheme is malformed."), so it stays at 3.1.5.

    python -m benchmarks.segment --events 200000 [--mode http|dry-run]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/segment.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.generate import cached_events
from benchmarks.run import read_and_wait

__all__ = ["SegmentResult", "ensure_installed", "main", "run_segment"]

REPO = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).resolve().parent / "segment"
PACKAGE = "@segment/action-destinations"
NATIVE_MAPPING = REPO / "mappings" / "segment-native.json"
TOKEN = "demo-access-token"  # noqa: S105 (sent to the loopback mock only)
MAPPING_PATH = "/open_api/v1.3/segment/mapping/"
SUCCESS = b'{"code":0,"message":"OK","data":{}}'
EVENT_NAMES = ("Audience Entered", "Audience Exited")
INSTALL_TIMEOUT_S = 900
MODES = ("http", "dry-run")


@dataclass(frozen=True)
class SegmentResult:
    """One timed run of Segment's destination over one file.

    ``users_expected`` comes from reading the file here (the Audience Entered / Exited
    events: each carries an email, so each should become one user in some request);
    ``users_received`` from the mock endpoint (the sum of ``batch_data`` lengths over
    requests). ``dropped`` is what Segment's code did not send or answered with an error.
    """

    mode: str
    version: str  # of @segment/action-destinations
    node: str
    events: int
    wall_s: float  # Popen to wait4: node's start and module loading included
    cpu_s: float  # user + system of the node process (wait4)
    peak_rss_mb: float  # ru_maxrss of the node process
    requests: int
    users_expected: int
    users_received: int
    failed: int  # per-event results of executeBatch that were not 2xx
    failures: dict[str, int]  # their messages, with counts
    node_start_s: float  # from node's start until our script's first line (part of wall_s)
    loaded_s: float  # from node's start until Segment's modules are loaded (part of wall_s)
    run_s: float  # reading, routing and sending, measured inside node (part of wall_s)
    stub_s: float  # dry-run: the stub's JSON parsing to count users (part of run_s)
    ids_sent: dict[str, int]  # http: non-empty identifiers per id_schema entry

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0

    @property
    def dropped(self) -> int:
        return max(self.users_expected - self.users_received, 0) + self.failed

    @property
    def problems(self) -> list[str]:
        """Why the counts do not add up; empty when they do."""
        found = []
        if self.users_received != self.users_expected:
            found.append(
                f"the endpoint received {self.users_received:,} users, "
                f"{self.users_expected:,} expected"
            )
        if self.failed:
            found.append(f"{self.failed:,} events failed in Segment's code: {self.failures}")
        return found


# ------------------------------------------------------------------------ installation


def _pinned_version() -> str:
    manifest = json.loads((PROJECT / "package.json").read_text("utf-8"))
    return str(manifest["dependencies"][PACKAGE])


def _installed_version() -> str | None:
    manifest = PROJECT / "node_modules" / PACKAGE / "package.json"
    if not manifest.is_file():
        return None
    return str(json.loads(manifest.read_text("utf-8"))["version"])


def ensure_installed() -> str | None:
    """Install the pinned packages unless they are there; the reason it cannot, or None.

    ``npm ci`` installs exactly ``package-lock.json``; ``--ignore-scripts`` because
    nothing the destination needs is built at install time (ssh2's optional native
    parts are not used by TikTok Audiences).
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are needed (not found on PATH)"
    if _installed_version() == _pinned_version():
        return None
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    print(f"installing {PACKAGE} {_pinned_version()} into {PROJECT}/node_modules (npm ci)")
    try:
        # npm from PATH with fixed arguments, in our own folder
        done = subprocess.run(  # noqa: S603
            command,
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm ci failed: {exc}"
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return f"npm ci failed (exit {done.returncode}): {tail}"
    if _installed_version() != _pinned_version():
        return f"npm ci did not install {PACKAGE} {_pinned_version()}"
    return None


# --------------------------------------------------------------- the mock TikTok (http)


class _Tally:
    """What the mock endpoint received, across its handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.users = 0
        self.ids: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def count(self, body: dict[str, Any]) -> None:
        schema = body["id_schema"]
        users = body["batch_data"]
        ids: Counter[str] = Counter()
        for user in users:
            for name, entry in zip(schema, user, strict=True):
                if entry:
                    ids[name] += 1
        with self.lock:
            self.requests += 1
            self.users += len(users)
            self.ids.update(ids)

    def refuse(self, why: str) -> None:
        with self.lock:
            self.refused[why] += 1


def _handler(tally: _Tally) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """TikTok's ``segment/mapping`` endpoint, unchecked beyond the token: a success."""

        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length")
            body = self.rfile.read(int(length)) if length else b""
            if self.path != MAPPING_PATH:
                tally.refuse(f"path {self.path}")
                self._answer(404, b'{"code":40400,"message":"not found","data":{}}')
            elif self.headers.get("Access-Token") != TOKEN:
                tally.refuse("token")
                self._answer(401, b'{"code":40105,"message":"bad token","data":{}}')
            else:
                tally.count(json.loads(body))
                self._answer(200, SUCCESS)

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per request would be noise."""

    return Handler


@contextmanager
def mock_tiktok() -> Iterator[tuple[str, _Tally]]:
    """A loopback HTTP server answering ``segment/mapping``; its base URL and tally."""
    tally = _Tally()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(tally))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="mock-tiktok", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tally
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------ the run


def expected_users(path: Path) -> Counter[str]:
    """Events per name in the file, read here: the users each action should send."""
    found: Counter[str] = Counter()
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                event = json.loads(line)
                if event.get("type") == "track" and event.get("event") in EVENT_NAMES:
                    found[event["event"]] += 1
    return found


@dataclass(frozen=True)
class _NodeRun:
    summary: dict[str, Any]
    wall: float
    cpu: float
    rss_mb: float


def _run_node(arguments: list[str]) -> _NodeRun:
    """Run bench.mjs once; its summary, wall time and resource usage (``wait4``)."""
    node = shutil.which("node")
    assert node is not None
    command = [node, str(PROJECT / "bench.mjs"), *arguments]
    start = time.perf_counter()
    # node from PATH running our own script with arguments we built, no shell
    process = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.PIPE)  # noqa: S603
    stdout, returncode, usage, wall = read_and_wait(process, start)
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    if returncode != 0 or not lines:
        raise RuntimeError(f"bench.mjs exited {returncode} (its stderr is above)")
    return _NodeRun(
        summary=json.loads(lines[-1]),
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
    )


def run_segment(path: Path, mode: str = "http") -> SegmentResult | None:
    """Segment's destination over ``path``, timed; None (reason printed) if it cannot run."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    reason = ensure_installed()
    if reason is not None:
        print(f"Segment's destination skipped: {reason}")
        return None
    path = path.resolve()  # node runs in benchmarks/segment
    expected = expected_users(path)
    common = ["--events", str(path), "--mapping", str(NATIVE_MAPPING), "--token", TOKEN]
    with open(path, "rb") as warm:  # from the page cache, as benchmarks.run does
        while warm.read(1 << 24):
            pass
    if mode == "http":
        with mock_tiktok() as (base_url, tally):
            run = _run_node([*common, "--mode", "http", "--base-url", base_url])
        if tally.refused:
            raise RuntimeError(f"the mock refused requests: {dict(tally.refused)}")
        received, ids = tally.users, dict(tally.ids)
    else:
        run = _run_node([*common, "--mode", "dry-run"])
        received, ids = int(run.summary["stub_users"]), {}
    summary = run.summary
    return SegmentResult(
        mode=mode,
        version=str(summary["version"]),
        node=str(summary["node"]),
        events=int(summary["lines"]),
        wall_s=run.wall,
        cpu_s=run.cpu,
        peak_rss_mb=run.rss_mb,
        requests=int(summary["requests"]),
        users_expected=sum(expected.values()),
        users_received=received,
        failed=int(summary["failed"]),
        failures={str(k): int(v) for k, v in summary["failures"].items()},
        node_start_s=float(summary["startup_s"]),
        loaded_s=float(summary["loaded_s"]),
        run_s=float(summary["run_s"]),
        stub_s=float(summary["stub_s"]),
        ids_sent=ids,
    )


def describe(result: SegmentResult) -> str:
    """The figures of one run, for a terminal."""
    lines = [
        f"Segment {PACKAGE} {result.version} (node {result.node}), mode {result.mode}, "
        f"{result.events:,} events",
        f"  events/s {result.events_per_s:,.0f}   wall {result.wall_s:.2f} s   "
        f"CPU {result.cpu_s:.2f} s   peak RSS {result.peak_rss_mb:.1f} MB   "
        f"requests {result.requests:,}",
        f"  node's start {result.node_start_s:.2f} s + loading Segment's modules "
        f"{result.loaded_s - result.node_start_s:.2f} s; "
        f"reading, routing and sending {result.run_s:.2f} s"
        + (f" (the stub counting users {result.stub_s:.2f} s of it)" if result.stub_s else ""),
        f"  users: {result.users_expected:,} expected, {result.users_received:,} received "
        f"by the mock endpoint; dropped {result.dropped:,}",
    ]
    if result.ids_sent:
        sent = ", ".join(f"{name} {count:,}" for name, count in sorted(result.ids_sent.items()))
        lines.append(f"  identifiers sent: {sent}")
    lines.extend(f"  PROBLEM: {problem}" for problem in result.problems)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000, help="events in the file")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--mode", choices=MODES, default="http")
    parser.add_argument("--file", type=Path, help="an NDJSON file instead of a generated one")
    args = parser.parse_args(argv)
    path = args.file or cached_events(args.events, args.seed)
    result = run_segment(path, args.mode)
    if result is None:
        return 0
    print(describe(result))
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
