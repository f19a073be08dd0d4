"""Running one input through both routes and comparing everything they produce.

The Python route (``route: "python"``, ``workers: 0``) is the reference; the compiled
route (``route: "compiled"``) must give the same summary (but its ``route`` key), the
same rejected records, the same requests to TikTok (bodies, in order per endpoint:
``concurrency`` 1; see ``by_endpoint``) and the same retry lines. The output files are
compared as sets of lines (records by line number): an event is written when it is
finished, after its batch's answer, and the answers' timing orders the files on either
route. When they differ, the failure message names the input lines the two routes route
apart (``routed_differences``: each line through ``route_line`` and through the compiled
query), so that a failure reads as a reproduction.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from destination.backends import Backend
from destination.demo import DEMO_TOKEN, demo_fake
from destination.fake_server import FakeTikTok
from destination.kit.settings import resolve
from destination.runner.compiled import compile_route
from destination.runner.reader import Line, read_lines
from destination.runner.route import RoutedLine, route_line, unread
from destination.runner.settings import RunnerSettings
from destination.runner.sync import SyncOptions, open_mapping, run_sync

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
ENVIRON = {"TIKTOK_ACCESS_TOKEN": DEMO_TOKEN}
# fast and deterministic: no pacing, no waiting between retries, one batch in flight
FAST = {"qps": 0, "retry_initial_wait": 0, "max_attempts": 3, "concurrency": 1}
_PATHS = ("rejected_file", "retry_file")  # differ between the two runs' folders
Request = tuple[str, str, Any]  # method, path, body


@dataclass
class Outputs:
    """What one sync produced."""

    summary: dict[str, Any]  # without the route and the output paths
    route: str
    rejected: list[str]  # the rejected file's lines
    requests: list[Request]
    retry: list[str]  # the retry file's lines


def mapping_file(
    folder: Path,
    mode: str = "native",
    *,
    settings: Mapping[str, Any] | None = None,
    mapping: Mapping[str, Any] | None = None,
    subscribe: str | None = None,
    subscriptions: list[dict[str, Any]] | None = None,
) -> Path:
    """The shipped mapping file of ``mode`` with ``FAST`` and ``settings`` on top;
    ``mapping`` merged into every subscription's mapping (a value None removes the
    field), ``subscribe`` replacing every condition; ``subscriptions`` replace them all."""
    document = json.loads((MAPPINGS / f"segment-{mode}.json").read_text("utf-8"))
    document.pop("$schema", None)
    document["settings"].update({**FAST, **(settings or {})})
    if subscriptions is not None:
        document["subscriptions"] = subscriptions
    for subscription in document["subscriptions"]:
        fields = subscription.setdefault("mapping", {})
        for name, value in (mapping or {}).items():
            if value is None:
                fields.pop(name, None)
            else:
                fields[name] = value
        if subscribe is not None:
            subscription["subscribe"] = subscribe
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{mode}-{len(list(folder.glob('*.json')))}.json"
    path.write_text(json.dumps(document), "utf-8")
    return path


def write_events(path: Path, lines: list[bytes]) -> Path:
    """``lines``, each with a line feed after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def sync(
    work: Path,
    *,
    mapping: Path,
    events: Path,
    route: str,
    fake: FakeTikTok | None = None,
    backend: Backend | None = None,
    state: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    from_stdin: bool = False,
) -> Outputs:
    """One sync on ``route`` (no workers) in folder ``work`` of its own, against ``fake``
    (a fresh demo fake if None; ``backend`` in front of it if given), reading ``events``
    from the file or (``from_stdin``) from standard input."""
    work.mkdir(parents=True, exist_ok=True)
    fake = fake or demo_fake()
    rejected, retry = work / "rejected.ndjson", work / "retry.ndjson"
    summary = run_sync(
        SyncOptions(
            mapping=mapping,
            events="-" if from_stdin else str(events),
            rejected=rejected,
            retry=retry,
            state=state,
            dry_run=dry_run,
            overrides={
                "audience_state": work / "audiences.json",
                "workers": 0,
                "route": route,
                **(overrides or {}),
            },
        ),
        environ=ENVIRON,
        backend=None if dry_run else backend or fake,
        stdin=io.BytesIO(events.read_bytes()) if from_stdin else None,
    )
    assert summary["received"] == summary["delivered"] + summary["rejected"] + summary["deferred"]
    for key in _PATHS:
        summary.pop(key)
    return Outputs(
        summary,
        summary.pop("route"),
        _records(rejected),
        [(r.method, r.path, r.json) for r in fake.requests],
        _records(retry),
    )


def _records(path: Path) -> list[str]:
    """An output file's lines (split at line feeds only: a record may hold any other
    line separator, U+2028 or \\x1c say, in a string)."""
    if not path.exists():
        return []
    return path.read_bytes().decode("utf-8", "surrogateescape").split("\n")[:-1]


def both_routes(
    folder: Path,
    *,
    mapping: Path,
    events: Path,
    overrides: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    from_stdin: bool = False,
    make_fake: Callable[[], FakeTikTok] = demo_fake,
) -> Outputs:
    """``events`` through the Python route and the compiled route, each against a fresh
    fake (``make_fake``); everything must be equal (``assert_same``). The Python route's
    outputs."""
    runs = {
        route: sync(
            folder / route,
            mapping=mapping,
            events=events,
            route=route,
            fake=make_fake(),
            overrides=overrides,
            dry_run=dry_run,
            from_stdin=from_stdin,
        )
        for route in ("python", "compiled")
    }
    python, compiled = runs["python"], runs["compiled"]
    assert (python.route, compiled.route) == ("python", "compiled")
    # after a stop, which events are rejected for their own reason and which for the
    # stop depends on when the failed batch's answer came: compared apart
    assert python.summary["stopped"] is None, f"the run stopped: {python.summary['stopped']}"
    assert_same(python, compiled, mapping=mapping, events=events, overrides=overrides)
    return python


