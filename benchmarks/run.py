"""End-to-end benchmark of ``tiktok-audiences sync`` against the fake TikTok server.

For each size: generate (or reuse) a realistic native-mode events file, measure the floor
(reading, JSON parsing and SHA-256 of the same identifiers, in this process), start the
benchmark's fake TikTok in a process of its own, run ``python -m destination sync`` as a
child process, and report events/s, requests/s, CPU seconds per million events and peak
RSS. See benchmarks/README.md.

    python -m benchmarks.run                 # 100k and 1M events over HTTP
    python -m benchmarks.run --quick         # 10k and 100k
    python -m benchmarks.run --mode http-lean  # the fake answers segment/mapping unchecked
    python -m benchmarks.run --mode dry-run  # sync --dry-run: no server, nothing sent
    python -m benchmarks.run --route python  # the Python route (default: compiled)
    python -m benchmarks.run --segment       # + Segment's destination on a 200k file, and us
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import pstats
import re
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import pyspy
from benchmarks.generate import DEFAULT_DATA_DIR, cached_events

__all__ = ["Floor", "Measurement", "floor", "main"]

REPO = Path(__file__).resolve().parent.parent
NATIVE_MAPPING = REPO / "mappings" / "segment-native.json"
DEMO_TOKEN = "demo-access-token"  # noqa: S105 (the fake server's demo token, accepted by it alone)
BENCH_SETTINGS: dict[str, Any] = {
    "qps": 0,  # no pacing: we measure the destination, not TikTok's rate limits
    "batch_size": 1000,
    "default_phone_region": "US",
    "concurrency": 4,
}
TARGET_EVENTS_PER_S = 150_000
TARGET_RSS_MB = 300.0  # issue 19: every process of the sync, DuckDB included
TARGET_SEGMENT_RATIO = 10.0  # issue 19: whole process, the same 200k-event file
SEGMENT_SIZE = 200_000
TARGET_RSS_GROWTH = 1.10  # the 1M run's peak RSS within 10% of the 100k run's
TARGET_FLOOR_RATIO = 2.0
SAMPLE_SECONDS = 0.05
MB = 1024 * 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- the floor


def destination_json_library() -> str:
    """``orjson`` when the destination parses events with it, else ``json``."""
    reader = REPO / "destination" / "runner" / "reader.py"
    pattern = re.compile(r"^\s*(import orjson|from orjson import)", re.MULTILINE)
    if pattern.search(reader.read_text("utf-8")):
        return "orjson"
    return "json"


def _loader(library: str) -> Callable[[bytes], Any]:
    if library == "orjson":
        import orjson  # noqa: PLC0415 (only when the destination itself uses it)

        return orjson.loads
    return lambda data: json.loads(data.decode("utf-8"))


@dataclass(frozen=True)
class Floor:
    events: int
    identifiers: int
    wall: float
    cpu: float
    library: str
    notes: tuple[str, ...] = ()

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall if self.wall else 0.0


def warm(path: Path) -> None:
    """Read the whole file once, so that it is in the page cache for what follows."""
    with path.open("rb", buffering=0) as stream:
        while stream.read(1 << 20):
            pass


def best_floor(path: Path, runs: int = 3) -> Floor:
    """The fastest of ``runs`` floors (the file warmed first), with any interference seen."""
    warm(path)
    results = []
    for _ in range(runs):
        busy, own = _busy_cpu_seconds(), time.process_time()
        result = floor(path)
        others = _busy_cpu_seconds() - busy - (time.process_time() - own)
        notes = [] if (note := _interference(others, result.wall)) is None else [note]
        if result.wall > result.cpu * 1.3 + 0.05:
            notes.append(
                f"the floor waited {result.wall - result.cpu:.2f} s off the CPU (reading the "
                "file from disk, or a busy machine)"
            )
        results.append(replace(result, notes=tuple(notes)))
    return min(results, key=lambda result: result.wall)


def floor(path: Path, library: str | None = None) -> Floor:
    """Read ``path`` line by line, parse each line, SHA-256 each identifier; nothing else."""
    library = library or destination_json_library()
    loads = _loader(library)
    sha256 = hashlib.sha256
    events = identifiers = 0
    cpu_start = time.process_time()
    start = time.perf_counter()
    with path.open("rb") as stream:
        for line in stream:
            event = loads(line)
            events += 1
            context = event.get("context") or {}
            traits = context.get("traits") or {}
            device = context.get("device") or {}
            for value in (traits.get("email"), traits.get("phone"), device.get("advertisingId")):
                if isinstance(value, str):
                    sha256(value.encode()).hexdigest()
                    identifiers += 1
    wall = time.perf_counter() - start
    return Floor(events, identifiers, wall, time.process_time() - cpu_start, library)


# ------------------------------------------------------------------------ process trees


def _proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmRSS, VmHWM), 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (state is [0], ppid [1])."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _cpu_ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def _cpu_seconds_of(pid: int) -> float:
    """User + system CPU seconds of a live process (its own threads, not its children)."""
    try:
        return _cpu_ticks(_stat_fields(pid)) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all CPUs, from /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal ...
    busy = sum(int(value) for index, value in enumerate(fields[1:9]) if index not in (3, 4))
    return busy / _CLOCK_TICKS


def _interference(others_cpu: float, wall: float) -> str | None:
    """A note when other processes were busy for more than 5% of a core during ``wall``."""
    if others_cpu <= 0.05 * wall + 0.2:
        return None
    return (
        f"other processes used {others_cpu:.1f} CPU s meanwhile ({others_cpu / wall:.0%} of a "
        "core): the figures are not reliable"
    )


def _process_tree(root: int) -> dict[int, int]:
    """``root`` and every live process below it, each with its CPU ticks so far.

    This kernel has no /proc/<pid>/task/*/children, so the whole of /proc is read.
    """
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry.name)
            parent = int(fields[1])
            ticks[int(entry.name)] = _cpu_ticks(fields)
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found = [root]
    for pid in found:  # grows while iterating: breadth first
        found.extend(children.get(pid, ()))
    return {pid: ticks[pid] for pid in found if pid in ticks}


class TreeSampler(threading.Thread):
    """Samples a process tree every ``interval`` seconds: peak RSS, CPU of every process.

    The CPU seen per process catches processes its parent never waits for (``wait4``
    counts only waited ones), up to one interval late.
    """

    def __init__(self, root: int, interval: float = SAMPLE_SECONDS) -> None:
        super().__init__(name=f"rss-sampler-{root}", daemon=True)
        self.root = root
        self.interval = interval
        self.peak_sum_kb = 0
        self.peak_root_kb = 0
        self.most_processes = 0
        self.ticks: dict[int, int] = {}
        self._stop_event = threading.Event()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.ticks.values()) / _CLOCK_TICKS

    def sample(self) -> None:
        tree = _process_tree(self.root)
        sizes = {pid: _proc_status_kb(pid, "VmRSS") for pid in tree}
        self.peak_sum_kb = max(self.peak_sum_kb, sum(sizes.values()))
        self.peak_root_kb = max(self.peak_root_kb, sizes.get(self.root, 0))
        self.most_processes = max(self.most_processes, sum(1 for size in sizes.values() if size))
        for pid, ticks in tree.items():
            self.ticks[pid] = max(ticks, self.ticks.get(pid, 0))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


# ------------------------------------------------------------------------- the server


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    cpu_at_start: float = 0.0

    def cpu_seconds(self) -> float:
        return _cpu_seconds_of(self.process.pid) - self.cpu_at_start

    def peak_rss_mb(self) -> float:
        return _proc_status_kb(self.process.pid, "VmHWM") / 1024


def _wait_ready(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        left = deadline - time.monotonic()
        if left <= 0 or process.poll() is not None:
            raise RuntimeError("the fake server did not start (see its stderr above)")
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the fake server exited before listening")
            buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"unexpected first line from the fake server: {line!r}")
    return line.removeprefix("listening on ")


def _probe(base_url: str, timeout: float) -> None:
    """Wait until the server answers an HTTP request (any answer will do)."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    url = f"{base_url}/open_api/v1.3/user/info/"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 (http://127.0.0.1 only)
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def fake_server(
    env: Mapping[str, str], *, lean: bool = False, timeout: float = 30.0
) -> Iterator[Server]:
    """The benchmark's fake TikTok in a process of its own, on a free loopback port."""
    command = [sys.executable, "-m", "benchmarks.fake_server", "--port", "0"]
    if lean:
        command.append("--lean")
    # our own interpreter and module, no shell, fixed arguments
    process = subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE)  # noqa: S603
    try:
        base_url = _wait_ready(process, timeout)
        _probe(base_url, timeout)
        yield Server(process, base_url, _cpu_seconds_of(process.pid))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# --------------------------------------------------------------------------- the sync


@dataclass
class Measurement:
    size: int
    mode: str
    wall: float
    cpu: float
    rss_tree_mb: float  # peak of the sum of VmRSS over the sync's process tree (sampled)
    rss_main_mb: float  # ru_maxrss of the sync (the largest of it and its waited children)
    processes: int
    summary: dict[str, Any]
    floor: Floor
    server_cpu: float | None = None
    server_rss_mb: float | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.size / self.wall

    @property
    def requests(self) -> int:
        return int(self.summary.get("requests", 0))

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.wall

    @property
    def cpu_per_million(self) -> float:
        return self.cpu / self.size * 1_000_000

    @property
    def floor_ratio(self) -> float:
        return self.wall / self.floor.wall if self.floor.wall else float("inf")


@dataclass(frozen=True)
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    wall: float
    cpu: float
    ru_maxrss_mb: float
    sampler: TreeSampler


def read_and_wait(
    process: subprocess.Popen[bytes], start: float
) -> tuple[bytes, int, resource.struct_rusage, float]:
    """A started child's whole stdout, exit code, resource usage (``os.wait4``: its
    grandchildren included) and wall time since ``start``; killed if interrupted."""
    assert process.stdout is not None
    try:
        with process.stdout:
            stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    except BaseException:  # Ctrl-C: leave no child running
        process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    return stdout, process.returncode, usage, wall


def run_child(command: list[str], env: Mapping[str, str], stderr_path: Path) -> ChildRun:
    """Run one command; its wall time, CPU time and peak RSS, its whole tree included.

    ``os.wait4`` gives the child's resource usage including every grandchild it waited
    for (CPU summed, ``ru_maxrss`` the largest single process); the sampler adds the peak
    of the tree's summed RSS while it runs.
    """
    with stderr_path.open("wb") as stderr:
        start = time.perf_counter()
        # our own interpreter running the project's CLI, no shell, arguments we built
        process = subprocess.Popen(  # noqa: S603
            command, env=dict(env), stdout=subprocess.PIPE, stderr=stderr
        )
        sampler = TreeSampler(process.pid)
        sampler.start()
        try:
            stdout, returncode, usage, wall = read_and_wait(process, start)
        finally:
            sampler.stop()
    return ChildRun(
        returncode=returncode,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr_path.read_text("utf-8", "replace"),
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        ru_maxrss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        sampler=sampler,
    )


def _base_env() -> dict[str, str]:
    """This environment without any TIKTOK_* variable, the project on the path."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TIKTOK_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _write_mapping(directory: Path) -> Path:
    document = json.loads(NATIVE_MAPPING.read_text("utf-8"))
    document.pop("$schema", None)  # relative to mappings/, meaningless in a temp folder
    document["settings"] = {**document.get("settings", {}), **BENCH_SETTINGS}
    path = directory / "mapping.json"
    path.write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    return path


def _sync_args(mapping: Path, events: Path, work: Path, mode: str) -> list[str]:
    args = ["sync", "--mapping", str(mapping), "--events", str(events)]
    args += ["--rejected", str(work / "rejected.ndjson")]
    if mode == "dry-run":
        args.append("--dry-run")
    return args


def _check(summary: dict[str, Any], size: int) -> list[str]:
    problems = []
    received = summary.get("received")
    accounted = sum(int(summary.get(key, 0)) for key in ("delivered", "rejected", "deferred"))
    if received != size:
        problems.append(f"received {received}, the file has {size} events")
    if received != accounted:
        problems.append(f"received {received} != delivered + rejected + deferred = {accounted}")
    if summary.get("stopped"):
        problems.append(f"the run stopped: {summary['stopped']}")
    return problems


def _last_json_line(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("the sync printed no summary")
    value = json.loads(lines[-1])
    if not isinstance(value, dict):
        raise RuntimeError("the sync's last stdout line is not a JSON object")
    return value


@contextmanager
def _environment(mode: str, work: Path) -> Iterator[tuple[dict[str, str], Server | None]]:
    env = _base_env()
    env["TIKTOK_AUDIENCE_STATE"] = str(work / "audiences.json")
    env["TIKTOK_TOKEN_STORE"] = str(work / "tokens.json")  # never read: the token is set
    if mode == "dry-run":
        yield env, None
        return
    with fake_server(_base_env(), lean=mode == "http-lean") as server:
        env["TIKTOK_ACCESS_TOKEN"] = DEMO_TOKEN
        env["TIKTOK_API_BASE_URL"] = server.base_url
        yield env, server


def measure(size: int, events: Path, mode: str, floor_result: Floor) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="tiktok-bench-") as tmp:
        work = Path(tmp)
        mapping = _write_mapping(work)
        with _environment(mode, work) as (env, server):
            command = [
                sys.executable,
                "-m",
                "destination",
                *_sync_args(mapping, events, work, mode),
            ]
            warm(events)
            busy_before, own_before = _busy_cpu_seconds(), time.process_time()
            child = run_child(command, env, work / "stderr.txt")
            busy = _busy_cpu_seconds() - busy_before
            own = time.process_time() - own_before
            server_cpu = server.cpu_seconds() if server else None
            server_rss = server.peak_rss_mb() if server else None
        if child.returncode != 0:
            tail = "\n".join(child.stderr.splitlines()[-20:])
            raise RuntimeError(f"the sync exited with {child.returncode}:\n{tail}")
        summary = _last_json_line(child.stdout)
    others = busy - max(child.cpu, child.sampler.cpu_seconds) - (server_cpu or 0.0) - own
    notes = [] if (note := _interference(others, child.wall)) is None else [note]
    if server_cpu is not None and server_cpu > 0.5 * child.wall:
        notes.append(
            f"the fake server was busy {server_cpu / child.wall:.0%} of the time: on "
            f"{os.cpu_count()} CPUs it may be what bounds the throughput"
            + ("; compare --mode http-lean" if mode == "http" else "")
        )
    sampled = child.sampler.cpu_seconds
    if sampled > child.cpu * 1.05 + 0.1:
        notes.append(
            f"CPU from wait4 {child.cpu:.2f} s < {sampled:.2f} s sampled from /proc: the sync "
            "did not wait for some of its processes; reporting the sampled figure"
        )
    return Measurement(
        size=size,
        mode=mode,
        wall=child.wall,
        cpu=max(child.cpu, sampled),
        rss_tree_mb=max(child.sampler.peak_sum_kb / 1024, child.ru_maxrss_mb),
        rss_main_mb=child.ru_maxrss_mb,
        processes=max(child.sampler.most_processes, 1),
        summary=summary,
        floor=floor_result,
        server_cpu=server_cpu,
        server_rss_mb=server_rss,
        problems=_check(summary, size),
        notes=notes,
    )


def _profile_file(size: int, mode: str, what: str) -> Path:
    """Where a profiled run of ``size`` events writes what it found."""
    out_dir = DEFAULT_DATA_DIR / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return out_dir / f"sync-{mode}-n{size}-{what}-{stamp}"


@contextmanager
def _one_more_sync(mode: str, events: Path) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """For a profiled run: the sync's arguments, its environment and a work folder."""
    with tempfile.TemporaryDirectory(prefix="tiktok-bench-profiled-") as tmp:
        work = Path(tmp)
        mapping = _write_mapping(work)
        with _environment(mode, work) as (env, _server):
            yield _sync_args(mapping, events, work, mode), env, work


def profile(size: int, events: Path, mode: str, timer: str, top: int = 25) -> Path:
    """One more sync of ``events`` under cProfile (all threads); print the top functions."""
    out = _profile_file(size, mode, timer).with_suffix(".prof")
    with _one_more_sync(mode, events) as (sync_args, env, work):
        command = [sys.executable, "-m", "benchmarks.profile_sync", "--out", str(out)]
        command += ["--timer", timer, "--", *sync_args]
        child = run_child(command, env, work / "stderr.txt")
        if child.returncode != 0:
            tail = "\n".join(child.stderr.splitlines()[-20:])
            raise RuntimeError(f"the profiled sync exited with {child.returncode}:\n{tail}")
    print(
        f"\n== profile: {size:,} events, {mode}, under cProfile ({child.wall:.1f} s wall, "
        f"slower than unprofiled); every thread, merged; {timer} time; top {top} by tottime; "
        f"{out}"
    )
    if timer == "wall":
        print(
            "(wall time: idle sender threads show up as SimpleQueue.get / lock acquire, and "
            "threads add up to more than the run; --profile-timer cpu counts CPU only)"
        )
    stats = pstats.Stats(str(out), stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    return out


def sample(size: int, events: Path, mode: str, top: int = 15) -> Path:
    """One more sync of ``events`` under py-spy, every process; print each one's top."""
    out = _profile_file(size, mode, "py-spy").with_suffix(".txt")
    with _one_more_sync(mode, events) as (sync_args, env, _work):
        returncode = pyspy.record([sys.executable, "-m", "destination", *sync_args], env, out)
    if returncode != 0:
        raise RuntimeError(f"the sampled sync exited with {returncode}")
    print(
        f"\n== py-spy: {size:,} events, {mode}, every process of the sync, {pyspy.RATE} "
        f"samples/s of the thread holding the GIL; {out}"
    )
    print(pyspy.report(pyspy.summarize(out.read_text("utf-8")), top=top))
    return out


# --------------------------------------------------------------------------- reporting


def machine_facts() -> dict[str, str]:
    cpu_model = "unknown"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    versions = []
    for package in ("phonenumbers", "requests", "jsonschema", "orjson"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} (usable: {len(os.sched_getaffinity(0))})",
        "cpu model": cpu_model,
        "memory": memory,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "libraries": ", ".join(versions),
        "commit": _commit(),
    }


def _commit() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        # read-only: --no-optional-locks keeps status from refreshing the index
        head = subprocess.run(  # noqa: S603 (fixed arguments)
            [git, "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 (fixed arguments)
            [git, "--no-optional-locks", "-C", str(REPO), "status", "--porcelain", "destination"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in destination/" if dirty else "")


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def describe(result: Measurement, file_mb: float) -> str:
    fl = result.floor
    s = result.summary
    lines = [
        f"\n== {result.size:,} events ({result.mode}, {s.get('route')} route, "
        f"{file_mb:.0f} MB file)",
        f"floor:  {fl.wall:.2f} s, {fl.events_per_s:,.0f} events/s, CPU {fl.cpu:.2f} s "
        f"({fl.library} parse + SHA-256 of {fl.identifiers:,} identifiers, one process; "
        "best of 3)",
        f"sync:   {result.wall:.2f} s wall, {result.events_per_s:,.0f} events/s; "
        f"{result.requests:,} requests, {result.requests_per_s:,.1f} requests/s",
        f"        CPU {result.cpu:.2f} s = {result.cpu_per_million:.1f} s per million events; "
        f"peak RSS {result.rss_tree_mb:.1f} MB (tree sum, {result.processes} process(es)), "
        f"{result.rss_main_mb:.1f} MB (ru_maxrss)",
        f"        {result.floor_ratio:.1f}x the floor's time",
        f"counts: received {s.get('received', 0):,} = delivered {s.get('delivered', 0):,} "
        f"+ rejected {s.get('rejected', 0):,} + deferred {s.get('deferred', 0):,}"
        + (f"; rejected by reason {s['rejected_by_reason']}" if s.get("rejected_by_reason") else "")
        + (
            f"; dropped identifiers {s['dropped_identifiers']}"
            if s.get("dropped_identifiers")
            else ""
        ),
    ]
    if result.server_cpu is not None:
        lines.append(
            f"server: CPU {result.server_cpu:.2f} s, peak RSS {_mb(result.server_rss_mb)} MB "
            + (
                "(its own process; checks every row, keeps every audience member)"
                if result.mode == "http"
                else "(its own process; answers segment/mapping unchecked)"
            )
        )
    lines.extend(f"note:   floor: {note}" for note in fl.notes)
    lines.extend(f"note:   sync: {note}" for note in result.notes)
    lines.extend(f"PROBLEM: {problem}" for problem in result.problems)
    return "\n".join(lines)


HEADERS = (
    "events",
    "wall s",
    "events/s",
    "requests",
    "req/s",
    "CPU s",
    "CPU s/M ev",
    "RSS MB tree",
    "RSS MB main",
    "floor s",
    "floor ev/s",
    "x floor",
    "rejected",
    "server CPU s",
)


def table_rows(results: list[Measurement]) -> list[tuple[str, ...]]:
    return [
        (
            f"{r.size:,}",
            f"{r.wall:.2f}",
            f"{r.events_per_s:,.0f}",
            f"{r.requests:,}",
            f"{r.requests_per_s:,.1f}",
            f"{r.cpu:.2f}",
            f"{r.cpu_per_million:.1f}",
            f"{r.rss_tree_mb:.1f}",
            f"{r.rss_main_mb:.1f}",
            f"{r.floor.wall:.2f}",
            f"{r.floor.events_per_s:,.0f}",
            f"{r.floor_ratio:.2f}",
            f"{int(r.summary.get('rejected', 0)):,}",
            "-" if r.server_cpu is None else f"{r.server_cpu:.2f}",
        )
        for r in results
    ]


def text_table(results: list[Measurement]) -> str:
    rows = [HEADERS, *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
    )


def markdown_table(results: list[Measurement]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---:|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)


def targets(results: list[Measurement]) -> list[str]:
    """One line per target: met, missed, or not measured (they are reported, not asserted)."""
    by_size = {r.size: r for r in results}
    big = by_size.get(1_000_000)
    small = by_size.get(100_000)
    largest = max(results, key=lambda r: r.size) if results else None
    lines = []

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    def indicative(text: str) -> str:
        if largest is None:
            return "not measured"
        return f"not measured (needs the 1M run); indicative at {largest.size:,}: {text}"

    if big is not None:
        ok = big.events_per_s >= TARGET_EVENTS_PER_S
        lines.append(
            f"events/s >= {TARGET_EVENTS_PER_S:,} on 1M: {verdict(ok)} ({big.events_per_s:,.0f})"
        )
        ok = big.rss_tree_mb <= TARGET_RSS_MB
        lines.append(
            f"peak RSS <= {TARGET_RSS_MB:.0f} MB on 1M: {verdict(ok)} ({big.rss_tree_mb:.1f} MB)"
        )
        if small is not None:
            growth = big.rss_tree_mb / small.rss_tree_mb
            lines.append(
                f"peak RSS of 1M within 10% of 100k: {verdict(growth <= TARGET_RSS_GROWTH)} "
                f"({big.rss_tree_mb:.1f} vs {small.rss_tree_mb:.1f} MB, {growth - 1:+.0%})"
            )
        else:
            lines.append("peak RSS of 1M within 10% of 100k: not measured (needs the 100k run)")
        ok = big.floor_ratio <= TARGET_FLOOR_RATIO
        lines.append(
            f"time within {TARGET_FLOOR_RATIO:.0f}x the floor on 1M: {verdict(ok)} "
            f"({big.floor_ratio:.2f}x)"
        )
    elif largest is not None:
        lines.append(
            f"events/s >= {TARGET_EVENTS_PER_S:,} on 1M: "
            + indicative(f"{largest.events_per_s:,.0f} events/s")
        )
        lines.append(
            f"peak RSS <= {TARGET_RSS_MB:.0f} MB on 1M, within 10% of 100k: "
            + indicative(f"{largest.rss_tree_mb:.1f} MB")
        )
        lines.append(
            f"time within {TARGET_FLOOR_RATIO:.0f}x the floor on 1M: "
            + indicative(f"{largest.floor_ratio:.2f}x")
        )
    return lines


def side_by_side(mode: str, seed: int, data_dir: Path) -> list[str]:
    """Segment's published destination and this sync on the same file: the ratio of their
    whole-process events/s against ``TARGET_SEGMENT_RATIO`` (lines to print)."""
    from benchmarks.segment import run_segment  # noqa: PLC0415 (only with --segment)

    events = cached_events(SEGMENT_SIZE, seed, data_dir)
    theirs = run_segment(events, "dry-run" if mode == "dry-run" else "http")
    ours = measure(SEGMENT_SIZE, events, "dry-run" if mode == "dry-run" else "http", floor(events))
    if theirs is None:
        return [f"{TARGET_SEGMENT_RATIO:.0f}x Segment: not measured (Segment's side skipped)"]
    ratio = ours.events_per_s / theirs.events_per_s
    return [
        f"Segment {theirs.version} on {SEGMENT_SIZE:,} events: {theirs.events_per_s:,.0f} "
        f"events/s, CPU {theirs.cpu_s:.2f} s, peak RSS {theirs.peak_rss_mb:.0f} MB",
        f"this sync on the same file: {ours.events_per_s:,.0f} events/s, CPU {ours.cpu:.2f} s, "
        f"peak RSS {ours.rss_tree_mb:.0f} MB",
        f">= {TARGET_SEGMENT_RATIO:.0f}x Segment: "
        f"{'MET' if ratio >= TARGET_SEGMENT_RATIO else 'MISSED'} ({ratio:.1f}x)",
    ]


def write_markdown(
    path: Path, results: list[Measurement], facts: dict[str, str], command: str
) -> None:
    mode = results[0].mode if results else "http"
    notes = [
        f"- {r.size:,} events: {kind}{text}"
        for r in results
        for kind, texts in (
            ("floor: ", r.floor.notes),
            ("sync: ", r.notes),
            ("PROBLEM: ", r.problems),
        )
        for text in texts
    ]
    parts = [
        "# Benchmark results",
        "",
        f"Measured {facts['date']} with `{command}` (see [README.md](README.md)); "
        f"mode `{mode}`; settings {json.dumps(BENCH_SETTINGS)}.",
        "",
        markdown_table(results),
        "",
        "Targets (reported, not asserted):",
        "",
        *(f"- {line}" for line in targets(results)),
        "",
        *(["Notes:", "", *notes, ""] if notes else []),
        "Machine:",
        "",
        *(f"- {name}: {value}" for name, value in facts.items()),
        "",
        "To reproduce, from the repository root on a quiet machine:",
        "",
        "```sh",
        command,
        "```",
        "",
    ]
    path.write_text("\n".join(parts), "utf-8")


# -------------------------------------------------------------------------------- main


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="End-to-end benchmark of tiktok-audiences sync against the fake TikTok.",
    )
    parser.add_argument(
        "--sizes", type=_sizes, default=[100_000, 1_000_000], help="default: 100000,1000000"
    )
    parser.add_argument("--quick", action="store_true", help="10k and 100k events only")
    parser.add_argument(
        "--mode",
        choices=("http", "http-lean", "dry-run"),
        default="http",
        help="http: against the fake TikTok in its own process (default); http-lean: the same, "
        "but the fake answers segment/mapping calls without checking them (cheaper, see "
        "benchmarks/fake_server.py); dry-run: sync --dry-run, no server",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one more sync of the first size"
    )
    parser.add_argument(
        "--profile-timer",
        choices=("wall", "cpu"),
        default="wall",
        help="what --profile counts: wall time, waits included (default), or CPU time",
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="sample one more sync of the first size, every process, with py-spy "
        "(pip install py-spy)",
    )
    parser.add_argument("--seed", type=int, default=42, help="the events files' seed (42)")
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where generated files are cached"
    )
    parser.add_argument("--markdown", type=Path, help="also write the results as Markdown here")
    parser.add_argument(
        "--workers",
        help='the sync\'s workers setting: N or "auto" (default: left out, so "auto")',
    )
    parser.add_argument(
        "--route",
        choices=("auto", "python", "compiled"),
        default="compiled",
        help="the sync's route setting (default: compiled)",
    )
    parser.add_argument(
        "--segment",
        action="store_true",
        help=f"also run Segment's published destination and this sync on a {SEGMENT_SIZE:,}-"
        "event file, side by side (needs node and npm; skipped with the reason otherwise)",
    )
    args = parser.parse_args(argv)
    BENCH_SETTINGS["route"] = args.route
    if args.workers is not None:
        workers = args.workers if args.workers == "auto" else int(args.workers)
        BENCH_SETTINGS["workers"] = workers  # in the mapping, and in the report
    sizes: list[int] = [10_000, 100_000] if args.quick else args.sizes

    facts = machine_facts()
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"tiktok-audiences benchmark, mode {args.mode}, sizes {', '.join(f'{s:,}' for s in sizes)}"
    )
    for name, value in facts.items():
        print(f"  {name}: {value}")
    if len(os.sched_getaffinity(0)) < 2:
        print("  note: one usable CPU: the sync and the fake server share it")

    results: list[Measurement] = []
    for index, size in enumerate(sizes):
        started = time.perf_counter()
        events = cached_events(size, args.seed, args.data_dir)
        if time.perf_counter() - started > 1:
            print(f"\n(generated {events} in {time.perf_counter() - started:.1f} s)")
        floor_result = best_floor(events)
        result = measure(size, events, args.mode, floor_result)
        results.append(result)
        print(describe(result, events.stat().st_size / MB), flush=True)
        if args.profile and index == 0:
            profile(size, events, args.mode, args.profile_timer)
        if args.py_spy and index == 0:
            sample(size, events, args.mode)

    print("\n== summary\n" + text_table(results))
    print("\ntargets (reported, not asserted):")
    for line in targets(results):
        print(f"  {line}")
    if args.segment:
        for line in side_by_side(args.mode, args.seed, args.data_dir):
            print(f"  {line}")
    print(
        "\nmachine: "
        + "; ".join(f"{facts[key]}" for key in ("cpus", "cpu model", "python", "date"))
    )
    if args.markdown:
        write_markdown(args.markdown, results, facts, command.strip())
        print(f"wrote {args.markdown}")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
