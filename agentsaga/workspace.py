"""Where a run's steps execute, and the git actions the engine takes on it.

``GitWorkspace`` drives ``gitops`` (a worktree or a branch checked out in place, ghost-commit
snapshots, compare-and-swap resets). ``PlainWorkspace`` (``isolation: none``) is a folder
with no git: steps run there and git compensations are refused at load. The engine talks
to both through the same few methods, and imports gitpython only when a run uses git.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from agentsaga.errors import GitUnsafe


class RunWorkspace(Protocol):
    path: Path
    uses_git: bool

    def to_json(self) -> dict[str, Any]: ...
    def head(self) -> str | None: ...
    def snapshot(self, ref: str) -> str | None: ...
    def commit(self, message: str) -> str | None: ...
    def reset(self, snapshot: str, expected_head: str | None, force: bool) -> None: ...
    def revert(self, base: str, commit: str, expected_head: str | None, force: bool) -> None: ...
    def teardown(self, run_id: str, keep_refs: bool, force: bool) -> None: ...
    def exists(self) -> bool: ...


class PlainWorkspace:
    uses_git = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def to_json(self) -> dict[str, Any]:
        return {"isolation": "none", "path": str(self.path)}

    def head(self) -> str | None:
        return None

    def snapshot(self, ref: str) -> str | None:
        return None

    def commit(self, message: str) -> str | None:
        return None

    def reset(self, snapshot: str, expected_head: str | None, force: bool) -> None:
        raise GitUnsafe("git: reset needs a git workspace (workspace.isolation is 'none')")

    def revert(self, base: str, commit: str, expected_head: str | None, force: bool) -> None:
        raise GitUnsafe("git: revert needs a git workspace (workspace.isolation is 'none')")

    def teardown(self, run_id: str, keep_refs: bool, force: bool) -> None:
        return None

    def exists(self) -> bool:
        return self.path.is_dir()


class GitWorkspace:
    uses_git = True

    def __init__(self, ws: Any) -> None:
        self.ws = ws  # a gitops.Workspace
        self.path = Path(ws.path)
        #: Where the run left its branch (the newest step commit); compare-and-swap for
        #: deleting the branch. Set by the engine before a rollback's teardown.
        self.expected_head: str | None = None

    @classmethod
    def create(
        cls,
        repo_root: Path,
        run_id: str,
        branch: str,
        isolation: str,
        allow_dirty: bool,
        start_point: str | None = None,
        pool: bool = True,
    ) -> GitWorkspace:
        from agentsaga import gitops

        return cls(
            gitops.create_workspace(
                repo_root,
                run_id,
                branch,
                isolation,
                allow_dirty,
                start_point=start_point,
                pool=pool,
            )
        )

    def reopen(self) -> None:
        from agentsaga import gitops

        gitops.reopen_workspace(self.ws)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.ws.to_json()
        return data

    def head(self) -> str | None:
        from agentsaga import gitops

        return gitops.head(self.ws)

    def snapshot(self, ref: str) -> str | None:
        from agentsaga import gitops

        return gitops.snapshot(self.ws, ref)

    def commit(self, message: str) -> str | None:
        from agentsaga import gitops

        return gitops.commit_all(self.ws, message)

    def reset(self, snapshot: str, expected_head: str | None, force: bool) -> None:
        from agentsaga import gitops

        gitops.reset_to(self.ws, snapshot, expected_head, force)

    def revert(self, base: str, commit: str, expected_head: str | None, force: bool) -> None:
        from agentsaga import gitops

        gitops.revert_commits(self.ws, base, commit, expected_head, force)

    def teardown(self, run_id: str, keep_refs: bool, force: bool) -> None:
        from agentsaga import gitops

        expected = None
        if gitops.workspace_exists(self.ws):
            expected = self.expected_head
        gitops.delete_workspace(
            self.ws, run_id, keep_refs=keep_refs, expected_head=expected, force=force
        )

    def exists(self) -> bool:
        from agentsaga import gitops

        return gitops.workspace_exists(self.ws)


def from_json(data: dict[str, Any], run_id: str) -> RunWorkspace:
    """The workspace a run record describes. A record still marked ``planned`` means the
    process died while creating it: whatever ``gitops`` had recorded is what exists."""
    if data.get("isolation") == "none":
        return PlainWorkspace(Path(data["path"]))
    from agentsaga import gitops

    if data.get("planned"):
        intended = gitops.intended_workspace(Path(data["repo_root"]), run_id)
        if intended is None:
            return PlainWorkspace(Path(data["repo_root"]))
        return GitWorkspace(intended)
    return GitWorkspace(gitops.Workspace.from_json(data))
