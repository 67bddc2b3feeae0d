"""Resume and rollback at scale.

* **Resume.** A run of N completed steps and one failed step (N = 2,000 by default) is
  written through the Store API (with the fingerprints the engine computes, so ``resume``
  reuses every completed step). The failed step, re-run, writes a timestamp
  (``date +%s.%N``) to a file, and the CPU time agentsaga (its parent) has used by then.
  Figure: from launching ``agentsaga resume RUN`` (the installed command) to that
  timestamp, and that CPU time; ``--repeat K`` resumes K copies of the store. Target
  300 ms.
* **Rollback.** A run of N completed steps, each with a no-op compensation
  (``compensate: {run: ["true"]}``), written the same way; ``agentsaga rollback RUN`` is
  timed end to end. Per compensation = (wall time - start-up - N x a bare
  ``subprocess.run(["true"])``) / N: what the engine adds to each compensation command.
  Target 5 ms. The default sizes are smaller than 2,000 because the present engine's cost
  per compensation grows with N (see RESULTS.md); ``--rollback-steps 2000`` runs the full size.

Run: python benchmarks/scale.py [--resume-steps 2000 ...] [--rollback-steps 100 200 400]
       [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    agentsaga_exe,
    compile_package,
    fast_store,
    machine,
    median,
    noop_pipeline,
    time_command,
)

TIMEOUT_S = 170.0


def build_run(folder: Path, n_done: int, failed_step: bool, compensate: bool) -> tuple[Path, str]:
    """A run of ``n_done`` completed steps (+ one failed one that stamps the time when it
    runs), in the store ``folder/state.db``. Returns the store and the run id."""
    from agentsaga.engine import Engine, current_attempts
    from agentsaga.pipeline import load_text
    from agentsaga.states import RunStatus, StepStatus
    from agentsaga.store import RunRecord, new_run_id

    text = noop_pipeline(n_done, name=f"scale{n_done}", compensate=compensate)
    if failed_step:
        # The stamp, and the CPU time agentsaga (the command's parent) has used by then.
        text += (
            f"  - id: stamp\n    kind: shell\n    run: 'date +%s.%N > {folder / 'stamp'}; "
            f"cat /proc/$PPID/stat > {folder / 'stamp.cpu'}'\n"
        )
    pipeline = load_text(text, "scale.yml")
    db = folder / "state.db"
    store = fast_store(db)
    engine = Engine(store, folder / ".agentsaga")
    run_id = new_run_id()
    record = RunRecord(
        id=run_id,
        pipeline_name=pipeline.name,
        pipeline_path="scale.yml",
        pipeline_text=pipeline.text,
        pipeline_hash=pipeline.hash,
        vars={},
        status=RunStatus.RUNNING,
        state=engine._initial_state(pipeline),
        workspace={"isolation": "none", "path": str(folder)},
    )
    store.create_run(record)
    run = store.get_run(run_id)
    # No step reads another's output, so one namespace gives every step's fingerprint.
    ns = engine._namespace(run, pipeline, current_attempts([]))
    output = {"exit_code": 0, "stdout": "", "stderr": "", "json": None}

    def fingerprint(step: Any) -> str | None:
        # The engine's own fingerprint function, so resume sees these as its checkpoints.
        from agentsaga import namespace

        return namespace.fingerprint(step, pipeline, ns, run)

    for step in pipeline.steps[:n_done]:
        a = store.start_attempt(
            run_id,
            step.id,
            step.index,
            fingerprint=fingerprint(step),
            base_commit=None,
            snapshot=None,
        )
        store.finish_attempt(a.id, status=StepStatus.COMPLETED, output=output)
    if failed_step:
        step = pipeline.steps[n_done]
        a = store.start_attempt(
            run_id,
            step.id,
            step.index,
            fingerprint=fingerprint(step),
            base_commit=None,
            snapshot=None,
        )
        store.finish_attempt(
            a.id,
            status=StepStatus.FAILED,
            error={"type": "StepFailed", "message": "command exited with 1"},
        )
        store.update_run(
            run_id,
            status=RunStatus.FAILED,
            error={"type": "StepFailed", "message": "command exited with 1"},
            finished=True,
        )
    else:
        store.update_run(run_id, status=RunStatus.SUCCEEDED, finished=True)
    store.close()
    # What a real run of a long pipeline leaves for its resumes (Engine.run does it in a
    # background thread): the parsed pipeline.
    from agentsaga import pipeline_cache
    from agentsaga.runtime import vars_key

    pipeline_cache.save(folder / ".agentsaga", pipeline, vars_key(pipeline.vars))
    return db, run_id


def _agentsaga(folder: Path, db: Path, *args: str) -> subprocess.CompletedProcess[bytes] | None:
    """The installed command against the store ``db``; None if it outlives TIMEOUT_S."""
    try:
        return subprocess.run(
            [*agentsaga_exe(), "--store", str(db), *args],
            cwd=folder,
            capture_output=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None


def time_resume(n: int, tmp: Path, repeat: int) -> list[tuple[float, float] | None]:
    """Launch to the failed step running, ``repeat`` times on copies of one store: wall
    seconds, and the CPU seconds (user + sys) agentsaga had used by then (10 ms ticks,
    from /proc: on a shared machine the wall time mostly measures other processes)."""
    folder = tmp / f"resume-{n}"
    folder.mkdir()
    db, run_id = build_run(folder, n, failed_step=True, compensate=False)
    pristine = db.with_name("pristine.db")
    shutil.copyfile(db, pristine)
    took = []
    for _ in range(repeat):
        for leftover in (db.with_name("state.db-wal"), db.with_name("state.db-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(pristine, db)
        took.append(_resume_once(folder, db, run_id))
    return took


def _resume_once(folder: Path, db: Path, run_id: str) -> tuple[float, float] | None:
    start = time.time()
    proc = _agentsaga(folder, db, "resume", run_id)
    if proc is None:
        return None
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])
    fields = (folder / "stamp.cpu").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float((folder / "stamp").read_text()) - start, cpu


def time_rollback(n: int, tmp: Path, startup: float, true_cmd: float) -> tuple[float, float] | None:
    folder = tmp / f"rollback-{n}"
    folder.mkdir()
    db, run_id = build_run(folder, n, failed_step=False, compensate=True)
    start = time.perf_counter()
    proc = _agentsaga(folder, db, "rollback", run_id)
    if proc is None:
        return None
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])
    return wall, (wall - startup - n * true_cmd) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume-steps", type=int, nargs="*", default=[500, 1000, 2000])
    parser.add_argument("--rollback-steps", type=int, nargs="*", default=[100, 200, 400])
    parser.add_argument("--repeat", type=int, default=1, help="resumes per size (median)")
    args = parser.parse_args()
    compile_package()
    print(f"resume and rollback at scale ({machine()})")
    startup = median(time_command([*agentsaga_exe(), "--help"], 7))
    start = time.perf_counter()
    for _ in range(200):
        subprocess.run(["true"], check=True)
    true_cmd = (time.perf_counter() - start) / 200
    print(
        f"start-up {startup * 1000:.0f} ms; "
        f"bare subprocess.run(['true']) {true_cmd * 1000:.2f} ms\n"
    )
    with tempfile.TemporaryDirectory(prefix="agentsaga-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for n in args.resume_steps:
            took = time_resume(n, tmp, args.repeat)
            done = [t for t in took if t is not None]
            shown = (
                f"{median([t[0] for t in done]) * 1000:8.0f} ms wall, "
                f"{median([t[1] for t in done]) * 1000:4.0f} ms CPU"
                if len(done) == len(took)
                else f"> {TIMEOUT_S:.0f} s"
            )
            print(
                f"resume: {n:5,d} completed + 1 failed: launch -> failed step running "
                f"{shown}   (target 300 ms; median of {args.repeat}, load "
                f"{os.getloadavg()[0]:.1f})"
            )
            sys.stdout.flush()
        for n in args.rollback_steps:
            res = time_rollback(n, tmp, startup, true_cmd)
            if res is None:
                print(f"rollback: {n:5,d} no-op compensations: > {TIMEOUT_S:.0f} s")
                continue
            wall, per = res
            print(
                f"rollback: {n:5,d} no-op compensations: {wall:6.2f} s, engine adds "
                f"{per * 1000:7.2f} ms per compensation   (target 5 ms)"
            )
            sys.stdout.flush()
    os.environ.pop("AGENTSAGA_FAULT", None)


if __name__ == "__main__":
    main()
