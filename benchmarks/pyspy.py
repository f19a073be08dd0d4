"""Sample a sync and every process it starts with py-spy; sum the samples per process.

``python -m benchmarks.run --py-spy`` runs one more sync of the first size under
``py-spy record --subprocesses --gil --format raw`` (py-spy is a sampling profiler from
PyPI: ``pip install py-spy``). Unlike cProfile it barely slows the program down and sees
the worker processes as well as the main one; with ``--gil`` a sample is the thread that
holds the GIL, so a process's samples add up to the time it ran Python code (threads
waiting for the GIL, a lock or a pipe are not counted). The raw file has one line per
distinct stack, ``frame;frame;... COUNT``, each stack starting with the
``process PID:"command"`` frames of the processes it runs in (a worker's stack starts
with its parent's frame).

``summarize`` turns that into, per process, the functions by own samples (the function
was running) and by inclusive samples (it was on the stack).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ProcessSamples", "find_py_spy", "record", "report", "summarize"]

RATE = 250  # samples per second
# a process frame (its command line may hold ";", as a worker's ``-c`` does) or another
_FRAME = re.compile(r'process (\d+):"(.*?)"(?:;|$)|([^;]+)(?:;|$)')
_LINE = re.compile(r":\d+\)$")


@dataclass
class ProcessSamples:
    pid: int
    command: str
    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    @property
    def role(self) -> str:
        if "multiprocessing.spawn" in self.command or "spawn_main" in self.command:
            return "worker"
        if "resource_tracker" in self.command:
            return "resource tracker"
        return "main"


def find_py_spy() -> str | None:
    """py-spy beside this interpreter (a virtualenv's bin) or on the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def record(command: Sequence[str], env: Mapping[str, str], out: Path) -> int:
    """Run ``command`` under py-spy, writing the raw samples to ``out``; its exit code."""
    py_spy = find_py_spy()
    if py_spy is None:
        raise RuntimeError("--py-spy needs py-spy, a sampling profiler: pip install py-spy")
    args = [py_spy, "record", "--subprocesses", "--gil", "--format", "raw", "--rate", str(RATE)]
    args += ["--output", str(out), "--", *command]
    # our own interpreter and module, no shell, fixed arguments
    done = subprocess.run(  # noqa: S603
        args, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    if not out.exists():
        raise RuntimeError(f"py-spy wrote no samples: {done.stderr.decode(errors='replace')}")
    return done.returncode


def _function(frame: str) -> str:
    """``name (file:line)`` without the line: one entry per function."""
    return _LINE.sub(")", frame)


def summarize(raw: str) -> list[ProcessSamples]:
    """Samples per process from py-spy's raw format, the busiest process first."""
    processes: dict[int, ProcessSamples] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        # the process is the innermost process frame; its own frames follow it
        owner: tuple[int, str] | None = None
        functions: list[str] = []
        for match in _FRAME.finditer(stack):
            pid, command, frame = match.groups()
            if frame is None:
                owner = (int(pid), command)
                functions = []
            else:
                functions.append(_function(frame))
        if owner is None:
            continue
        process = processes.setdefault(owner[0], ProcessSamples(*owner))
        samples = int(count)
        process.samples += samples
        if functions:
            process.own[functions[-1]] += samples
        for function in set(functions):
            process.inclusive[function] += samples
    return sorted(processes.values(), key=lambda p: -p.samples)


def report(processes: Sequence[ProcessSamples], *, top: int = 15) -> str:
    """The busiest functions of each process, as text."""
    lines = []
    for process in processes:
        seconds = process.samples / RATE
        lines.append(
            f"\n-- {process.role} (pid {process.pid}): {process.samples} samples, "
            f"~{seconds:.1f} s holding the GIL"
        )
        lines.append(f"   own time (the function itself was running), top {top}:")
        for function, samples in process.own.most_common(top):
            lines.append(f"   {samples / process.samples:6.1%}  {function}")
        # the frames on every stack (the interpreter's start, the process's entry) say nothing
        inner = [(f, n) for f, n in process.inclusive.most_common() if n < process.samples]
        lines.append(f"   inclusive (on the stack), top {top}:")
        for function, samples in inner[:top]:
            lines.append(f"   {samples / process.samples:6.1%}  {function}")
    return "\n".join(lines)