def assert_same(
    python: Outputs,
    compiled: Outputs,
    *,
    mapping: Path,
    events: Path,
    overrides: Mapping[str, Any] | None = None,
) -> None:
    """Everything equal; else an error naming what differs and the lines routed apart."""
    problems: list[str] = []
    for key in sorted(python.summary.keys() | compiled.summary.keys()):
        one, other = python.summary.get(key), compiled.summary.get(key)
        if one != other:
            problems.append(f"summary[{key!r}]: python {one!r}, compiled {other!r}")
    problems.extend(_rejected_differences(python.rejected, compiled.rejected))
    for endpoint in sorted({r[:2] for r in python.requests} | {r[:2] for r in compiled.requests}):
        one, other = (
            by_endpoint(python.requests, endpoint),
            by_endpoint(compiled.requests, endpoint),
        )
        if one != other:
            problems.append(_request_difference(endpoint, one, other))
    if sorted(python.retry) != sorted(compiled.retry):
        problems.append(
            f"retry files differ: python {len(python.retry)} lines, compiled "
            f"{len(compiled.retry)} lines"
        )
    if problems:
        lines = routed_differences(mapping, events, overrides=overrides)
        raise AssertionError(
            "the routes differ:\n  "
            + "\n  ".join(problems[:20])
            + "\nlines routed apart (python | compiled):\n  "
            + ("\n  ".join(lines) or "none found")
        )


def without_request_ids(record: str) -> str:
    """A rejected record without the request id TikTok's refusal names: the fake numbers
    requests as they come, and audience creations (from the main thread) and batches
    (from the sender) come in the order of their timing, on either route."""
    return _REQUEST_ID.sub("request_id ...", record)


_REQUEST_ID = re.compile(r"request_id \w+")


def _rejected_differences(python: list[str], compiled: list[str]) -> list[str]:
    def by_line(records: list[str]) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for record in records:
            found.setdefault(json.loads(record)["line"], []).append(without_request_ids(record))
        return found

    one, other = by_line(python), by_line(compiled)
    problems = []
    for number in sorted(one.keys() | other.keys()):
        if sorted(one.get(number, [])) != sorted(other.get(number, [])):
            problems.append(
                f"rejected line {number}: python {one.get(number)!r:.600}, "
                f"compiled {other.get(number)!r:.600}"
            )
    return problems


def by_endpoint(requests: list[Request], endpoint: tuple[str, str]) -> list[Any]:
    """The bodies of the requests to one endpoint (method, path), in the order sent.

    Each endpoint's requests come from one thread (batches from the one sender of
    ``concurrency`` 1, audience creations from the main thread): their order is the
    run's; how the two interleave is timing, on either route."""
    return [body for method, path, body in requests if (method, path) == endpoint]


def _request_difference(endpoint: tuple[str, str], python: list[Any], compiled: list[Any]) -> str:
    for index, (one, other) in enumerate(zip(python, compiled, strict=False)):
        if one != other:
            return (
                f"{' '.join(endpoint)} request {index}: python {json.dumps(one)[:800]}, "
                f"compiled {json.dumps(other)[:800]}"
            )
    return f"{' '.join(endpoint)}: python sent {len(python)}, compiled {len(compiled)}"


def routed_differences(
    mapping: Path,
    events: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    limit: int = 8,
) -> list[str]:
    """The first ``limit`` lines of ``events`` whose ``RoutedLine`` differs between
    ``route_line`` and the compiled query, each with its bytes and both results."""
    opened = open_mapping(mapping)
    values = resolve(
        opened.declared, opened.mapping.settings, environ=ENVIRON, flags=dict(overrides or {})
    )
    session = opened.destination.open(
        opened.mapping, values, environ=ENVIRON, dry_run=True, backend=None
    )
    subscriptions = session.subscriptions
    max_bytes = RunnerSettings.from_values(values).max_event_bytes
    with events.open("rb") as stream:
        expected: list[RoutedLine] = [
            unread(item) if isinstance(item, Line) else route_line(subscriptions, *item)
            for item in read_lines(stream, max_bytes=max_bytes)
        ]
    with events.open("rb") as stream:
        got = list(
            compile_route(subscriptions).routed(
                stream, max_bytes=max_bytes, skip=lambda number: False
            )
        )
    found = []
    if len(got) != len(expected):
        found.append(f"python routed {len(expected)} lines, compiled {len(got)}")
    for one, other in zip(expected, got, strict=False):
        if one != other:
            found.append(
                f"line {one.number} {one.data!r:.300}:\n    python   {_shown(one)}\n"
                f"    compiled {_shown(other)}"
            )
            if len(found) >= limit:
                break
    return found


def _shown(line: RoutedLine) -> str:
    if line.error:
        return f"error {line.error!r}"
    return repr([tuple(step) for step in line.steps])[:700]


def accepted_users(fake: FakeTikTok) -> Counter[tuple[str, str]]:
    """Per action and hashed identifier, how many times TikTok accepted it."""
    seen: Counter[tuple[str, str]] = Counter()
    for request in fake.accepted:
        if request.path == "segment/mapping/":
            for row in request.json["batch_data"]:
                seen.update((request.json["action"], entry["id"]) for entry in row if entry)
    return seen
