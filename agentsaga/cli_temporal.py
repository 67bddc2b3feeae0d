"""The command line of the Temporal runner: ``worker``, and ``run|resume|rollback`` when a
Temporal address is given (``--temporal``, ``AGENTSAGA_TEMPORAL``, ``temporal:`` in
``.agentsaga.yml``) or the run was started on Temporal.

A submission writes what the local runner would write before its first step (the run
record, its workspace; a resume's restart point), then starts the run's workflow and
follows it from the store with the same live display, ``--json`` document and exit codes
as a local run. ``--detach`` prints the run id and returns.

Registered on the CLI's app by ``cli.py``; the SDK is imported inside the commands only.
These commands leave with ``os._exit`` once their output is flushed: a short-lived
Temporal client can abort at interpreter exit (temporalio's sdk-python#300), which would turn
a clean exit into 134.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentsaga.cli import _Session, _state, app
from agentsaga.runners.temporal_io import (
    DEFAULT_TASK_QUEUE,
    RunInput,
    TemporalTarget,
    default_host_id,
    resolve_target,
)


@app.command()
def worker(
    temporal: Annotated[
        str | None,
        typer.Option(
            "--temporal", help="The Temporal frontend, HOST:PORT (or AGENTSAGA_TEMPORAL)."
        ),
    ] = None,
    task_queue: Annotated[
        str | None, typer.Option("--task-queue", help=f"Default: {DEFAULT_TASK_QUEUE}.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="The state store (PostgreSQL for workers on many hosts)."),
    ] = None,
    host_id: Annotated[
        str | None,
        typer.Option("--host-id", help="This host's name for its task queue (default: hostname)."),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Where mirrors and logs go (default: ./.agentsaga)."),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Activities run at once.")] = 8,
) -> None:
    """Run a Temporal worker for agentsaga runs until SIGTERM or Ctrl-C."""
    if store:
        _state["store"] = store
    session = _Session(writes=True)
    target = resolve_target(temporal, session.config, task_queue)
    if target is None:
        from agentsaga.errors import ConfigError

        raise ConfigError(
            "worker needs a Temporal address: --temporal HOST:PORT, AGENTSAGA_TEMPORAL, or "
            "temporal: {address: ...} in .agentsaga.yml"
        )
    from agentsaga.config import store_location
    from agentsaga.runners.temporal_worker import run_worker

    # The URL as given (with its password): the store's own `location` masks it.
    location = store_location(_state["store"], session.config) or session.store.location
    session.store.close()
    run_worker(
        target,
        location,
        session.config,
        host_id or default_host_id(),
        (home or session.home).resolve(),
        concurrency,
    )
    _leave(0)


# --- submissions (called from cli.py's run, resume and rollback) ---------------------------


def target_of(flag: str | None, config: dict[str, Any], run: Any = None) -> TemporalTarget | None:
    """Where a command goes: the flag, env or config; else where the run was started."""
    target = resolve_target(flag, config)
    if target is None and run is not None:
        recorded = (run.state or {}).get("temporal")
        if recorded and recorded.get("address"):
            return TemporalTarget.from_json(recorded)
    return target


def submit_run(
    session: Any,
    pipeline: Any,
    target: TemporalTarget,
    detach: bool,
    json_mode: bool,
    **options: Any,
) -> None:
    from agentsaga.engine import branch_name
    from agentsaga.runtime import Event

    engine = session.engine(json_mode, **options)
    remote = pipeline.workspace.get("remote")
    record = engine.new_record(pipeline, temporal=_recorded(target, session))
    run_input = _input(target, record.id, "run")

    def before_start() -> None:
        session.store.create_run(record)
        session.renderer.on_event(Event("run", record.id, status="started", message=pipeline.name))
        if remote:
            # The first worker to run a step creates it in its mirror (temporal_git.py).
            planned = {
                "isolation": "worktree",
                "branch": branch_name(record, pipeline),
                "planned": True,
                "remote": str(remote),
            }
            session.store.update_run(record.id, workspace=planned)
        else:
            engine.open_workspace(record, pipeline, session.repo_root)

    _submit(session, engine, target, run_input, detach, json_mode, "run", before_start)


def submit_fork(
    session: Any,
    parent_id: str,
    from_step: str,
    overrides: dict[str, str],
    pipeline: Any,
    target: TemporalTarget,
    detach: bool,
    json_mode: bool,
) -> None:
    """A fork on Temporal: its record, the parent's checkpoints and its workspace are
    made here, as a local fork makes them; its workflow runs the rest."""
    from agentsaga.errors import ConfigError
    from agentsaga.runtime import Event

    parent = session.store.get_run(parent_id)
    if (parent.workspace or {}).get("remote"):
        raise ConfigError(
            f"run {parent_id} works on workspace.remote; fork --temporal of such a run is "
            "not supported yet: start a new run, or fork it where its repository is"
        )
    engine = session.engine(json_mode)
    record, new, reuse = engine.new_fork(
        parent_id, from_step, overrides, pipeline, temporal=_recorded(target, session)
    )

    def before_start() -> None:
        session.store.create_run(record)
        session.renderer.on_event(Event("run", record.id, status="started", message=new.name))
        engine.open_fork(record, new, reuse, session.repo_root)

    run_input = _input(target, record.id, "run")
    _submit(session, engine, target, run_input, detach, json_mode, "fork", before_start)


def submit_resume(
    session: Any,
    run_id: str,
    pipeline: Any,
    from_step: str | None,
    budget: dict[str, float],
    target: TemporalTarget,
    detach: bool,
    json_mode: bool,
    force: bool,
) -> None:
    engine = session.engine(json_mode, force=force)
    record = session.store.get_run(run_id)
    changed = pipeline is not None and pipeline.text != record.pipeline_text
    run_input = _input(target, run_id, "resume", changed_pipeline=changed)
    run_input.host_id = (record.workspace or {}).get("host")

    def before_start() -> None:
        # The same bookkeeping as a local resume, under the run's lease: a workflow still
        # running holds it in its activities, and Temporal refuses a second start anyway.
        engine.prepare_resume(run_id, pipeline, from_step, budget)

    _submit(session, engine, target, run_input, detach, json_mode, "resume", before_start)


def submit_rollback(
    session: Any,
    run_id: str,
    target: TemporalTarget,
    detach: bool,
    json_mode: bool,
    force: bool,
    keep_refs: bool,
) -> None:
    engine = session.engine(json_mode, force=force, keep_refs=keep_refs)
    record = session.store.get_run(run_id)
    run_input = _input(target, run_id, "rollback", force=force, keep_refs=keep_refs)
    run_input.host_id = (record.workspace or {}).get("host")
    _submit(session, engine, target, run_input, detach, json_mode, "rollback", None)


def decide_on_temporal(
    session: Any,
    rid: str,
    decision: str,
    comment: str,
    detach: bool,
    json_mode: bool,
    discard_edits: bool = False,
) -> None:
    """``approve``/``reject`` of a run submitted to Temporal: the workflow waiting at the
    gate records the decision (its ``decide`` update) and goes on; this command follows it
    as ``resume`` would (unless ``--detach``). Returns, doing nothing, for a local run."""
    target = target_of(None, session.config, session.store.get_run(rid))
    if target is None:
        return
    from agentsaga import gates
    from agentsaga.cli import _show_result
    from agentsaga.cli_errors import exit_code_of, report
    from agentsaga.cli_gates import decider
    from agentsaga.errors import AgentsagaError
    from agentsaga.runners.temporal_client import decide_and_follow
    from agentsaga.runtime import Event

    who = decider(session.repo_root)
    engine = session.engine(json_mode)

    def announce(record: dict[str, Any]) -> None:
        if not json_mode:
            typer.echo(f"run {rid}: {record['decision']} by {record['decided_by']}", err=True)

    verdict = {"decision": decision, "who": who, "comment": comment}
    if discard_edits:
        verdict["discard_edits"] = "yes"
    on_event = None if detach else session.renderer.on_event
    try:
        record = decide_and_follow(target, rid, verdict, session.store, on_event, Event, announce)
        if record is None:
            # No workflow waits there any more (it was closed): record the decision in
            # the store, and resume the run on Temporal, where the gate applies it.
            if decision == "approve":
                recorded = gates.approve(session.store, rid, who, comment)
            else:
                recorded = gates.reject(
                    session.store, rid, who, comment, discard_edits=discard_edits
                )
            announce({"decision": recorded.decision, "decided_by": recorded.decided_by})
            if not detach:
                submit_resume(session, rid, None, None, {}, target, False, json_mode, False)
    except AgentsagaError as exc:
        report(exc.message, exc.exit_code, type(exc).__name__, exc)
        _leave(exc.exit_code)
    result = engine.result(rid)
    command = "decide --detach" if detach else "resume"
    _show_result(session, result, json_mode, command)
    _leave(exit_code_of(result.status, command))


def _input(target: TemporalTarget, run_id: str, mode: str, **fields: Any) -> RunInput:
    return RunInput(
        run_id,
        mode,
        target.task_queue,
        host_timeout_s=target.host_timeout_s,
        history_events=target.history_events,
        **fields,
    )


def _recorded(target: TemporalTarget, session: Any) -> dict[str, Any]:
    """What the run keeps of its submission: where it runs, and the submitter's config
    (no secrets: .agentsaga.yml names env vars, never holds keys), so workers on other
    hosts run it with the settings it was started with."""
    return {
        **target.to_json(),
        "config": session.config,
        "home_parent": str(session.home.parent),
    }


def _submit(
    session: Any,
    engine: Any,
    target: TemporalTarget,
    run_input: RunInput,
    detach: bool,
    json_mode: bool,
    command: str,
    before_start: Any,
) -> None:
    from agentsaga.cli import _print_error, _show_result
    from agentsaga.cli_errors import exit_code_of, report
    from agentsaga.errors import AgentsagaError
    from agentsaga.runners.temporal_client import submit_and_follow
    from agentsaga.runtime import Event

    on_event = None if detach else session.renderer.on_event
    try:
        submit_and_follow(target, run_input, session.store, on_event, Event, before_start)
    except AgentsagaError as exc:
        report(exc.message, exc.exit_code, type(exc).__name__, exc)
        _leave(exc.exit_code)
    if detach:
        if json_mode:
            typer.echo(json.dumps({"run_id": run_input.run_id, "status": "submitted"}))
        else:
            typer.echo(run_input.run_id)
        _leave(0)
    result = engine.result(run_input.run_id)
    if result.status == "interrupted":
        _print_error(f"interrupted; resume with: agentsaga resume {run_input.run_id}")
    _show_result(session, result, json_mode, command)
    _leave(exit_code_of(result.status, command))


def _leave(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
