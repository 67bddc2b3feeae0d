"""``agentsaga release``: hand back finished runs' worktrees (``release.py``).

Registered on the CLI's app by ``cli.py``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from agentsaga.cli import JsonOpt, _echo_json, _Session, app


@app.command()
def release(
    run_ids: Annotated[
        list[str], typer.Argument(help="Run ids (a unique prefix is enough).", metavar="RUN...")
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Release even a worktree with uncommitted changes."),
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Hand back the worktree of succeeded runs: into the repository's pool, where the
    next run recycles it. Their branches, commits and records stay. Exit 2 if a run has
    not succeeded or its worktree holds uncommitted changes (unless --force)."""
    from agentsaga.release import check
    from agentsaga.release import release as release_run

    session = _Session()
    ttl = float(session.config.get("lease_ttl", 30.0))
    # Every run is checked before any is released: a refusal changes nothing.
    rids = [session.store.resolve_run_id(ref) for ref in run_ids]
    for rid in rids:
        check(session.store, rid, force)
    done = [release_run(session.store, rid, force=force, lease_ttl_s=ttl) for rid in rids]
    if json_mode:
        _echo_json({"released": [vars(r) for r in done]})
        return
    for r in done:
        if r.outcome == "none":
            typer.echo(f"{r.run_id}: no worktree to release")
            continue
        where = (
            "kept in the pool for the next run"
            if r.outcome == "pooled"
            else "deleted (not recyclable)"
        )
        typer.echo(f"{r.run_id}: worktree {r.path} {where}; branch {r.branch} kept")
