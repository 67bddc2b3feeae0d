"""``agentsaga approve`` and ``agentsaga reject``: a person's decision at a human gate.

Registered on the CLI's app by ``cli.py``. The decision is recorded by ``gates.py`` (the
library the web view calls too); then, unless ``--detach``, the run continues in the
foreground as ``resume`` would, with the same display, ``--json`` and exit codes.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer

from agentsaga.cli import (
    DiscardEditsOpt,
    JsonOpt,
    RunArg,
    _emit_result,
    _reporting_interrupts,
    _Session,
    app,
)

DetachOpt = Annotated[
    bool,
    typer.Option(
        "--detach", help="Only record the decision (exit 0); a later resume continues the run."
    ),
]


@app.command()
def approve(
    run_id: RunArg,
    comment: Annotated[str, typer.Option("--comment", help="Why (kept with the decision).")] = "",
    detach: DetachOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Approve the gate RUN waits at, then continue the run. Exit 2 if it is not waiting."""
    from agentsaga import gates

    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    _on_temporal(session, rid, "approve", comment, detach, json_mode)
    record = gates.approve(session.store, rid, decider(session.repo_root), comment)
    _continue(session, rid, record, detach, json_mode)


@app.command()
def reject(
    run_id: RunArg,
    comment: Annotated[
        str,
        typer.Option(
            "--comment", help="Why: the agent reads it in ${{ rewind.error }} when it rewinds."
        ),
    ],
    detach: DetachOpt = False,
    discard_edits: DiscardEditsOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Reject the gate RUN waits at: rewind to its on_reject step (or roll back). Exit 2
    if a person changed files in the run's worktree meanwhile (saved to a ref), unless
    --discard-edits."""
    from agentsaga import gates
    from agentsaga.errors import ConfigError

    if not comment.strip():
        raise ConfigError("--comment: say what is wrong; the agent reads it when it rewinds")
    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    # Checked here too: a Temporal worker's worktree may be on another host.
    gates.check_edits(session.store, rid, "reject", discard_edits)
    _on_temporal(session, rid, "reject", comment, detach, json_mode, discard_edits)
    record = gates.reject(
        session.store, rid, decider(session.repo_root), comment, discard_edits=discard_edits
    )
    _continue(session, rid, record, detach, json_mode)


def _continue(session: _Session, rid: str, record: object, detach: bool, json_mode: bool) -> None:
    decision = getattr(record, "decision", "")
    who = getattr(record, "decided_by", "")
    if not json_mode:
        typer.echo(f"run {rid}: {decision} by {who}", err=True)
    engine = session.engine(json_mode)
    if detach:
        _emit_result(session, engine.result(rid), json_mode, "decide --detach")
        return
    _emit_result(
        session, _reporting_interrupts(engine, lambda: engine.resume(rid)), json_mode, "resume"
    )


def _on_temporal(
    session: _Session,
    rid: str,
    decision: str,
    comment: str,
    detach: bool,
    json_mode: bool,
    discard_edits: bool = False,
) -> None:
    """A run submitted to Temporal: its workflow records the decision and goes on (the
    call then exits); a local run returns here."""
    from agentsaga.cli_temporal import decide_on_temporal

    decide_on_temporal(session, rid, decision, comment, detach, json_mode, discard_edits)


def decider(repo_root: Path | None) -> str:
    """Who decides: the repository's git user.name, else the login name."""
    if repo_root is not None:
        from agentsaga import gitops
        from agentsaga.errors import GitError

        try:
            name = gitops.user_name(repo_root)
        except GitError:
            name = None
        if name:
            return name
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
