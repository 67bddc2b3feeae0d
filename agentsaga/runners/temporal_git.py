"""Git for Temporal workers: the run's workspace on this host, and across hosts.

On one host (no ``workspace.remote``) a run's workspace is the one ``run`` created at
submission, in the user's repository, and every worker of that host uses it as recorded.

With ``workspace.remote: URL`` the workspace lives on whichever host holds it:

* each host keeps a *mirror*, a clone of the remote under the worker's home
  (``mirrors/<hash of the URL>``), fetched before a run starts or moves there;
* the run's worktree is created in the holder's mirror (``gitops.create_workspace``, as
  locally), and after every activity that may have changed it the run branch and the
  snapshot refs (``refs/agentsaga/<run>/...``, which compensations reset to) are pushed
  with ``--force`` (a compensation moves the branch back);
* the host holding the worktree is recorded in the run's workspace (``host``); the steps
  go to its task queue. When that host is lost (nothing polls its queue: the workflow's
  ``schedule_to_start_timeout``), another host *takes over*: it fetches the pushed branch
  and refs into its mirror, makes its own worktree there, and becomes the holder. Work
  the lost host did after its last push is lost with it, exactly as a crashed step is:
  the attempt is recovered (compensated from the pushed snapshot) and re-run.

Rollback works from any host for the same reason: the branch and snapshots are on the
remote; ``teardown`` deletes them there too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from agentsaga.errors import GitError
from agentsaga.runtime import Runtime
from agentsaga.store import RunRecord
from agentsaga.workspace import GitWorkspace, RunWorkspace

REF_ROOT = "refs/agentsaga"


def remote_of(run: RunRecord) -> str | None:
    return (run.workspace or {}).get("remote") or None


def holder(run: RunRecord, host_id: str) -> str | None:
    """The host whose queue gets the run's worktree steps (None: any worker)."""
    if remote_of(run) is None:
        return None
    return str((run.workspace or {}).get("host") or host_id)


def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def mirror_path(home: Path, url: str) -> Path:
    return home / "mirrors" / hashlib.sha256(url.encode()).hexdigest()[:16]


def ensure_mirror(home: Path, url: str) -> Path:
    """This host's clone of ``url``, fetched: the repository its worktrees live in."""
    path = mirror_path(home, url)
    if not (path / ".git").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _git(path.parent, "clone", "-q", url, str(tmp))
        _git(tmp, "config", "user.name", "agentsaga")
        _git(tmp, "config", "user.email", "agentsaga@localhost")
        os.replace(tmp, path)
    else:
        _git(path, "fetch", "-q", "origin")
    return path


def _fetch_run(mirror: Path, branch: str, run_id: str) -> None:
    """The run's pushed branch and snapshot refs, into the mirror (taking over)."""
    _git(
        mirror,
        "fetch",
        "-q",
        "--force",
        "origin",
        f"+refs/heads/{branch}:refs/heads/{branch}",
        f"+{REF_ROOT}/{run_id}/*:{REF_ROOT}/{run_id}/*",
    )


def push_run(ws: GitWorkspace, run_id: str, url: str) -> None:
    """The run branch and its snapshot refs, to the remote (``--force``: a compensation
    moves the branch back)."""
    mirror = Path(ws.ws.repo_root)
    refs = [f"+refs/heads/{ws.ws.branch}:refs/heads/{ws.ws.branch}"]
    if _git(mirror, "for-each-ref", "--format=%(refname)", f"{REF_ROOT}/{run_id}/"):
        refs.append(f"+{REF_ROOT}/{run_id}/*:{REF_ROOT}/{run_id}/*")
    _git(mirror, "push", "-q", "origin", *refs)


def delete_remote_run(mirror: Path, url: str, branch: str, run_id: str) -> None:
    """After a rollback: the run branch and its refs gone from the remote too."""
    listed = _git(mirror, "ls-remote", "origin", f"refs/heads/{branch}", f"{REF_ROOT}/{run_id}/*")
    refs = [line.split("\t", 1)[1] for line in listed.splitlines() if "\t" in line]
    if refs:
        _git(mirror, "push", "-q", "origin", *[f":{ref}" for ref in refs])


