"""Steps that touch git, end to end through the real engine (worktree isolation), with the
worktree pool (``workspace.pool``) on and off side by side. Every figure is wall time and
CPU time (user + sys of this process and the git processes it waited for; the detached
``rm -rf`` of the trash is not counted: it runs after the command returns).

* **Worktree creation**, ``--files`` files (5,000): ``gitops.create_workspace`` fresh
  (``pool=False``: ``git worktree add``) and from the pool (an entry released by the
  previous repetition's rollback, which left a few changed, untracked and ignored files:
  claiming cleans them). Median of ``--repeat``.
* **A write step**, ``--write-files`` files (2,000): a pipeline of shell steps, each
  appending a line to a file and committing (``commit: true``); the engine snapshots the
  worktree before each step (a ghost commit) and commits after it. Per step: (a run of
  ``--steps`` steps - a run of 1 step) / (steps - 1), so the worktree's creation and the
  run's start are not in it; beside it the command alone (``sh -c`` run bare) and the
  command + ``git add -A && git commit`` by a bash loop in a plain clone.
* **Rollback** of a 3-step run in the ``--files`` repository: every attempt reset, the
  branch deleted, the worktree pooled (pool on) or moved to the trash (pool off).

Run from the repository root: python benchmarks/gitrun.py [--files 5000] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write
from snapshot import make_repo


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextmanager
def timed(into: list[tuple[float, float]]) -> Iterator[None]:
    """Append (wall s, CPU s) of the block to ``into``."""
    wall, cpu = time.perf_counter(), _cpu()
    yield
    into.append((time.perf_counter() - wall, _cpu() - cpu))


def fmt(samples: list[tuple[float, float]], per: int = 1) -> str:
    wall = statistics.median(w for w, _ in samples) / per * 1000
    cpu = statistics.median(c for _, c in samples) / per * 1000
    return f"{wall:7.1f} ms wall {cpu:6.1f} ms CPU"


def write_pipeline(n: int, pool: bool) -> str:
    lines = [
        "name: writes",
        f"workspace: {{isolation: worktree, pool: {'true' if pool else 'false'}}}",
        "steps:",
    ]
    for i in range(n):
        lines += [
            f"  - id: w{i:03d}",
            "    kind: shell",
            f'    run: ["sh", "-c", "echo {i} >> notes.txt; touch junk-{i}.log"]',
            "    commit: true",
            "    compensate: {git: reset}",
        ]
    return "\n".join(lines) + "\n"


def engine_for(repo: Path) -> tuple[Any, Any]:
    from agentsaga.engine import Engine
    from agentsaga.store.sqlite import SqliteStore

    store = SqliteStore(repo / ".agentsaga" / "state.db")
    return Engine(store, repo / ".agentsaga"), store


def run_pipeline(repo: Path, n: int, pool: bool, into: list[tuple[float, float]]) -> str:
    from agentsaga.pipeline import load_file

    pipeline = load_file(write(repo.parent / f"writes-{n}-{pool}.yml", write_pipeline(n, pool)))
    engine, store = engine_for(repo)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        with timed(into):
            result = engine.run(pipeline, repo)
    finally:
        os.chdir(cwd)
        store.close()
    assert result.status == "succeeded", result.status
    return str(result.run_id)


def rollback(repo: Path, run_id: str, into: list[tuple[float, float]]) -> None:
    engine, store = engine_for(repo)
    try:
        with timed(into):
            result = engine.rollback(run_id)
    finally:
        store.close()
    assert result.status == "rolled_back", result.status


def bare(script: str, cwd: Path, into: list[tuple[float, float]]) -> None:
    with timed(into):
        subprocess.run(["bash", "-c", script], cwd=cwd, check=True, capture_output=True)


def creation(repo: Path, repeat: int) -> dict[str, list[tuple[float, float]]]:
    from agentsaga import gitops

    found: dict[str, list[tuple[float, float]]] = {"fresh": [], "pooled": []}
    for r in range(repeat + 1):
        for kind in ("fresh", "pooled"):
            run_id = f"{kind}{r}"
            samples: list[tuple[float, float]] = []
            with timed(samples):
                ws = gitops.create_workspace(
                    repo, run_id, f"agentsaga/{run_id}", pool=kind == "pooled"
                )
            if r:  # the first pooled creation finds the pool empty
                found[kind] += samples
            (ws.path / "pkg00" / "sub0" / "mod_0.py").write_text("# changed\n")
            (ws.path / "left.txt").write_text("untracked\n")
            (ws.path / "build.log").write_text("ignored\n")
            gitops.delete_workspace(ws, run_id)
    return found


def per_step(long: list[tuple[float, float]], short: list[tuple[float, float]], n: int) -> str:
    pairs = [((lw - sw), (lc - sc)) for (lw, lc), (sw, sc) in zip(long, short, strict=True)]
    return fmt(pairs, n - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--write-files", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"git steps ({machine()})")
    show: Callable[[str], None] = lambda line: print(  # noqa: E731
        f"{line}   (load {os.getloadavg()[0]:.1f})", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="agentsaga-gitrun-") as tmp_name:
        tmp = Path(tmp_name)
        big = make_repo(tmp, args.files)
        (big / ".gitignore").write_text("*.log\n")
        subprocess.run(["git", "add", ".gitignore"], cwd=big, check=True)
        subprocess.run(["git", "commit", "-qm", "ignore logs"], cwd=big, check=True)
        made = creation(big, args.repeat)
        show(f"worktree creation, {args.files:,} files, fresh:  {fmt(made['fresh'])}")
        show(f"worktree creation, {args.files:,} files, pooled: {fmt(made['pooled'])}")

        mid = make_repo(tmp, args.write_files)
        n = args.steps
        for pool in (True, False):
            long: list[tuple[float, float]] = []
            short: list[tuple[float, float]] = []
            for _ in range(args.repeat):
                rollback(mid, run_pipeline(mid, n, pool, long), [])
                rollback(mid, run_pipeline(mid, 1, pool, short), [])
            label = "pool on " if pool else "pool off"
            show(
                f"write step with snapshot + commit, {args.write_files:,} files, {label}: "
                f"{per_step(long, short, n)} per step (run of {n} - run of 1)"
            )
        commands: list[tuple[float, float]] = []
        commits: list[tuple[float, float]] = []
        clone = tmp / "clone"
        subprocess.run(["git", "clone", "-q", str(mid), str(clone)], check=True)
        loop = f'for i in $(seq {n}); do sh -c "echo $i >> notes.txt; touch junk-$i.log"'
        for _ in range(args.repeat):
            bare(f"{loop}; done", tmp, commands)
            bare(f"{loop}; git add -A && git commit -q -m step; done", clone, commits)
        show(f"the command alone by bash:                    {fmt(commands, n)} per step")
        show(f"the command + git add -A + git commit by bash: {fmt(commits, n)} per step")

        for pool in (True, False):
            undo: list[tuple[float, float]] = []
            for _ in range(args.repeat):
                rollback(big, run_pipeline(big, 3, pool, []), undo)
            label = "worktree pooled " if pool else "worktree trashed"
            show(f"rollback of a 3-step run, {args.files:,} files, {label}: {fmt(undo)}")


if __name__ == "__main__":
    main()
