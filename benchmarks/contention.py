"""Where a durable step's wall time goes under CPU contention: agentsaga and LangGraph
(sync, the same guarantee) side by side, with and without K CPU-bound processes.

Each engine runs N no-op steps (``peers.py``'s workload, the same worker scripts and
venvs) in a fresh process. Every 20 ms the script reads the measured process's threads'
``/proc/<pid>/task/<tid>/schedstat`` (CPU time on a core; time spent runnable, waiting
in a run queue for a core) and keeps the last reading; ``wait4`` gives the CPU of the
process with its waited-for children. Per step: (an N-step run - a 1-step run) / (N - 1),
the start-up taken out, medians of ``--repeat``:

* **CPU, engine**: the measured process's own threads;
* **CPU, children**: the programs it started (per step: ``true``; agentsaga: its gate's
  ``sh`` too);
* **run queue, engine**: time the engine's threads were runnable but not running: the
  cost of contention paid directly;
* **waiting**: the rest of the wall time, when no engine thread was running or
  runnable: the children running (or queued), the disk (fsync), locks;
* **switches**: voluntary context switches of the whole tree (wait4).

Run: python benchmarks/contention.py [--steps 300] [--busy 0 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, agentsaga_exe, compile_package, machine, median, noop_pipeline, write
from peers import LANGGRAPH, busy, ensure_venv, worker


def _schedstat(pid: int) -> tuple[float, float]:
    """CPU seconds and run-queue seconds of all of ``pid``'s threads (live ones)."""
    cpu = queued = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        cpu += int(fields[0]) / 1e9
        queued += int(fields[1]) / 1e9
    return cpu, queued


def run_one(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = [(0.0, 0.0)]
    done = threading.Event()

    def poll() -> None:
        # Threads that exit before the last poll are lost: LangGraph's pool threads live
        # as long as the run; agentsaga's lease thread too.
        while not done.wait(0.02):
            reading = _schedstat(proc.pid)
            if reading[0] >= last[0][0]:
                last[0] = reading

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    poller.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    engine_cpu, engine_queue = last[0]
    total_cpu = usage.ru_utime + usage.ru_stime
    return {
        "wall": wall,
        "engine_cpu": engine_cpu,
        "children_cpu": max(total_cpu - engine_cpu, 0.0),
        "engine_queue": engine_queue,
        "waiting": max(wall - engine_cpu - engine_queue, 0.0),
        "switches": float(usage.ru_nvcsw),
    }


def engines(scratch: Path) -> dict[str, object]:
    python, script = ensure_venv("langgraph"), worker("langgraph", LANGGRAPH)

    def agentsaga(n: int, work: Path) -> list[str]:
        pipeline = write(work / "pipeline.yml", noop_pipeline(n, name=f"noop{n}"))
        return [*agentsaga_exe(), "--store", str(work / "state.db"), "run", str(pipeline)]

    def langgraph(n: int, work: Path) -> list[str]:
        return [str(python), str(script), str(n), str(work / "lg.db"), str(work / "o.json"), "sync"]

    return {"agentsaga": agentsaga, "langgraph-sync": langgraph}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_package()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    print(f"contention ({machine()}), {args.steps} steps, medians of {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="contention-") as scratch_name:
        scratch = Path(scratch_name)
        makers = engines(scratch)
        print(
            "| busy | engine | wall ms/step | CPU engine | CPU children | run queue, engine "
            "| waiting | switches/step | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for k in args.busy:
            spinners = busy(k)
            try:
                results: dict[str, list[dict[str, float]]] = {name: [] for name in makers}
                loads = []
                for _ in range(args.repeat):
                    for name, make in makers.items():
                        # A 1-step run and an N-step run: their difference is N - 1 steps
                        # without the start-up.
                        one, many = (
                            run_one(make(n, work), work, env)  # type: ignore[operator]
                            for n, work in (
                                (1, Path(tempfile.mkdtemp(dir=scratch))),
                                (args.steps, Path(tempfile.mkdtemp(dir=scratch))),
                            )
                        )
                        loads.append(os.getloadavg()[0])
                        results[name].append({k: many[k] - one[k] for k in many})
            finally:
                for s in spinners:
                    s.kill()
                    s.wait()
            for name, runs in results.items():
                per = {key: median([r[key] for r in runs]) / (args.steps - 1) for key in runs[0]}
                print(
                    f"| {k} | {name} | {per['wall'] * 1000:.2f} | {per['engine_cpu'] * 1000:.2f} "
                    f"| {per['children_cpu'] * 1000:.2f} | {per['engine_queue'] * 1000:.2f} "
                    f"| {per['waiting'] * 1000:.2f} | {per['switches']:.1f} "
                    f"| {min(loads):.1f}-{max(loads):.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
