"""A person's edits in a waiting run's worktree: saved first, then kept or refused.

A run stopped at a gate (``kind: approve``) leaves its worktree for review, and no process
drives it while it waits: whatever changes there meanwhile is a person's. So the gate
step pins a ghost commit of the worktree (:func:`pin`, at
``refs/agentsaga/<run>/<gate>/review-<visit>``) before its visit is recorded ``waiting``,
and whatever is about to reset the worktree or go on from it first compares it with the
pin (:func:`find`). A change is saved at once as a ghost commit at
``refs/agentsaga/<run>/<gate>/reviewer-edits-<visit>-<n>`` (a rollback's cleanup keeps these
refs), and then:

* ``reject``, ``rollback``, ``resume --from``/``--pipeline`` of the waiting run refuse
  (``EditsInWorktree``, exit 2) naming the files and the ref, unless ``--discard-edits``;
* ``approve`` keeps them: they become a commit of their own on the run branch
  (:func:`keep`, with trailers ``Agentsaga-Reviewer-Edits``, ``Agentsaga-Approved-By``). It is
  not a step's commit, so no compensation counts it as the run's: a rollback or rewind
  that would reset past it stops at it (compare-and-swap, exit 3, naming it) unless
  ``--force``;
* a decision recorded before the change (``--detach``, the web view) or a timeout applied
  later saves the change and says where, then applies.

Only files git would see count (the snapshot's ``add -A``): ignored files are not a
review's edits. Gates reached before this existed have no pin and are not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentsaga.errors import EditsInWorktree
from agentsaga.workspace import GitWorkspace, RunWorkspace


def pin_ref(run_id: str, step_id: str, visit: int) -> str:
    return f"refs/agentsaga/{run_id}/{step_id}/review-{visit}"


def _save_prefix(run_id: str, step_id: str, visit: int) -> str:
    return f"refs/agentsaga/{run_id}/{step_id}/reviewer-edits-{visit}-"


@dataclass(frozen=True)
class ReviewEdits:
    run_id: str
    step_id: str
    visit: int
    path: str
    #: The ref holding the worktree as the person left it.
    saved: str
    files: list[str]

    @property
    def pinned(self) -> str:
        return pin_ref(self.run_id, self.step_id, self.visit)

    def shown(self) -> str:
        names = ", ".join(self.files[:5])
        return names + (f" and {len(self.files) - 5} more" if len(self.files) > 5 else "")

    def to_json(self) -> dict[str, object]:
        return {"files": self.files, "saved": self.saved, "pinned": self.pinned}

    def refusal(self, doing: str) -> EditsInWorktree:
        return EditsInWorktree(self.run_id, self.path, self.files, self.saved, self.pinned, doing)


def pin(ws: RunWorkspace, run_id: str, step_id: str, visit: int) -> None:
    """Record the worktree as the run leaves it for review (create-only: a second call
    for the same visit keeps the first)."""
    if isinstance(ws, GitWorkspace):
        ws.snapshot(pin_ref(run_id, step_id, visit))


def find(ws: RunWorkspace, run_id: str, step_id: str, visit: int) -> ReviewEdits | None:
    """What changed in the worktree since the gate's pin, saved; None if nothing did."""
    if not isinstance(ws, GitWorkspace) or not ws.exists():
        return None
    from agentsaga import gitops

    found = gitops.changes_since(
        ws.ws, pin_ref(run_id, step_id, visit), _save_prefix(run_id, step_id, visit)
    )
    if found is None:
        return None
    saved, files = found
    return ReviewEdits(run_id, step_id, visit, str(ws.path), saved, files)


def keep(ws: RunWorkspace, edits: ReviewEdits, who: str) -> str | None:
    """Commit the edits on the run branch as a person's commit; its sha, or None when
    they were committed already (a person's own commit in the worktree)."""
    if not isinstance(ws, GitWorkspace):
        return None
    from agentsaga import gitops

    trailers = {
        "Agentsaga-Run": edits.run_id,
        "Agentsaga-Reviewer-Edits": f"{edits.step_id} (visit {edits.visit})",
        "Agentsaga-Approved-By": who,
        "Agentsaga-Saved-As": edits.saved,
    }
    subject = f"agentsaga {edits.run_id}: edits made at gate {edits.step_id} before approval"
    # Only the person's files: what the run itself left uncommitted stays as it was.
    return gitops.commit_all(ws.ws, subject, trailers, paths=edits.files)