class RemoteWorkspace(GitWorkspace):
    """A worktree in this host's mirror whose snapshots reach the remote as they are
    taken: the attempt they belong to may be recovered on another host, which resets to
    them."""

    url: str = ""

    def snapshot(self, ref: str) -> str | None:
        sha = super().snapshot(ref)
        if sha:
            _git(Path(self.ws.repo_root), "push", "-q", "--force", "origin", f"{ref}:{ref}")
        return sha


class TemporalRuntime(Runtime):
    """The local runner's runtime, with the run's workspace placed on this host."""

    host_id: str = ""
    worker_home: Path = Path(".agentsaga")
    #: ``[step id, message]`` of the notes emitted during the activity (retrying in...).
    notes: list[list[str | None]]

    def workspace(self, run: RunRecord) -> RunWorkspace:
        url = remote_of(run)
        if url is None:
            return super().workspace(run)
        return _local_workspace(self, run, url)


def _local_workspace(rt: TemporalRuntime, run: RunRecord, url: str) -> RemoteWorkspace:
    """The run's worktree in this host's mirror, as the store describes it."""
    from agentsaga import gitops

    data = dict(run.workspace or {})
    mirror = mirror_path(rt.worker_home, url)
    fields = {k: data[k] for k in gitops.Workspace.__dataclass_fields__ if k in data}
    fields["path"] = mirror / ".agentsaga" / "worktrees" / run.id
    fields["repo_root"], fields["path"] = str(mirror), str(fields["path"])
    ws = RemoteWorkspace(gitops.Workspace.from_json(fields))
    ws.url = url
    return ws


def open_workspace(
    rt: Runtime, run: RunRecord, host_id: str, for_rollback: bool = False
) -> RunWorkspace:
    """Make the run's workspace usable here: reopen a worktree removed by hand; with a
    remote, create it (first activity of a run) or take it over from a lost host."""
    url = remote_of(run)
    if url is None:
        ws = rt.workspace(run)
        if isinstance(ws, GitWorkspace) and not for_rollback:
            ws.reopen()
        return ws
    assert isinstance(rt, TemporalRuntime)
    mirror = ensure_mirror(rt.worker_home, url)
    data = dict(run.workspace or {})
    if data.get("planned", True) and "base_commit" not in data:
        return _create_remote_workspace(rt, run, url, mirror, host_id)
    ws = _local_workspace(rt, run, url)
    if data.get("host") != host_id:
        _take_over(ws, run, host_id)
        rt.store.update_run(run.id, workspace={**data, "host": host_id})
    elif not for_rollback or ws.exists():
        ws.reopen()
    return ws


def _create_remote_workspace(
    rt: Runtime, run: RunRecord, url: str, mirror: Path, host_id: str
) -> GitWorkspace:
    data = dict(run.workspace or {})
    ws = GitWorkspace.create(mirror, run.id, str(data["branch"]), "worktree", False)
    rt.store.update_run(run.id, workspace={**ws.to_json(), "remote": url, "host": host_id})
    push_run(ws, run.id, url)
    return ws


def _take_over(ws: GitWorkspace, run: RunRecord, host_id: str) -> None:
    """This host becomes the holder: drop any stale worktree of the run it had, fetch the
    pushed state, and check it out in a fresh worktree."""
    mirror = Path(ws.ws.repo_root)
    branch = ws.ws.branch
    if ws.path.exists():
        _git(mirror, "worktree", "remove", "--force", "--force", str(ws.path))
    _git(mirror, "worktree", "prune")
    _fetch_run(mirror, branch, run.id)
    ws.path.parent.mkdir(parents=True, exist_ok=True)
    _git(mirror, "worktree", "add", "-q", str(ws.path), branch)


def publish(rt: Runtime, run_id: str, ws: RunWorkspace) -> None:
    """After an activity that may have moved the branch: push it (with a remote)."""
    run = rt.store.get_run(run_id)
    url = remote_of(run)
    if url is None or not isinstance(ws, GitWorkspace):
        return
    if ws.exists():
        push_run(ws, run_id, url)
    elif run.status in ("rolled_back",):
        delete_remote_run(Path(ws.ws.repo_root), url, ws.ws.branch, run_id)
