"""The benchmark's own tools: reading py-spy's raw samples."""

from __future__ import annotations

from benchmarks.pyspy import report, summarize

MAIN = 'process 100:"python -m destination sync --events e.ndjson"'
WORKER = (
    'process 101:"python -B -c from multiprocessing.spawn import spawn_main; '
    'spawn_main(tracker_fd=10, pipe_handle=14) --multiprocessing-fork"'
)
RAW = "\n".join(
    [
        f"{MAIN};<module> (destination/__main__.py:3);run (pipeline.py:160) 7",
        f"{MAIN};<module> (destination/__main__.py:3);run (pipeline.py:163) 5",
        f"{MAIN};<module> (destination/__main__.py:3);_take (pipeline.py:190) 2",
        f"{MAIN};{WORKER};spawn_main (spawn.py:122);route_lines (workers.py:99) 9",
        f"{MAIN};{WORKER};spawn_main (spawn.py:122);route_lines (workers.py:99);"
        "hash_phone (normalize.py:452) 3",
        "not a sample line",
        "",
    ]
)


def test_samples_go_to_the_innermost_process_and_merge_per_function() -> None:
    main, worker = summarize(RAW)  # the busiest first
    assert (worker.pid, worker.role, worker.samples) == (101, "worker", 12)
    assert (main.pid, main.role, main.samples) == (100, "main", 14)
    # the two lines of run are one function
    assert main.own["run (pipeline.py)"] == 12
    assert main.own["_take (pipeline.py)"] == 2
    assert main.inclusive["<module> (destination/__main__.py)"] == 14
    # the worker's frames only: none of its parent's, and the ';' in its command is not a frame
    assert worker.own == {"route_lines (workers.py)": 9, "hash_phone (normalize.py)": 3}
    assert worker.inclusive["route_lines (workers.py)"] == 12
    assert "<module> (destination/__main__.py)" not in worker.inclusive


def test_the_report_shows_shares_and_leaves_out_frames_on_every_stack() -> None:
    text = report(summarize(RAW), top=5)
    assert "-- main (pid 100): 14 samples" in text
    assert "85.7%  run (pipeline.py)" in text  # 12 of 14 on the stack
    assert "<module> (destination/__main__.py)" not in text.split("inclusive")[1]
