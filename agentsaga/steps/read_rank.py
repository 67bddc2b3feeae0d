"""Which files the read step reads first, and how a file too big to fit is cut.

The order, by tier, then path order within a tier:

0. files the plan names (their path, or a file name that only one matched file has);
1. files the failure names: the paths in tracebacks and test ids of ``rewind.error`` and of
   earlier test steps' output;
2. the files those import, and what those import (Python ``import``/``from ... import``,
   relative imports too, resolved against the matched files), nearer levels first;
3. the rest, most similar first: how many of the path's words (``src/pkg/tokenizer.py``
   -> pkg, tokenizer) the plan and the failure mention.

Nothing here reads a file except to follow imports of tiers 0 and 1, and nothing here
counts tokens: the read step does that, only for what can still fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
# Words every path has; they say nothing about relevance.
_COMMON = frozenset({"src", "lib", "tests", "test", "py", "init", "main", "__init__"})
_IMPORT = re.compile(
    r"^\s*(?:from\s+(\.*[\w.]*)\s+import\s+([\w*, ()]+)|import\s+([\w., ]+))", re.MULTILINE
)
#: When a file is cut to fit: lines kept around a line a traceback points at, at most
#: this many lines of a named function or class, and the file's first lines (imports).
_CONTEXT_LINES = 12
_BODY_LINES = 60
_HEAD_LINES = 20
#: Imports are followed this many levels from the named files (test -> module -> helper).
_IMPORT_DEPTH = 2


@dataclass
class Ranked:
    path: str
    tier: int  # 0 plan, 1 failure, 2 imported, 3 the rest
    why: str


def words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def named_in(text: str, paths: list[str]) -> set[str]:
    """Paths ``text`` names: in full, or by a file name no other matched path shares."""
    if not text:
        return set()
    found = {p for p in paths if p in text}
    by_name: dict[str, list[str]] = {}
    for p in paths:
        by_name.setdefault(PurePosixPath(p).name, []).append(p)
    for name, owners in by_name.items():
        if len(owners) == 1 and len(name) > 3 and name in text:
            if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text):
                found.add(owners[0])
    return found


def failure_named(paths_in_failure: list[str], paths: list[str], root: Path) -> set[str]:
    """Matched paths that the failure's tracebacks point at (absolute paths under the
    workspace, or relative ones; another checkout's absolute path by its suffix)."""
    matched = set(paths)
    found: set[str] = set()
    root_s = str(root.resolve()) + "/"
    for raw in paths_in_failure:
        rel = raw[len(root_s) :] if raw.startswith(root_s) else raw.lstrip("./")
        if rel in matched:
            found.add(rel)
            continue
        # /home/u/project/src/pkg/x.py seen from a worktree: the longest matched suffix.
        parts = PurePosixPath(raw).parts
        for i in range(1, len(parts)):
            tail = "/".join(parts[i:])
            if tail in matched:
                found.add(tail)
                break
    return found


def _module_index(paths: list[str]) -> dict[str, str]:
    """Dotted module name -> path, for every suffix of each .py path's module name
    (``src/pkg/mod.py`` is ``src.pkg.mod``, ``pkg.mod`` and ``mod``); the shortest path
    wins a shared name."""
    index: dict[str, str] = {}
    for p in sorted(paths, key=lambda p: (p.count("/"), p)):
        if not p.endswith(".py"):
            continue
        parts = p[:-3].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        for i in range(len(parts)):
            index.setdefault(".".join(parts[i:]), p)
    return index


def imports_of(path: str, text: str, index: dict[str, str]) -> list[str]:
    """The matched files that ``text`` (the content of ``path``) imports."""
    found: list[str] = []
    package = PurePosixPath(path).parent.parts
    if PurePosixPath(path).name == "__init__.py":
        package = PurePosixPath(path).parent.parts
    for from_mod, names, plain in _IMPORT.findall(text):
        if plain:
            targets = [m.strip().split(" as ")[0] for m in plain.split(",")]
        else:
            dots = len(from_mod) - len(from_mod.lstrip("."))
            base = from_mod.lstrip(".")
            if dots:
                anchor = package[: len(package) - (dots - 1)] if dots > 1 else package
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base] if base else []
            # "from pkg import mod" imports a module when pkg/mod.py exists.
            for name in re.findall(r"\w+", names):
                targets.append(f"{base}.{name}" if base else name)
        for target in targets:
            hit = index.get(target)
            if hit and hit != path:
                found.append(hit)
    return list(dict.fromkeys(found))


