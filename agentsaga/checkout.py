"""What a run takes from the user's checkout when its worktree is made, and says so.

A worktree holds the commit it starts from and nothing else. On a real project that is
not enough, and each gap used to be silent:

* **Uncommitted changes.** :func:`start_point` lists the files that differ from HEAD. The
  run starts from HEAD unless told otherwise (``--from-worktree``, or ``workspace.start:
  worktree``): then from a snapshot of the working tree (a ghost commit on top of HEAD,
  pinned under ``refs/agentsaga/<run>/start``; the user's index and files are untouched).
  Either way the choice and the files are recorded and reported, never silent.
* **Submodules** are checked out in the worktree (from the user's own checkout when it
  has them), or the run fails saying why.
* **Gitignored files a run needs** (a generated ``_version.py``, ``.env``, a built
  extension): ``workspace.include: [globs]`` copies them from the checkout into the new
  worktree. Only ignored files: a file git would see would be committed by the first
  step and leak into the run branch; it is refused with a note instead.
* **``workspace.setup: <command>``** runs once in the new worktree (generate files,
  build an extension), with the user's venv active; its output goes to the run's logs.

All of it lives inside the worktree, which rollback removes: nothing to undo besides.
A setup command that writes outside the worktree (``pip install -e .`` into the user's
venv, say) is the user's own effect, and the README says so.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentsaga.errors import StepFailed

START_CHOICES = ("head", "worktree")
_SHOWN = 8


def start_point(
    repo_root: Path, run_id: str, start: str | None
) -> tuple[str | None, dict[str, Any], str | None]:
    """The commit a new run's branch starts from (None: HEAD), the record of the choice,
    and a note for the user when the checkout has uncommitted changes."""
    from agentsaga import gitops

    # Refuses a bare repository, one with no commit or mid-merge, in the words the
    # workspace's own creation would use.
    repo_root = gitops.inspect_repo(repo_root).root
    dirty = gitops.dirty_files(repo_root)
    if not dirty:
        return None, {"from": "HEAD", "uncommitted": []}, None
    names = [entry[3:] for entry in dirty]
    listed = ", ".join(entry for entry in dirty[:_SHOWN])
    listed += f" (+{len(dirty) - _SHOWN} more)" if len(dirty) > _SHOWN else ""
    if start == "worktree":
        sha = gitops.snapshot_checkout(repo_root, f"{gitops.REF_ROOT}/{run_id}/start")
        note = (
            f"starting from your working tree, uncommitted changes included ({listed}): "
            f"snapshot {sha[:12]} on top of HEAD; your checkout is not touched"
        )
        return sha, {"from": f"working tree ({sha[:12]})", "uncommitted": names}, note
    note = (
        f"your checkout has uncommitted changes that this run does NOT see, since it starts "
        f"from HEAD: {listed}. To start from them, rerun with --from-worktree (or set "
        "workspace.start: worktree); --from-head silences this note"
    )
    record = {"from": "HEAD", "uncommitted": names}
    return None, record, None if start == "head" else note


def furnish(
    worktree: Path,
    repo_root: Path,
    spec: dict[str, Any],
    run_command: Callable[[str | list[str], Path], tuple[int | None, str]],
) -> tuple[dict[str, Any], list[str]]:
    """Submodules, ``include`` and ``setup`` in a new worktree: what was done (for the run
    record) and notes for the user. A failing setup raises ``StepFailed``."""
    from agentsaga import gitops

    record: dict[str, Any] = {}
    notes: list[str] = []
    submodules = gitops.init_submodules(worktree, repo_root)
    if submodules:
        record["submodules"] = submodules
    if spec.get("include"):
        copied, refused = include(repo_root, worktree, list(spec["include"]))
        record["included"] = copied
        notes += refused
    if spec.get("setup"):
        code, log = run_command(spec["setup"], worktree)
        record["setup"] = f"exit {code} (log: {log})"
        if code != 0:
            raise StepFailed(
                f"workspace.setup exited {code} in {worktree}; its output is in {log}. Fix "
                "the command, then roll this run back (its worktree goes) and start again",
                kind="infrastructure",
                retryable=False,
            )
    return record, notes


def include(repo_root: Path, worktree: Path, globs: list[str]) -> tuple[list[str], list[str]]:
    """Copy the gitignored files that ``globs`` match from the checkout into the worktree.
    Returns the paths copied and a note for each glob or file not copied, and why."""
    from agentsaga import gitops

    root = repo_root.resolve()
    notes: list[str] = []
    matched: dict[str, Path] = {}
    for pattern in globs:
        found = [p for p in _glob(root, pattern) if p.is_file() or p.is_symlink()]
        if not found:
            notes.append(f"workspace.include {pattern!r} matched no file in {root}")
        for path in found:
            matched.setdefault(path.relative_to(root).as_posix(), path)
    rels = sorted(matched)
    ignored = gitops.ignored_by_git(root, rels)
    in_git = gitops.tracked(root, rels)
    copied = []
    for rel in rels:
        source = matched[rel]
        if rel in in_git:
            continue  # the worktree has it from git already
        if rel not in ignored:
            notes.append(
                f"workspace.include: {rel} is not ignored by git, so the run would commit it; "
                "add it to .gitignore (or commit it) to have it in the run"
            )
            continue
        if not source.resolve().is_relative_to(root):
            notes.append(f"workspace.include: {rel} is a symlink out of the repository; skipped")
            continue
        target = worktree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        copied.append(rel)
    return copied, notes


_SKIP_DIRS = {".git", ".agentsaga"}


def _glob(root: Path, pattern: str) -> list[Path]:
    """``pattern`` under ``root`` (``**`` spans folders), never inside .git or agentsaga's
    own folder, and never through a '..'."""
    pattern = pattern.removeprefix("./")
    if pattern.startswith("/") or ".." in Path(pattern).parts:
        return []
    from agentsaga.steps.read import glob_regex

    regex = glob_regex(pattern)
    literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    base = root / (literal.rsplit("/", 1)[0] if "/" in literal else "")
    found = []
    for folder, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in files:
            path = Path(folder) / name
            if regex.match(path.relative_to(root).as_posix()):
                found.append(path)
    return sorted(found)
