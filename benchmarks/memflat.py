"""Memory over a long run, and the cost of loading a long pipeline (issue 17).

* **Run.** ``agentsaga run`` of an N-step no-op pipeline (N = 10,000 by default; one
  ``true`` per step): its resident memory (``VmRSS``) sampled while it runs, printed at
  10 %, 50 % and 100 % of the steps completed (read from the store, read-only), and its
  peak (``ru_maxrss`` from ``wait4``). Target: peak <= 50 MB, and flat: the figure at
  100 % no higher than at 10 % plus what the Python heap needs for the run's bookkeeping.
* **Resume.** A run of N completed steps and one failed step, written through the Store
  API (``scale.build_run``: the engine's own fingerprints, the pipeline cache a real run
  leaves); the peak RSS of ``agentsaga resume`` and launch -> the failed step running.
* **validate.** ``agentsaga validate`` of 1,000- and 10,000-step pipelines: median wall
  and CPU time (user + sys of the child, from ``wait4``) of ``--repeat`` runs, and the
  peak RSS; ``python -c pass`` and ``agentsaga --help`` beside them as floors. Target:
  1,000 steps <= 150 ms.
* **In process.** ``pipeline.load_text``: CPU time and the Python heap's peak and what the
  loaded pipeline keeps (``tracemalloc``); the pipeline cache's entry: bytes on disk, CPU
  and peak heap of loading it back.

CPU time is printed beside wall time: on a shared machine wall time measures the load.

Run: python benchmarks/memflat.py [--steps 10000] [--validate-steps 1000 10000]
     [--repeat 5] [--skip-run] [--skip-resume]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import agentsaga_exe, machine, noop_pipeline, write


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _completed(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        try:
            row = conn.execute(
                "SELECT COUNT(*) FROM step_attempts WHERE status = 'completed'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0])


#: Runs a command and reports its pid, then its exit status, CPU seconds and peak RSS
#: (wait4). A fresh small process: a child's ru_maxrss counts its parent's memory at the
#: fork (Linux records the old address space's peak at exec), and this script's own heap
#: grows with what it measures in process.
_PROBE = """
import os, subprocess, sys, tempfile, time
# stderr to a file, not a pipe: a long run's progress lines would fill a pipe nobody reads
# until the end, and the run would block on it.
err = tempfile.TemporaryFile()
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=err)
print(proc.pid, flush=True)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
print(code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, flush=True)
err.seek(0)
sys.stderr.write(err.read()[-2000:].decode(errors="replace"))
"""


class Probe:
    """A command started through ``_PROBE``: ``pid`` to sample, ``finish()`` to wait."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, *argv],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.pid = int(self.proc.stdout.readline())

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self) -> tuple[float, float, float]:
        """(wall s, CPU s, peak RSS MB) of the command; exits if it failed."""
        out, err = self.proc.communicate()
        code, wall, cpu, peak = out.split()
        if int(code) != 0:
            raise SystemExit(f"exited {code}: {err}")
        return float(wall), float(cpu), float(peak)


