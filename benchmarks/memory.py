"""Memory and size.

* Peak RSS (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a fresh child each time)
  of ``agentsaga run`` on the 500-step no-op pipeline (target 120 MB) and of
  ``agentsaga runs`` over a store of 10,000 runs of 10 steps (target 100 MB).
* Database bytes per step: the store's growth (``state.db`` + its WAL, after a checkpoint)
  over the 500-step run, divided by 500.
* Database bytes per LLM call: a run of 200 ``plan`` steps (scripted provider, a
  ~1 KB prompt and a ~1 KB reply each), growth divided by 200.
* A step printing 10 MB: the store grows by less than 100 KB (the whole output is in the
  log file, its tail in the store).

Run: python benchmarks/memory.py
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import agentsaga_exe, machine, noop_pipeline, populate_runs, write


def peak_rss_mb(argv: list[str], cwd: Path) -> float:
    """Peak RSS of one child. RUSAGE_CHILDREN keeps the maximum over all waited-for
    children, so each measurement runs in a fresh intermediate Python process."""
    probe = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "assert p.returncode == 0, p.stderr.decode()[-2000:]\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *argv], cwd=cwd, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return int(out.stdout.strip()) / 1024  # KiB on Linux


def db_bytes(db: Path) -> int:
    """The store's size with its WAL folded in (what it occupies at rest)."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def run_pipeline(tmp: Path, name: str, text: str) -> tuple[Path, int, int]:
    """Run a pipeline in a store that already holds one tiny run (so the schema and the
    first pages exist); returns the store and its size before and after."""
    db = tmp / f"{name}.db"
    warm = write(tmp / f"{name}-warm.yml", noop_pipeline(1, name="warm"))
    subprocess.run(
        [*agentsaga_exe(), "--store", str(db), "run", str(warm)],
        cwd=tmp,
        check=True,
        capture_output=True,
    )
    before = db_bytes(db)
    pipeline = write(tmp / f"{name}.yml", text)
    proc = subprocess.run(
        [*agentsaga_exe(), "--store", str(db), "run", str(pipeline)], cwd=tmp, capture_output=True
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])
    return db, before, db_bytes(db)


def llm_pipeline(n: int) -> str:
    prompt = "Plan the change. " + "context " * 120  # ~1 KB
    reply = "1. do it. " + "detail " * 140  # ~1 KB
    lines = [
        "name: llm",
        "workspace: {isolation: none}",
        "defaults: {provider: scripted, model: claude-sonnet-4-5}",
        "steps:",
    ]
    for i in range(n):
        lines += [
            f"  - id: p{i:04d}",
            "    kind: plan",
            f'    prompt: "{prompt} {i}"',
            "    replies:",
            f'      - text: "{reply}"',
            "        usage: {input: 300, output: 250}",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    print(f"memory and size ({machine()})")
    exe = agentsaga_exe()
    with tempfile.TemporaryDirectory(prefix="agentsaga-bench-") as tmp_name:
        tmp = Path(tmp_name)
        p500 = write(tmp / "p500.yml", noop_pipeline(500, name="noop500"))
        rss_run = peak_rss_mb([*exe, "--store", str(tmp / "rss.db"), "run", str(p500)], tmp)
        print(f"peak RSS, agentsaga run (500 steps):          {rss_run:6.1f} MB   (target 120 MB)")
        store = tmp / "runs.db"
        populate_runs(store, 10_000, 10)
        rss_runs = peak_rss_mb([*exe, "--store", str(store), "runs"], tmp)
        rss_runs_json = peak_rss_mb(
            [*exe, "--store", str(store), "runs", "--json", "--limit", "10000"], tmp
        )
        print(
            f"peak RSS, agentsaga runs (10,000 runs):        {rss_runs:6.1f} MB   (target 100 MB)"
        )
        print(f"peak RSS, agentsaga runs --json --limit 10000: {rss_runs_json:6.1f} MB")
        rss_help = peak_rss_mb([*exe, "--help"], tmp)
        print(f"peak RSS, agentsaga --help (floor):            {rss_help:6.1f} MB")

        _, before, after = run_pipeline(tmp, "steps", noop_pipeline(500, name="noop500"))
        print(
            f"database bytes per command step:  {(after - before) / 500:8,.0f} B "
            f"(500 steps: {before:,} -> {after:,} B)"
        )
        _, before, after = run_pipeline(tmp, "calls", llm_pipeline(200))
        print(
            f"database bytes per LLM call:      {(after - before) / 200:8,.0f} B "
            "(a plan step: ~1 KB prompt, ~1 KB reply, its attempt row included)"
        )
        big = (
            "name: big\nworkspace: {isolation: none}\nsteps:\n  - id: big\n    kind: shell\n"
            "    run: 'head -c 10000000 /dev/zero | tr \"\\\\0\" x; echo'\n"
        )
        db, before, after = run_pipeline(tmp, "big", big)
        logs = sorted((tmp / ".agentsaga" / "logs").rglob("big-1.out"))
        log_size = logs[0].stat().st_size if logs else 0
        print(
            f"a step printing 10 MB: database grew {after - before:,} B (target < 100 KB); "
            f"its log file holds {log_size:,} B"
        )


if __name__ == "__main__":
    main()