def rank(
    paths: list[str],
    root: Path,
    plan: str,
    failure: str,
    failure_paths: list[str],
) -> list[Ranked]:
    """``paths`` ordered for reading: by tier, then similarity, then path."""
    planned = named_in(plan, paths)
    failed = failure_named(failure_paths, paths, root) | named_in(failure, paths)
    failed -= planned
    imported = _imported(sorted(planned | failed), root, _module_index(paths))
    wanted = words(plan) | words(failure)
    ranked = []
    for p in paths:
        if p in planned:
            ranked.append(Ranked(p, 0, "named by the plan"))
        elif p in failed:
            ranked.append(Ranked(p, 1, "named by the failure"))
        elif p in imported:
            ranked.append(Ranked(p, 2, f"imported by {imported[p][0]}"))
        else:
            ranked.append(Ranked(p, 3, ""))
    scores = {r.path: len((words(r.path.replace("/", " ")) - _COMMON) & wanted) for r in ranked}
    depth = {p: d for p, (_, d) in imported.items()}
    ranked.sort(
        key=lambda r: (r.tier, depth.get(r.path, 0), -scores[r.path] if r.tier == 3 else 0, r.path)
    )
    return ranked


def _imported(
    sources: list[str], root: Path, index: dict[str, str], depth: int = _IMPORT_DEPTH
) -> dict[str, tuple[str, int]]:
    """What ``sources`` import, and what that imports, ``depth`` levels deep: each path
    with the file that imports it and its level (1 = imported by a source)."""
    seen = set(sources)
    found: dict[str, tuple[str, int]] = {}
    frontier = sources
    for level in range(1, depth + 1):
        following: list[str] = []
        for source in frontier:
            if not source.endswith(".py"):
                continue
            try:
                text = (root / source).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for hit in imports_of(source, text, index):
                if hit not in seen:
                    seen.add(hit)
                    found[hit] = (source, level)
                    following.append(hit)
        frontier = following
    return found


_DEF = re.compile(r"^(\s*)(?:async\s+)?(?:def|class)\s+(\w+)")


def regions(
    text: str, hints: set[str], line_numbers: set[int], scale: int = 1
) -> list[tuple[int, int]]:
    """Line ranges (0-based, end exclusive) worth keeping when ``text`` must be cut: its
    head (imports), each function or class whose name the plan or the failure uses, and a
    window around each line a traceback points at. ``scale`` > 1 keeps less."""
    lines = text.splitlines()
    body_cap, context = _BODY_LINES // scale, _CONTEXT_LINES // scale
    spans = [(0, min(_HEAD_LINES // scale, len(lines)))]
    for i, line in enumerate(lines):
        m = _DEF.match(line)
        if not m or m.group(2).lower() not in hints:
            continue
        indent, end = len(m.group(1)), min(len(lines), i + body_cap)
        for j in range(i + 1, end):
            stripped = lines[j].strip()
            if stripped and len(lines[j]) - len(lines[j].lstrip()) <= indent:
                end = j
                break
        spans.append((i, end))
    for n in line_numbers:
        if 0 < n <= len(lines):
            spans.append((max(0, n - 1 - context), min(len(lines), n + context)))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def cut(text: str, spans: list[tuple[int, int]]) -> tuple[str, list[str]]:
    """``text`` cut to ``spans``, with a marker where lines were left out; and the ranges
    kept, 1-based ("1-20", "88-112")."""
    lines = text.splitlines()
    out: list[str] = []
    previous = 0
    for start, end in spans:
        if start > previous:
            out.append(f"# ... lines {previous + 1}-{start} left out ...")
        out.extend(lines[start:end])
        previous = end
    if previous < len(lines):
        out.append(f"# ... lines {previous + 1}-{len(lines)} left out ...")
    return "\n".join(out) + "\n", [f"{s + 1}-{e}" for s, e in spans]
