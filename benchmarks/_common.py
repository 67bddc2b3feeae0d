"""Helpers the benchmark scripts share: the installed command, timing, pipelines, stores.

Not a test module and not part of the package: the scripts import it by path
(``benchmarks/`` is put on ``sys.path`` by running a script from it).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def agentsaga_exe() -> list[str]:
    """The installed console script itself (not a pyenv shim, whose own bash start-up
    would be measured too), falling back to ``python -m agentsaga``."""
    script = Path(sysconfig.get_path("scripts")) / "agentsaga"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "agentsaga"]


def compile_package() -> None:
    """Write the bytecode of the agentsaga package the measured commands import (the
    one on ``PYTHONPATH`` first), as ``pip install`` does for a user. Without it, where
    ``PYTHONDONTWRITEBYTECODE`` is set (the sessions that took RESULTS.md's figures),
    every launch compiles ~60 modules from source: +0.1-0.3 s of CPU per start-up that
    the peers, installed with their bytecode, do not pay."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("agentsaga")
    if spec is not None and spec.origin:
        compileall.compile_dir(str(Path(spec.origin).parent), quiet=1)


def machine() -> str:
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load average {load:.1f}"
    )


def time_command(
    argv: Sequence[str],
    runs: int,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    warmup: int = 1,
) -> list[float]:
    """Wall-clock seconds of ``runs`` executions (after ``warmup`` untimed ones)."""
    timings = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(
                f"{' '.join(argv)} exited {proc.returncode}:\n"
                + proc.stderr.decode(errors="replace")[-2000:]
            )
        if i >= warmup:
            timings.append(elapsed)
    return timings


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def noop_pipeline(
    n_steps: int, name: str = "noop", compensate: bool = False, command: str = "true"
) -> str:
    """``n_steps`` shell steps running ``command`` as argv (no bash), no git."""
    lines = [f"name: {name}", "workspace: {isolation: none}", "steps:"]
    for i in range(n_steps):
        lines.append(f"  - id: s{i:05d}")
        lines.append("    kind: shell")
        lines.append(f'    run: ["{command}"]')
        if compensate:
            lines.append('    compensate: {run: ["true"]}')
    return "\n".join(lines) + "\n"


def fast_store(path: Path):  # type: ignore[no-untyped-def]
    """A SqliteStore for *generating* fixtures quickly: fsync off on this connection only
    (the measured commands open the file themselves, with the product's settings)."""
    from agentsaga.store.sqlite import SqliteStore

    store = SqliteStore(path)
    store._conn.execute("PRAGMA synchronous=OFF")
    return store


def populate_runs(path: Path, n_runs: int, steps_per_run: int) -> list[str]:
    """``n_runs`` succeeded runs of ``steps_per_run`` completed shell steps, written through
    the Store API (create_run, start_attempt, finish_attempt). Returns the run ids."""
    from agentsaga.store import RunRecord, new_run_id

    text = noop_pipeline(steps_per_run, name="generated")
    store = fast_store(path)
    ids = []
    output = {"exit_code": 0, "stdout": "ok\n", "stderr": "", "json": None}
    seen = set()
    for _ in range(n_runs):
        run_id = new_run_id()
        while run_id in seen:
            run_id = new_run_id()
        seen.add(run_id)
        store.create_run(
            RunRecord(
                id=run_id,
                pipeline_name="generated",
                pipeline_path="generated.yml",
                pipeline_text=text,
                pipeline_hash="0" * 16,
                vars={},
                status="running",
                workspace={"isolation": "none", "path": str(path.parent)},
            )
        )
        for i in range(steps_per_run):
            a = store.start_attempt(
                run_id, f"s{i:05d}", i, fingerprint="f" * 16, base_commit=None, snapshot=None
            )
            store.finish_attempt(
                a.id, status="completed", output=output, log_path=f"/nonexistent/{run_id}/s{i}"
            )
        store.update_run(run_id, status="succeeded", finished=True)
        ids.append(run_id)
    store.close()
    return ids


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
