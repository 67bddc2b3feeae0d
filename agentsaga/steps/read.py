"""``read``: gather files by glob into the prompt context, counted with tiktoken.

Files the plan names come first, then the rest in path order, until ``max_tokens``; what
did not fit, or was binary, oversized or unreadable, is listed in ``skipped`` with its
reason and token count. In a git repository .gitignore is honoured (git's own listing),
whatever the run's isolation.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentsaga.context import StepContext

DEFAULT_MAX_FILE_BYTES = 256_000
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


def execute(ctx: StepContext) -> dict[str, Any]:
    from agentsaga import tokens

    patterns = [glob_regex(_relative(p)) for p in ctx.params["files"]]
    excludes = [glob_regex(_relative(p)) for p in ctx.params.get("exclude", [])]
    max_tokens = ctx.params.get("max_tokens")
    max_bytes = int(ctx.params.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
    root = ctx.cwd
    matched = [
        path
        for path in list_files(root, ctx.workspace.uses_git)
        if any(p.match(path) for p in patterns) and not any(e.match(path) for e in excludes)
    ]
    plan = _plan_text(ctx)
    # Files the plan names first (stable within each group), then path order.
    ordered = sorted(matched, key=lambda p: (0 if p in plan else 1, p))
    chosen: list[str] = []
    rendered: list[str] = []
    skipped: list[dict[str, Any]] = []
    total = 0
    for path in ordered:
        full = root / path
        try:
            size = full.stat().st_size
            if size > max_bytes:
                skipped.append({"path": path, "reason": f"over {max_bytes} bytes", "tokens": None})
                continue
            data = full.read_bytes()
        except OSError as exc:
            skipped.append({"path": path, "reason": f"unreadable: {exc.strerror}", "tokens": None})
            continue
        if b"\0" in data[:8192]:
            skipped.append({"path": path, "reason": "binary", "tokens": None})
            continue
        text = data.decode("utf-8", errors="replace")
        block = render_file(path, text)
        count = tokens.count(block)
        if max_tokens is not None and total + count > int(max_tokens):
            skipped.append({"path": path, "reason": "over max_tokens", "tokens": count})
            continue
        chosen.append(path)
        rendered.append(block)
        total += count
    return {
        "files": "\n".join(rendered),
        "paths": chosen,
        "tokens": total,
        "tokens_estimated": not tokens.is_exact(),
        "skipped": skipped,
    }