def measure_run(tmp: Path, n: int) -> None:
    folder = tmp / f"run-{n}"
    folder.mkdir()
    pipeline = write(folder / "p.yml", noop_pipeline(n, name=f"flat{n}"))
    db = folder / "state.db"
    marks = {max(1, n // 10): "10 %", max(1, n // 2): "50 %"}
    last = (0, 0.0, 0.0)  # steps done, RSS, t: the last sample before the exit
    seen: dict[str, tuple[float, float]] = {}
    start = time.perf_counter()
    probe = Probe([*agentsaga_exe(), "--store", str(db), "run", str(pipeline)], folder)
    while probe.running():
        time.sleep(0.25)
        rss = _rss_mb(probe.pid)
        done = _completed(db)
        if rss is None:
            continue
        last = (done, rss, time.perf_counter() - start)
        for at, label in marks.items():
            if done >= at and label not in seen:
                seen[label] = (rss, last[2])
    wall, cpu, peak = probe.finish()
    print(f"run of {n:,} steps: {wall:.1f} s wall, {cpu:.1f} s CPU (its own process)")
    for label in ("10 %", "50 %"):
        if label in seen:
            rss, at = seen[label]
            print(f"  RSS at {label:>5} of the steps: {rss:6.1f} MB   (t = {at:6.1f} s)")
    done, rss, at = last
    print(f"  RSS at {done * 100 / n:3.0f} % of the steps: {rss:6.1f} MB   (t = {at:6.1f} s)")
    print(f"  peak RSS (wait4): {peak:6.1f} MB   (target <= 50 MB)")


_BUILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from scale import build_run
db, run_id = build_run(Path(sys.argv[2]), int(sys.argv[3]), failed_step=True, compensate=False)
print(run_id)
"""


def _built_run(tmp: Path, n: int) -> tuple[Path, str]:
    folder = tmp / f"resume-{n}"
    folder.mkdir()
    # Built in another process: this one stays small (see _PROBE).
    here = str(Path(__file__).resolve().parent)
    run_id = subprocess.run(
        [sys.executable, "-c", _BUILD, here, str(folder), str(n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return folder, run_id


def warm_up(tmp: Path) -> None:
    """A 2-step run and a resume, unmeasured: every module they import is compiled (with
    PYTHONPYCACHEPREFIX the standard library's too) before a figure is taken; a first
    start that compiles peaks 5-10 MB higher."""
    folder, run_id = _built_run(tmp, 2)
    exe = [*agentsaga_exe(), "--store"]
    Probe([*exe, str(folder / "state.db"), "resume", run_id], folder).finish()
    pipeline = write(folder / "p.yml", noop_pipeline(2, name="warm"))
    Probe([*exe, str(folder / "w.db"), "run", str(pipeline)], folder).finish()


def measure_resume(tmp: Path, n: int) -> None:
    folder, run_id = _built_run(tmp, n)
    start = time.time()
    probe = Probe([*agentsaga_exe(), "--store", str(folder / "state.db"), "resume", run_id], folder)
    _, cpu, peak = probe.finish()
    took = float((folder / "stamp").read_text()) - start
    print(
        f"resume of {n:,} completed + 1 failed: peak RSS {peak:6.1f} MB; launch -> failed "
        f"step running {took * 1000:6.0f} ms; {cpu * 1000:.0f} ms CPU in all"
    )


def _timed(argv: list[str], cwd: Path, repeat: int) -> tuple[float, float, float]:
    """Median wall s, median CPU s, max peak RSS MB over ``repeat`` runs (+ 1 warm-up)."""
    walls, cpus, peaks = [], [], []
    for i in range(repeat + 1):
        wall, cpu, peak = Probe(argv, cwd).finish()
        if i:
            walls.append(wall)
            cpus.append(cpu)
            peaks.append(peak)
    return statistics.median(walls), statistics.median(cpus), max(peaks)


def measure_validate(tmp: Path, sizes: list[int], repeat: int) -> None:
    floors = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "agentsaga --help": [*agentsaga_exe(), "--help"],
    }
    for label, argv in floors.items():
        wall, cpu, peak = _timed(argv, tmp, repeat)
        print(f"{label:>28}: {wall * 1000:6.0f} ms wall {cpu * 1000:6.0f} ms CPU {peak:5.1f} MB")
    for n in sizes:
        path = write(tmp / f"v{n}.yml", noop_pipeline(n, name=f"v{n}"))
        wall, cpu, peak = _timed([*agentsaga_exe(), "validate", str(path)], tmp, repeat)
        target = "   (target 150 ms)" if n == 1000 else ""
        print(
            f"{'validate, ' + format(n, ',') + ' steps':>28}: {wall * 1000:6.0f} ms wall "
            f"{cpu * 1000:6.0f} ms CPU {peak:5.1f} MB{target}"
        )


def measure_in_process(tmp: Path, sizes: list[int]) -> None:
    from agentsaga import pipeline_cache
    from agentsaga.pipeline import load_text
    from agentsaga.runtime import vars_key

    load_text(noop_pipeline(3))  # imports and caches warm
    for n in sizes:
        text = noop_pipeline(n, name=f"m{n}")
        cpu = []
        for _ in range(3):
            start = time.process_time()
            load_text(text, "m.yml")
            cpu.append(time.process_time() - start)
        gc.collect()
        tracemalloc.start()
        pipeline = load_text(text, "m.yml")
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"load_text, {n:>6,} steps: {min(cpu) * 1000:6.1f} ms CPU (best of 3); heap peak "
            f"{peak / 1e6:5.1f} MB, the pipeline keeps {kept / 1e6:5.1f} MB "
            f"({kept / n:,.0f} B a step)"
        )
        home = tmp / f"cache-{n}"
        pipeline_cache.save(home, pipeline, vars_key(pipeline.vars))
        entry = pipeline_cache.entry(home, text, "m.yml", vars_key(pipeline.vars))
        del pipeline
        gc.collect()
        start = time.process_time()
        pipeline_cache.load(home, text, "m.yml", vars_key({}))
        took = time.process_time() - start
        tracemalloc.start()
        loaded = pipeline_cache.load(home, text, "m.yml", vars_key({}))
        kept, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert loaded is not None
        print(
            f"  pipeline cache entry: {entry.stat().st_size / 1e6:5.2f} MB on disk; loading "
            f"it {took * 1000:5.1f} ms CPU, heap peak {peak / 1e6:5.1f} MB, keeps "
            f"{kept / 1e6:5.1f} MB"
        )
        del loaded
        gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--validate-steps", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--skip-resume", action="store_true")
    args = parser.parse_args()
    print(f"memory over a long run, loading a long pipeline ({machine()})")
    with tempfile.TemporaryDirectory(prefix="agentsaga-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
            # Compiled once, as an installed package is: without bytecode every start
            # compiles agentsaga's modules again (~40 ms of CPU here).
            os.environ["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
            print("PYTHONDONTWRITEBYTECODE was set: bytecode cached under the temporary folder")
        # Compiled before anything is measured (pip does it at install); warm_up compiles
        # what else the commands import.
        package = importlib.util.find_spec("agentsaga")
        assert package is not None and package.submodule_search_locations
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", *package.submodule_search_locations],
            check=True,
        )
        warm_up(tmp)
        measure_validate(tmp, args.validate_steps, args.repeat)
        sys.stdout.flush()
        if not args.skip_resume:
            measure_resume(tmp, args.steps)
            sys.stdout.flush()
        if not args.skip_run:
            measure_run(tmp, args.steps)
            sys.stdout.flush()
        # Last: it grows this process (see _PROBE).
        measure_in_process(tmp, sorted({*args.validate_steps, args.steps}))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
