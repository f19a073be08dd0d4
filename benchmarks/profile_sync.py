"""Run ``python -m destination ARGS...`` under cProfile, every thread included.

``python -m cProfile -o FILE -m destination ...`` profiles the main thread only, and the
sync hands its batches to sender threads (building and sending each request, reading the
answer): those would not appear. Here each new thread gets a profiler of its own, and at
the end all of them are merged into one pstats file.

``--timer wall`` (the default, as ``python -m cProfile``) counts the time a function took,
waits included, so idle sender threads show up in ``SimpleQueue.get`` and lock acquires,
and merged threads add up to more than the wall time. ``--timer cpu`` counts each thread's
CPU time (``time.thread_time``): waits vanish and the totals are the process's CPU.

    python -m benchmarks.profile_sync --out sync.prof [--timer cpu] -- sync --mapping M ...
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import runpy
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="the pstats file to write")
    parser.add_argument(
        "--timer",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time, waits included (default); cpu: each thread's CPU time",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the CLI's arguments")
    options = parser.parse_args(argv)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args

    def new_profile() -> cProfile.Profile:
        # the default timer is cProfile's own (wall) clock, cheaper than any Python callable
        return cProfile.Profile(time.thread_time) if options.timer == "cpu" else cProfile.Profile()

    lock = threading.Lock()
    thread_profiles: list[cProfile.Profile] = []

    def start_thread_profile(frame: FrameType, event: str, arg: Any) -> None:
        # Called once, on the new thread's first event: hand over to a profiler of its own.
        sys.setprofile(None)
        profile = new_profile()
        with lock:
            thread_profiles.append(profile)
        profile.enable()

    threading.setprofile(start_thread_profile)
    main_profile = new_profile()
    sys.argv = ["destination", *args]
    code: int | str | None = 0
    main_profile.enable()
    try:
        runpy.run_module("destination", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    finally:
        main_profile.disable()
        threading.setprofile(None)
    stats = pstats.Stats(main_profile)
    with lock:
        for profile in thread_profiles:
            stats.add(profile)
    stats.dump_stats(options.out)
    print(
        f"profile_sync: {1 + len(thread_profiles)} thread(s) profiled into {options.out}",
        file=sys.stderr,
    )
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
