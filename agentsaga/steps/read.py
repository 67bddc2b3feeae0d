"""``read``: gather files by glob into the prompt context, counted with tiktoken.

The order is :mod:`agentsaga.steps.read_rank`'s: files the plan names, files the failure
names (tracebacks, test ids), what those import, then the rest by how much their path has
in common with the plan and the failure. Files go in until ``max_tokens``. Only what can
still fit is tokenised: a file whose size alone says it cannot fit is skipped unread (its
tokens are then an estimate, and say so), which keeps a read of a 2,000-file repository
under a second. A file the plan or the failure names that is too big is cut to its
relevant regions (its first lines, the functions and classes the plan or failure name,
the lines a traceback points at) and listed in ``cut``; one that does not fit even so is
listed in ``skipped`` with that reason, never dropped without a word. What was not read
is in ``skipped`` with its reason.

A read whose patterns match no file at all is an error: a typo must not pass as "nothing
to read". A pattern that matched nothing while others did is listed in ``skipped``. In a
git repository .gitignore is honoured (git's own listing), whatever the run's isolation.
Reads are confined exactly like edits (:func:`agentsaga.edits.confine_path`): a symlink
that leads outside the workspace or into ``.git``, and agentsaga's own state, are never
read.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentsaga.context import StepContext
from agentsaga.errors import StepFailed
from agentsaga.steps import read_rank

DEFAULT_MAX_FILE_BYTES = 256_000
#: Source text runs ~3.5-4.5 bytes per token (o200k, Python and prose): a file whose size
#: over this exceeds what is left is skipped unread and untokenised, its tokens given as an
#: estimate. Generous, so a file that would fit is rarely skipped; tokenising only what
#: can fit is what keeps a 2,000-file read under a second.
_MAX_BYTES_PER_TOKEN = 5
#: Paths that confine_path refuses by name alone (.git in any spelling, agentsaga's own).
_SUSPICIOUS = re.compile(r"(^|/)\.git[. ]*(/|$)|^\.agentsaga|\.\.", re.IGNORECASE)
_FENCE_LANG = {
    ".py": "python",
    ".js": "javascript",
    ".ts": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".md": "markdown",
    ".json": "json",
    ".yml": "yaml",
    ".yaml": "yaml",
    ".sh": "bash",
    ".toml": "toml",
}


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """``src/**/*.py`` as a regex over slash-separated relative paths: ``*`` and ``?``
    stay within one path segment, ``**/`` spans zero or more directories."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _relative(pattern: str) -> str:
    """``./src/*.py`` -> ``src/*.py``. Not ``lstrip("./")``, which would also eat the dot
    of ``.github/**`` or ``.env*``."""
    while pattern.startswith("./"):
        pattern = pattern[2:]
    return pattern


