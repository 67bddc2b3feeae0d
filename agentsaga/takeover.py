"""What a process does when it takes over a run that another process was driving and
that died: the lease says there is no live owner now, so whatever the dead owner left
running or locked is left over, not in use.

* A step's command still running (commands live in their own session, so killing
  agentsaga does not stop them): the attempt's token, recorded before anything ran, is in
  the environment of every process the step started; those processes and their process
  groups are stopped, and waited for, before anything compensates or re-runs the step,
  so its effect can neither land after its undo nor stack on a second run.
* A worktree folder deleted by hand is recreated from the run branch, so rollback can
  reset and tear down, and resume says so; one whose ``.git`` link was broken by hand is
  repaired (``git worktree repair``) or, its git dir gone, re-added the same way.
* Stale git lock files under agentsaga's own refs and worktree (``gitops.stale_locks``)
  would make every later git command fail after its retries: they are removed, and the
  run's events say which.
"""

from __future__ import annotations

from agentsaga.runtime import Event, Runtime
from agentsaga.states import StepStatus
from agentsaga.workspace import GitWorkspace


def take_over(rt: Runtime, run_id: str) -> None:
    """Clear what a dead owner left behind; called with the run's lease held."""
    _stop_left_running(rt, run_id)
    run = rt.store.get_run(run_id)
    ws = rt.workspace(run)
    if isinstance(ws, GitWorkspace):
        _repair_broken_worktree(rt, run_id, ws)
        _recreate_deleted_worktree(rt, run_id, ws)
        _remove_stale_locks(rt, run_id, ws)


def _stop_left_running(rt: Runtime, run_id: str) -> None:
    from agentsaga.process import stop_attempt_processes

    for attempt in rt.store.attempts(run_id, status=StepStatus.RUNNING):
        if not attempt.process:
            continue
        groups = stop_attempt_processes(attempt.process)
        if groups:
            named = ", ".join(str(pgid) for pgid in groups)
            rt.emit(
                Event(
                    "note",
                    run_id,
                    attempt.step_id,
                    message=(
                        f"stopped attempt {attempt.attempt}'s command, left running by a "
                        f"killed process (process group{'s' if len(groups) > 1 else ''} "
                        f"{named})"
                    ),
                )
            )


def _recreate_deleted_worktree(rt: Runtime, run_id: str, ws: GitWorkspace) -> None:
    """A worktree folder deleted by hand (the run branch still there): re-add it from the
    branch, so that resets, reverts and the teardown work, and say what was lost."""
    from agentsaga import gitops

    inner = ws.ws
    if inner.isolation != "worktree" or (inner.path / ".git").exists():
        return
    if not gitops.ref_exists(inner.repo_root, f"refs/heads/{inner.branch}"):
        return
    ws.reopen()
    if "released" in rt.store.get_run(run_id).state:
        # Handed back by `agentsaga release` (release.py): nothing was lost.
        message = (
            f"the run's worktree was released; re-added it at {inner.path} from the run "
            f"branch {inner.branch}"
        )
    else:
        message = (
            f"the run's worktree {inner.path} was deleted; recreated it from the run "
            f"branch {inner.branch} (files that were not committed there are gone, "
            "except what the step snapshots kept)"
        )
    rt.emit(Event("note", run_id, message=message))


def _repair_broken_worktree(rt: Runtime, run_id: str, ws: GitWorkspace) -> None:
    """A worktree whose ``.git`` file was edited, or whose git dir was deleted, by hand:
    every git command in it failed (a rollback stopped on a misleading error)."""
    from agentsaga import gitops

    inner = ws.ws
    if not gitops.worktree_link_broken(inner):
        return
    if not gitops.ref_exists(inner.repo_root, f"refs/heads/{inner.branch}"):
        return  # nothing to re-add it from: the teardown deletes the folder
    readded = gitops.repair_worktree(inner)
    rt.emit(
        Event(
            "note",
            run_id,
            message=(
                f"the run's worktree {inner.path} had lost its link to the repository; "
                + (
                    f"re-added it from the run branch {inner.branch} (files that were not "
                    "committed there are gone, except what the step snapshots kept)"
                    if readded
                    else "repaired it (git worktree repair)"
                )
            ),
        )
    )


def _remove_stale_locks(rt: Runtime, run_id: str, ws: GitWorkspace) -> None:
    from agentsaga import gitops

    for lock in gitops.stale_locks(ws.ws, run_id):
        lock.unlink(missing_ok=True)
        rt.emit(
            Event(
                "note",
                run_id,
                message=f"removed a stale git lock left by a killed process: {lock}",
            )
        )
