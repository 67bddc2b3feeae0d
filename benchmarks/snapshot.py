"""Median time of one ghost-commit snapshot for repositories of 200, 2,000 and 20,000 files.

Each repository is generated in a temporary folder, committed, then a few files are modified
and a few created (what a step typically leaves) before every timed snapshot. Prints one
line per size. Run: python benchmarks/snapshot.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentsaga import gitops

SIZES = (200, 2_000, 20_000)
RUNS = 15


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(root: Path, n_files: int) -> Path:
    repo = root / f"repo-{n_files}"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "bench")
    git(repo, "config", "user.email", "bench@example.com")
    for i in range(n_files):
        path = repo / f"pkg{i % 50:02d}" / f"sub{i % 7}" / f"mod_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\nVALUE = {i}\n\ndef f():\n    return VALUE * 2\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


def bench(root: Path, n_files: int) -> tuple[float, float]:
    repo = make_repo(root, n_files)
    ws = gitops.create_workspace(repo, "bench", "agentsaga/bench")
    timings = []
    for run in range(RUNS):
        for i in range(5):  # a step's worth of edits: modified and new files
            (ws.path / f"pkg{i:02d}" / f"sub{i % 7}" / f"mod_{i}.py").write_text(f"# {run}\n")
            (ws.path / f"new_{run}_{i}.py").write_text(f"X = {run}\n")
        start = time.perf_counter()
        gitops.snapshot(ws, f"refs/agentsaga/bench/step/{run}")
        timings.append(time.perf_counter() - start)
    gitops.delete_workspace(ws, "bench")
    return statistics.median(timings) * 1000, max(timings) * 1000


def main() -> None:
    print(f"snapshot(): median and max of {RUNS} runs, git worktree isolation")
    with tempfile.TemporaryDirectory(prefix="agentsaga-bench-") as tmp:
        for n in SIZES:
            median_ms, max_ms = bench(Path(tmp), n)
            print(f"{n:>7,} files: median {median_ms:6.1f} ms   max {max_ms:6.1f} ms")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
