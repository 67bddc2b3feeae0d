"""``approve``: a human gate. The run stops here, status ``waiting``, until someone runs
``agentsaga approve`` or ``agentsaga reject`` (see ``gates.py``; the rules are in
``saga/gate.py``). This module only prepares what the person reviews: the rendered
``message`` and ``show`` — by default the diffstat of the run's branch so far (the whole
patch is one ``agentsaga diff RUN`` away).
"""

from __future__ import annotations

from typing import Any

from agentsaga import review_edits
from agentsaga.context import StepContext
from agentsaga.workspace import GitWorkspace

#: What is kept of ``show`` in the record (the store is no place for a large diff).
SHOW_LIMIT = 20_000


def execute(ctx: StepContext) -> dict[str, Any]:
    # The worktree as the run leaves it for review: a person's edits are told from the
    # run's own files by comparing with this (review_edits.py).
    review_edits.pin(ctx.workspace, ctx.run_id, ctx.step.id, ctx.attempt)
    message = str(ctx.params.get("message") or f"review run {ctx.run_id} before it continues")
    show = ctx.params.get("show")
    text = str(show) if show is not None else _diff_so_far(ctx)
    if len(text) > SHOW_LIMIT:
        text = text[:SHOW_LIMIT] + f"\n[... cut: 'agentsaga diff {ctx.run_id}' shows it all]\n"
    return {"message": message, "show": text}


def _diff_so_far(ctx: StepContext) -> str:
    ws = ctx.workspace
    if not isinstance(ws, GitWorkspace):
        return "(no git workspace: nothing to diff)"
    from agentsaga import gitops

    base, head = ws.ws.base_commit, ws.head()
    if not base or not head or base == head:
        return "(no change on the run branch yet)"
    return gitops.diff(ws.ws, str(base), head, stat=True)