def list_files(root: Path, uses_git: bool) -> list[str]:
    # .gitignore is honoured whenever the folder is in a git repository, not only when the
    # run has a git workspace: `isolation: none` in a repo must not read build output or
    # an ignored .env into a prompt.
    resolved = Path(root).resolve()
    in_work_tree = any((d / ".git").exists() for d in (resolved, *resolved.parents))
    if uses_git or in_work_tree:
        from agentsaga import gitops

        return gitops.list_files(root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", ".agentsaga")]
        for name in files:
            found.append(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/"))
    return sorted(found)


def render_file(path: str, content: str) -> str:
    lang = _FENCE_LANG.get(Path(path).suffix, "")
    fence = "````" if "```" in content else "```"
    return f"{path}\n{fence}{lang}\n{content.rstrip(chr(10))}\n{fence}\n"


def _plan_text(ctx: StepContext) -> str:
    texts = []
    for step in ctx.pipeline.steps[: ctx.step.index]:
        if step.kind == "plan":
            output = (ctx.namespace.get("steps", {}).get(step.id) or {}).get("output") or {}
            texts.append(str(output.get("text") or ""))
    return "\n".join(texts)


def _failure_text(ctx: StepContext) -> str:
    """Why the run came back here, and what earlier test steps printed."""
    texts = [str((ctx.namespace.get("rewind") or {}).get("error") or "")]
    steps = ctx.namespace.get("steps", {})
    for step in ctx.pipeline.steps[: ctx.step.index]:
        if step.kind == "test":
            seen = steps.get(step.id) or {}
            output = seen.get("output") or {}
            texts += [str(output.get("stdout") or ""), str(output.get("stderr") or "")]
            texts.append(str((seen.get("error") or {}).get("message") or ""))
    return "\n".join(t for t in texts if t)


def _match(ctx: StepContext, root: Path) -> tuple[list[str], list[str]]:
    raw = [_relative(p) for p in ctx.params["files"]]
    patterns = [(p, glob_regex(p)) for p in raw]
    excludes = [glob_regex(_relative(p)) for p in ctx.params.get("exclude", [])]
    hits = dict.fromkeys(raw, 0)
    matched = []
    for path in list_files(root, ctx.workspace.uses_git):
        found = [p for p, regex in patterns if regex.match(path)]
        if not found or any(e.match(path) for e in excludes):
            continue
        matched.append(path)
        for p in found:
            hits[p] += 1
    # Nothing to read at all is an error (a typo, a wrong folder); a pattern that matched
    # nothing while others did (pyproject.toml or setup.cfg, whichever the project has)
    # is listed in `skipped`, so a typo still shows.
    if not matched:
        names = ", ".join(repr(p) for p in hits)
        raise StepFailed(
            f"read: {names} matched no file in {root} (files .gitignore hides and those "
            "`exclude:` removes are never read); fix the globs",
            kind="error",
            retryable=False,
        )
    missing = [p for p, n in hits.items() if n == 0]
    return matched, missing


def _line_numbers(failure: str, root: Path) -> dict[str, set[int]]:
    """Traceback lines per file the failure names (path as matched, relative)."""
    found: dict[str, set[int]] = {}
    pairs = re.findall(r'File "([^"]+)", line (\d+)', failure)
    pairs += re.findall(r"^(\S+?\.py):(\d+):", failure, re.MULTILINE)
    root_s = str(root.resolve()) + "/"
    for path, line in pairs:
        rel = path[len(root_s) :] if path.startswith(root_s) else path
        found.setdefault(rel, set()).add(int(line))
    return found


def execute(ctx: StepContext) -> dict[str, Any]:
    from agentsaga import testfailures, tokens

    max_tokens = ctx.params.get("max_tokens")
    root = ctx.cwd
    matched, missing = _match(ctx, root)
    plan, failure = _plan_text(ctx), _failure_text(ctx)
    ranked = read_rank.rank(matched, root, plan, failure, testfailures.traceback_paths(failure))
    reader = _Reader(
        root,
        int(max_tokens) if max_tokens is not None else None,
        int(ctx.params.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES),
        read_rank.words(plan) | read_rank.words(failure),
        _line_numbers(failure, root),
    )
    for path in missing:
        reader.skipped.append(
            {"path": path, "reason": "the pattern matched no file", "tokens": None}
        )
    for item in ranked:
        reason = reader.take(item)
        if reason is not None:
            why, count, estimated = reason
            entry: dict[str, Any] = {
                "path": item.path,
                "reason": f"{why} ({item.why})" if item.tier <= 1 else why,
                "tokens": count,
            }
            if estimated:
                entry["estimated"] = True
            reader.skipped.append(entry)
    return {
        "files": "\n".join(reader.rendered),
        "paths": reader.chosen,
        "tokens": reader.total,
        "tokens_estimated": not tokens.is_exact(),
        "skipped": reader.skipped,
        "cut": reader.cut,
    }


class _Reader:
    """Files taken in rank order while they fit; what was not, and why."""

    def __init__(
        self,
        root: Path,
        left: int | None,
        max_bytes: int,
        hints: set[str],
        lines_of: dict[str, set[int]],
    ) -> None:
        self.root, self.left, self.max_bytes = root, left, max_bytes
        self.root_s = str(root)
        self.hints, self.lines_of = hints, lines_of
        self.chosen: list[str] = []
        self.rendered: list[str] = []
        self.skipped: list[dict[str, Any]] = []
        self.cut: list[dict[str, Any]] = []
        self.total = 0

    def take(self, item: read_rank.Ranked) -> tuple[str, int | None, bool] | None:
        """Read ``item`` into the context; or why not: (reason, tokens, estimated)."""
        from agentsaga import tokens
        from agentsaga.edits import confine_path
        from agentsaga.errors import EditPathError

        path, named, left = item.path, item.tier <= 1, self.left
        try:
            # os.path, not pathlib: this runs for every matched file, 2,000 of them and more.
            full = os.path.join(self.root_s, path)
            # Resolving every path costs ~1 ms a file on a loaded machine; only a symlink
            # (git lists none beyond a linked folder) or a suspicious name needs it.
            if os.path.islink(full) or _SUSPICIOUS.search(path):
                full = str(confine_path(self.root, path))
            size = os.stat(full).st_size
        except EditPathError as exc:
            return f"not read: {exc.reason}", None, False
        except OSError as exc:
            return f"unreadable: {exc.strerror}", None, False
        if size > self.max_bytes and not named:
            return f"over {self.max_bytes} bytes", None, False
        try:
            with open(full, "rb") as handle:
                data = handle.read()  # cheap; tokenising is what costs
        except OSError as exc:
            return f"unreadable: {exc.strerror}", None, False
        if b"\0" in data[:8192]:
            return "binary", None, False
        if left is not None and not named and size // _MAX_BYTES_PER_TOKEN > left:
            return "over max_tokens", size // 4, True
        text = data.decode("utf-8", errors="replace")
        block = render_file(path, text)
        count = tokens.count(block)
        if left is not None and count > left:
            if not named:
                return "over max_tokens", count, False
            fitted = _fit(path, text, self.hints, self.lines_of.get(path, set()), left)
            if fitted is None:
                return "over max_tokens even cut to its relevant lines", count, False
            block, kept, cut_count = fitted
            self.cut.append({"path": path, "kept_lines": kept, "tokens": count, "why": item.why})
            count = cut_count
        self.chosen.append(path)
        self.rendered.append(block)
        self.total += count
        if self.left is not None:
            self.left -= count
        return None


def _fit(
    path: str, text: str, hints: set[str], line_numbers: set[int], left: int
) -> tuple[str, list[str], int] | None:
    """``text`` cut to its relevant regions, keeping less each time, until it fits."""
    from agentsaga import tokens

    for scale in (1, 2, 4):
        spans = read_rank.regions(text, hints, line_numbers, scale)
        cut_text, kept = read_rank.cut(text, spans)
        block = render_file(path, cut_text)
        count = tokens.count(block)
        if count <= left:
            return block, kept, count
    return None
