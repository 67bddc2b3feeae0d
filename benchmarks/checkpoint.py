"""Checkpoint overhead: pipelines of N no-op command steps (``true``, argv, ``isolation: none``).

Two measurements, side by side in one process:

1. **End to end.** Wall time of ``agentsaga run`` (the installed command, a fresh store)
   against the same N commands run bare: a bash loop (``for i in ...; do true; done``,
   ``/bin/true`` each time) and a Python loop of ``subprocess.run(["true"])``. Per-step
   overhead ~= (agentsaga - its start-up - python loop) / N.
2. **Per step, in process.** The real ``Engine`` drives the pipeline in this process; two
   timestamps are taken around each command: just before its ``Popen`` and just after its
   exit is reaped (``agentsaga.process._wait`` returns). A step's *engine overhead* is the
   time from one command's exit to the next command's start: the checkpoint of the step
   that finished (one transaction, fsynced), judging its calls, and everything that
   prepares the next step (records, namespace, rendering, env, the next "running" record,
   log files). The command's own time (fork, exec, run, reap) is excluded. The last step's
   overhead runs to the run's end (its checkpoint and the run's final record).

Targets: median <= 5 ms, p99 <= 20 ms per step.
Run: python benchmarks/checkpoint.py [--steps 500 200] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    agentsaga_exe,
    machine,
    median,
    noop_pipeline,
    percentile,
    time_command,
    write,
)


def bare_bash(n: int) -> float:
    start = time.perf_counter()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do /bin/true; done"], check=True)
    return time.perf_counter() - start


def bare_python(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["true"], check=True)
    return time.perf_counter() - start


def end_to_end(n: int, tmp: Path) -> float:
    pipeline = write(tmp / f"e2e-{n}.yml", noop_pipeline(n, name=f"noop{n}"))
    store = tmp / f"e2e-{n}.db"
    start = time.perf_counter()
    proc = subprocess.run(
        [*agentsaga_exe(), "--store", str(store), "run", str(pipeline), "--json"],
        cwd=tmp,
        capture_output=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])
    return elapsed


def in_process(n: int, tmp: Path) -> tuple[list[float], list[float], float]:
    """Per-step engine overhead and command times (seconds), and the run's wall time."""
    import agentsaga.process as process
    from agentsaga.engine import Engine
    from agentsaga.pipeline import load_file
    from agentsaga.store.sqlite import SqliteStore

    marks: list[tuple[str, float]] = []
    real_popen, real_wait = process.subprocess.Popen, process._wait

    class TimedPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            marks.append(("spawn", time.perf_counter()))
            super().__init__(*args, **kwargs)

    def timed_wait(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return real_wait(*args, **kwargs)
        finally:
            marks.append(("exit", time.perf_counter()))

    pipeline = load_file(write(tmp / f"inproc-{n}.yml", noop_pipeline(n, name=f"noop{n}")))
    store = SqliteStore(tmp / f"inproc-{n}.db")
    engine = Engine(store, tmp / ".agentsaga")
    process.subprocess.Popen, process._wait = TimedPopen, timed_wait  # type: ignore[misc]
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        start = time.perf_counter()
        result = engine.run(pipeline, None)
        end = time.perf_counter()
    finally:
        process.subprocess.Popen, process._wait = real_popen, real_wait  # type: ignore[misc]
        os.chdir(cwd)
        store.close()
    assert result.status == "succeeded", result.status
    spawns = [t for kind, t in marks if kind == "spawn"]
    exits = [t for kind, t in marks if kind == "exit"]
    assert len(spawns) == len(exits) == n
    overhead = [spawns[i + 1] - exits[i] for i in range(n - 1)] + [end - exits[-1]]
    commands = [exits[i] - spawns[i] for i in range(n)]
    return overhead, commands, end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[500, 200])
    parser.add_argument("--repeat", type=int, default=1, help="end-to-end runs per size")
    args = parser.parse_args()
    print(f"checkpoint overhead ({machine()})")
    startup = median(time_command([*agentsaga_exe(), "--help"], 7))
    print(f"agentsaga start-up (--help, median of 7): {startup * 1000:.0f} ms\n")
    with tempfile.TemporaryDirectory(prefix="agentsaga-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for n in args.steps:
            bash = median([bare_bash(n) for _ in range(3)])
            py = median([bare_python(n) for _ in range(3)])
            e2e = median([end_to_end(n, tmp) for _ in range(args.repeat)])
            overhead, commands, wall = in_process(n, tmp)
            per_step_e2e = (e2e - startup - py) / n
            print(f"--- {n} steps of `true`")
            print(
                f"bare bash loop               {bash:7.2f} s  ({bash / n * 1000:5.2f} ms/command)"
            )
            print(f"python subprocess.run loop   {py:7.2f} s  ({py / n * 1000:5.2f} ms/command)")
            print(
                f"agentsaga run (end to end)   {e2e:7.2f} s  ({e2e / n * 1000:5.2f} ms/step; "
                f"~{per_step_e2e * 1000:.2f} ms/step over the python loop, start-up excluded)"
            )
            print(f"in-process Engine.run        {wall:7.2f} s")
            print(
                f"  engine overhead per step   median {median(overhead) * 1000:6.2f} ms   "
                f"p99 {percentile(overhead, 99) * 1000:6.2f} ms   "
                f"max {max(overhead) * 1000:6.2f} ms   (targets 5 / 20 ms)"
            )
            first = overhead[: n // 10]
            last = overhead[-(n // 10) :]
            print(
                f"  first 10% of steps median  {median(first) * 1000:6.2f} ms   "
                f"last 10% median {median(last) * 1000:6.2f} ms   (growth = work per step "
                "that grows with the run's length)"
            )
            print(
                f"  command's own time         median {median(commands) * 1000:6.2f} ms "
                f"(fork, exec, run, reap: excluded from the overhead)"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
