"""Steps that touch git, end to end through the real engine (worktree isolation).

* **Worktree creation.** ``gitops.create_workspace`` for a repository of ``--files`` files
  (5,000 by default): a branch and a checked-out worktree. Median of ``--repeat``.
* **A write step.** A pipeline of ``--steps`` shell steps, each appending a line to a file
  and committing (``commit: true``), in a repository of 2,000 files: the engine snapshots
  the worktree before each step (a ghost commit) and commits after it. Per step: the
  run's wall time / steps, beside the command alone (``sh -c`` run bare) and the same
  commands plus ``git add -A && git commit`` run by a bash loop in a plain clone (what
  committing costs anyway). Median of ``--repeat`` runs.
* **Rollback.** ``Engine.rollback`` of a 3-step run in the ``--files`` repository: every
  attempt reset, the branch and the worktree deleted. Run twice per repetition: as
  shipped (the worktree is moved to ``.agentsaga/trash`` and deleted by a background
  process) and with the worktree deleted before rollback returns (``git worktree remove
  --force``, the behaviour before), side by side.

Run from the repository root: python benchmarks/gitrun.py [--files 5000] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write
from snapshot import make_repo


def write_pipeline(n: int) -> str:
    lines = ["name: writes", "workspace: {isolation: worktree}", "steps:"]
    for i in range(n):
        lines += [
            f"  - id: w{i:03d}",
            "    kind: shell",
            f'    run: ["sh", "-c", "echo {i} >> notes.txt"]',
            "    commit: true",
        ]
    return "\n".join(lines) + "\n"


def engine_for(repo: Path):  # type: ignore[no-untyped-def]
    from agentsaga.engine import Engine
    from agentsaga.store.sqlite import SqliteStore

    store = SqliteStore(repo / ".agentsaga" / "state.db")
    return Engine(store, repo / ".agentsaga"), store


def run_pipeline(repo: Path, n: int) -> tuple[float, str]:
    from agentsaga.pipeline import load_file

    pipeline = load_file(write(repo.parent / f"writes-{n}.yml", write_pipeline(n)))
    engine, store = engine_for(repo)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        start = time.perf_counter()
        result = engine.run(pipeline, repo)
        wall = time.perf_counter() - start
    finally:
        os.chdir(cwd)
        store.close()
    assert result.status == "succeeded", result.status
    return wall, result.run_id


def rollback(repo: Path, run_id: str, background: bool) -> float:
    from agentsaga import trash

    engine, store = engine_for(repo)
    real = trash.move_aside
    if not background:
        trash.move_aside = lambda path, where: None  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        result = engine.rollback(run_id)
        wall = time.perf_counter() - start
    finally:
        trash.move_aside = real  # type: ignore[assignment]
        store.close()
    assert result.status == "rolled_back", result.status
    return wall


def bare_commits(repo: Path, n: int) -> float:
    clone = repo.parent / f"{repo.name}-clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    script = (
        f'for i in $(seq {n}); do sh -c "echo $i >> notes.txt"; '
        "git add -A && git commit -q -m step; done"
    )
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], cwd=clone, check=True, capture_output=True)
    return time.perf_counter() - start


def bare_commands(n: int, folder: Path) -> float:
    start = time.perf_counter()
    for i in range(n):
        subprocess.run(["sh", "-c", f"echo {i} >> notes.txt"], cwd=folder, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--write-files", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from agentsaga import gitops

    print(f"git steps ({machine()})")
    with tempfile.TemporaryDirectory(prefix="agentsaga-gitrun-") as tmp_name:
        tmp = Path(tmp_name)
        big = make_repo(tmp, args.files)
        creations = []
        for r in range(args.repeat):
            start = time.perf_counter()
            ws = gitops.create_workspace(big, f"c{r}", f"agentsaga/c{r}")
            creations.append(time.perf_counter() - start)
            gitops.delete_workspace(ws, f"c{r}")
        print(
            f"worktree creation, {args.files:,} files: median "
            f"{statistics.median(creations) * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})"
        )

        mid = make_repo(tmp, args.write_files)
        walls = [run_pipeline(mid, args.steps)[0] for _ in range(args.repeat)]
        commits = [bare_commits(mid, args.steps) for _ in range(1)]
        commands = [bare_commands(args.steps, tmp) for _ in range(args.repeat)]
        n = args.steps
        print(
            f"write step with snapshot + commit, {args.write_files:,} files: "
            f"{statistics.median(walls) / n * 1000:.1f} ms per step end to end "
            f"(run of {n}, worktree creation included); the command alone "
            f"{statistics.median(commands) / n * 1000:.1f} ms; command + git add + commit by "
            f"bash {statistics.median(commits) / n * 1000:.1f} ms (load "
            f"{os.getloadavg()[0]:.1f})"
        )

        shipped, before = [], []
        for _ in range(args.repeat):
            for background, into in ((True, shipped), (False, before)):
                _, run_id = run_pipeline(big, 3)
                into.append(rollback(big, run_id, background))
        print(
            f"rollback of a 3-step run, {args.files:,} files: median "
            f"{statistics.median(shipped) * 1000:.0f} ms (worktree deleted in the background); "
            f"{statistics.median(before) * 1000:.0f} ms deleting it before returning "
            f"(load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
