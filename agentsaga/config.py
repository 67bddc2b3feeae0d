"""Configuration: ``.agentsaga.yml`` in the repository, then the environment, then flags.

Only what a user sets lives here; defaults are in the code that uses them. Secrets are
never read from this file directly: it names the environment variable that holds a key
(``api_key_env``), so the file can be committed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from agentsaga import yaml_nodes
from agentsaga.errors import ConfigError
from agentsaga.schema import BOOL, INT, NUM, STR, Enum, MapOf, Obj, SchemaViolation
from agentsaga.yaml_nodes import Node, ScalarNode

CONFIG_FILE = ".agentsaga.yml"


class _MemoMode(Enum):
    """``memo: off`` unquoted is YAML's boolean false: read it as the user meant it."""

    def check(self, node: Node) -> str:
        if isinstance(node, ScalarNode) and node.value.lower() in ("off", "false", "no"):
            return "off"
        return super().check(node)


PROVIDER = Obj(
    {
        "type": Enum("anthropic", "openai", "scripted"),
        "base_url": STR,
        "api_key_env": STR,
        "model": STR,
        "timeout": NUM,
        "max_retries": INT,
        "max_retry_after": NUM,
    }
)
CONFIG = Obj(
    {
        "store": STR,
        "memo": _MemoMode("run", "global", "off"),
        "lease_ttl": NUM,
        "isolation": Enum("worktree", "branch", "none"),
        # workspace.pool's default for every pipeline (gitops/pool.py).
        "pool": BOOL,
        "providers": MapOf(PROVIDER),
        "prices": MapOf(MapOf(NUM)),
        "redact_env": BOOL,
        # Where `run` submits by default (agentsaga/runners/temporal_io.py).
        "temporal": Obj(
            {
                "address": STR,
                "task_queue": STR,
                "namespace": STR,
                "host_timeout": NUM,
                "history_events": INT,
            }
        ),
    }
)


def find_repo_root(start: Path) -> Path | None:
    """The git work tree containing ``start`` (without importing git: this runs at start-up)."""
    path = start.resolve()
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
        if (
            (candidate / "HEAD").is_file()
            and (candidate / "objects").is_dir()
            and (candidate / "refs").is_dir()
        ):
            return candidate  # a bare repository: gitops refuses it with a clear message
    return None


def main_worktree_root(root: Path) -> Path:
    """The repository a linked worktree belongs to (a run's own worktree under
    ``.agentsaga/worktrees/``, or one the user added): its store lives there, so commands
    run inside the worktree find the run instead of making a second store. ``root`` itself
    for a main work tree. Reads git's files directly: this runs at start-up."""
    dot_git = root / ".git"
    if not dot_git.is_file():
        return root
    try:
        line = dot_git.read_text(encoding="utf-8").strip()
        if not line.startswith("gitdir:"):
            return root
        gitdir = (root / line.removeprefix("gitdir:").strip()).resolve()
        common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    except OSError:
        return root
    return common.parent if common.name == ".git" and common.parent.is_dir() else root


def load_config(repo_root: Path | None) -> dict[str, Any]:
    if repo_root is None:
        return {}
    path = repo_root / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        node = yaml_nodes.compose(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {exc.problem}") from exc
    if node is None:
        return {}
    try:
        data: dict[str, Any] = CONFIG.check(node)
    except SchemaViolation as exc:
        at = exc.node.start_mark
        raise ConfigError(f"{path}:{at.line + 1}:{at.column + 1}: {exc.problem}") from None
    return data


def store_location(flag: str | None, config: dict[str, Any]) -> str | None:
    return flag or os.environ.get("AGENTSAGA_STORE") or config.get("store")
