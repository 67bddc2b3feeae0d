"""The command line: parse, call the library, render. No logic of its own.

This module (with ``cli_render.py``) is the only one that knows exit codes, typer or rich.
Heavy modules (the engine's git and LLM parts) are imported inside the commands that need
them, so ``agentsaga --help`` starts in about a tenth of a second.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from agentsaga.errors import AgentsagaError, ConfigError, UserInputError

app = typer.Typer(
    name="agentsaga",
    help="Run AI coding-agent pipelines with checkpoints, resume and saga rollback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state: dict[str, Any] = {"debug": False, "store": None}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
RunArg = Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="Override a pipeline var: KEY=VALUE (repeatable).")
]
PlanOpt = Annotated[bool, typer.Option("--plan", help="Print what would happen; change nothing.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Act even where a branch moved or a step is irreversible.")
]
DiscardEditsOpt = Annotated[
    bool,
    typer.Option(
        "--discard-edits",
        help="Go on where a person changed files in a waiting run's worktree "
        "(they are saved to a ref first).",
    ),
]
BudgetOpt = Annotated[
    list[str] | None,
    typer.Option("--budget", help="Budget override: max_tokens=N or max_cost_usd=X (repeatable)."),
]
TemporalOpt = Annotated[
    str | None,
    typer.Option("--temporal", help="Run on Temporal: HOST:PORT (or AGENTSAGA_TEMPORAL)."),
]
DetachOpt = Annotated[
    bool, typer.Option("--detach", help="With Temporal: print the run id and return.")
]


@app.callback()
def _main(
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="State store: a SQLite path or postgresql://... URL.",
            envvar="AGENTSAGA_STORE",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    _state["store"], _state["debug"] = store, debug


# --- context ------------------------------------------------------------------------------


class _Session:
    """The repository, config and store a command works with."""

    def __init__(self, repo_hint: Path | None = None, *, writes: bool = False) -> None:
        """``writes=False`` for commands that only read: they find the store or say there
        is none (:class:`NoStore`), and never create a file or a folder."""
        from agentsaga.config import find_repo_root, load_config, main_worktree_root, store_location
        from agentsaga.store import open_store

        self.repo_root = find_repo_root(repo_hint or Path.cwd())
        self.config = load_config(self.repo_root)
        location = store_location(_state["store"], self.config)
        # Inside a worktree (a run's own, under .agentsaga/worktrees/), the repository's
        # store and logs: the ones that know the run.
        owner = main_worktree_root(self.repo_root) if self.repo_root else None
        if location is None and owner is None:
            self.home = Path.cwd() / ".agentsaga"
            location = str(self.home / "state.db") if writes else None
        else:
            self.home = (owner or Path.cwd()) / ".agentsaga"
        self.store = open_store(location, owner, create=writes)

    def engine(self, json_mode: bool, **options: Any) -> Any:
        from agentsaga.cli_render import Renderer
        from agentsaga.engine import Engine, EngineOptions

        renderer = Renderer(quiet=json_mode)
        opts = EngineOptions(on_event=renderer.on_event, config=self.config, **options)
        if "lease_ttl" in self.config:
            opts.lease_ttl_s = float(self.config["lease_ttl"])
        self.renderer = renderer
        return Engine(self.store, self.home, opts)


def _parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE")
        result[key.strip()] = value
    return result


def _parse_budget(pairs: list[str] | None) -> dict[str, float]:
    budget: dict[str, float] = {}
    for key, value in _parse_pairs(pairs, "--budget").items():
        if key not in ("max_tokens", "max_cost_usd"):
            raise ConfigError(f"--budget {key}: expected max_tokens=N or max_cost_usd=X")
        try:
            budget[key] = float(value)
        except ValueError:
            raise ConfigError(f"--budget {key}={value!r}: expected a number") from None
    return budget


def _reporting_interrupts(engine: Any, drive: Any) -> Any:
    """Run ``drive``; a Ctrl-C still ends in the run's document (status interrupted,
    exit 130), so ``--json`` callers learn the run id they can resume."""
    from agentsaga.errors import Interrupted

    try:
        return drive()
    except Interrupted as exc:
        if exc.run_id is None:
            raise
        _print_error(f"interrupted; resume with: agentsaga resume {exc.run_id}")
        return engine.result(exc.run_id)


def _echo_json(data: Any) -> None:
    from agentsaga.cli_errors import mark_printed

    typer.echo(json.dumps(data, indent=2, default=str))
    mark_printed()


def _emit_view(data: dict[str, Any], json_mode: bool, printer: Any) -> None:
    """A read-only view: one JSON document, or the printer's rendering."""
    if json_mode:
        _echo_json(data)
    else:
        printer(data)


def _emit_result(session: _Session, result: Any, json_mode: bool, command: str) -> None:
    _show_result(session, result, json_mode, command)
    from agentsaga.cli_errors import exit_code_of

    raise typer.Exit(exit_code_of(result.status, command))


def _show_result(session: Any, result: Any, json_mode: bool, command: str) -> None:
    """The run's document (the same as ``show --json``), or its one closing summary."""
    from agentsaga.documents import closing_document, run_document

    if json_mode or command == "rollback":
        doc = run_document(session.store, result.run_id, result.notes)
    else:
        # The result lists the pipeline's steps: the stored text is not parsed again.
        ids = [s.id for s in result.steps]
        doc = closing_document(session.store, result.run_id, result.notes, ids)
    if command == "rollback":
        from agentsaga.report import mark_merged

        mark_merged(session.store, doc)
    if json_mode:
        _echo_json(doc)
    else:
        from agentsaga.cli_render import print_result

        print_result(doc, command, doc["next"])


# --- commands -----------------------------------------------------------------------------


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="The pipeline YAML file.")],
    var: VarOpt = None,
    rollback_on_failure: Annotated[
        bool, typer.Option("--rollback-on-failure", help="Roll back everything if the run fails.")
    ] = False,
    allow_dirty: Annotated[
        bool,
        typer.Option("--allow-dirty", help="isolation: branch: stash and restore your changes."),
    ] = False,
    from_worktree: Annotated[
        bool,
        typer.Option(
            "--from-worktree", help="Start from your uncommitted changes (a snapshot of them)."
        ),
    ] = False,
    from_head: Annotated[
        bool, typer.Option("--from-head", help="Start from HEAD, ignoring uncommitted changes.")
    ] = False,
    budget: BudgetOpt = None,
    memo: Annotated[
        str | None, typer.Option("--memo", help="LLM call memo: run, global or off.")
    ] = None,
    temporal: TemporalOpt = None,
    detach: DetachOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Start a run of PIPELINE; prints its run id. Exit 1 if it fails (it stays resumable)."""
    from agentsaga.cli_errors import print_warnings
    from agentsaga.pipeline import load_file
    from agentsaga.preflight import before_start

    if from_worktree and from_head:
        raise UserInputError("--from-worktree and --from-head exclude each other; give one")
    loaded = load_file(pipeline, _parse_pairs(var, "--var"))
    repo_hint = Path(loaded.workspace["repo"]) if "repo" in loaded.workspace else None
    # On Temporal the keys and the workspace are the worker's: only the pipeline's own
    # problems are this machine's to refuse.
    findings = before_start(loaded, repo_hint, "the run", machine_errors=not temporal)
    print_warnings([*loaded.warnings, *(f.text() for f in findings)])
    session = _Session(repo_hint, writes=True)
    if memo:
        _check_memo(memo)
        session.config["memo"] = memo
    if target := _temporal_target(temporal, session, detach):
        from agentsaga.cli_temporal import submit_run

        submit_run(
            session,
            loaded,
            target,
            detach,
            json_mode,
            rollback_on_failure=True if rollback_on_failure else None,
            allow_dirty=allow_dirty,
            budget=_parse_budget(budget),
        )
    engine = session.engine(
        json_mode,
        rollback_on_failure=True if rollback_on_failure else None,
        allow_dirty=allow_dirty,
        start_from="worktree" if from_worktree else "head" if from_head else None,
        budget=_parse_budget(budget),
    )
    result = _reporting_interrupts(engine, lambda: engine.run(loaded, session.repo_root))
    _emit_result(session, result, json_mode, "run")


@app.command()
def resume(
    run_id: RunArg,
    pipeline: Annotated[
        Path | None, typer.Option("--pipeline", help="A changed pipeline: changed steps re-run.")
    ] = None,
    from_step: Annotated[
        str | None, typer.Option("--from", help="Re-run from this step (rewind by hand).")
    ] = None,
    plan: PlanOpt = False,
    force: ForceOpt = False,
    budget: BudgetOpt = None,
    temporal: TemporalOpt = None,
    detach: DetachOpt = False,
    discard_edits: DiscardEditsOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Continue a failed or interrupted run from its first unfinished step."""
    from agentsaga.cli_errors import print_warnings
    from agentsaga.pipeline import load_file
    from agentsaga.preflight import before_resume
    from agentsaga.saga.view import current_of

    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    record = session.store.get_run(rid)
    new = None
    if pipeline is not None:
        # The run's vars carry over to the changed file, where it still declares them.
        from agentsaga.pipeline import load_text

        declared = load_file(pipeline)
        stored = {k: str(v) for k, v in record.vars.items() if k in declared.vars}
        new = load_text(declared.text, declared.path, stored)
    engine = session.engine(json_mode, force=force, discard_edits=discard_edits)
    stored = engine._pipeline_of(record)
    if from_step is not None:
        _check_step(from_step, new or stored)
    if plan:
        _emit_plan(rid, "resume", engine.plan_resume(rid, new, from_step), json_mode)
        return
    target = _temporal_target(temporal, session, detach, record)
    findings = before_resume(
        new or stored,
        lambda: {s for s, a in current_of(session.store.attempt_facts(rid)).items() if a.done},
        session.config,
        from_step=from_step,
        was=stored if new is not None else None,
        machine_errors=target is None,  # on Temporal the keys are the workers'
    )
    print_warnings([f.text() for f in findings])
    if target:
        from agentsaga import gates
        from agentsaga.cli_temporal import submit_resume

        if new is not None or from_step is not None:
            gates.check_edits(session.store, rid, "resume", discard_edits)

        submit_resume(
            session, rid, new, from_step, _parse_budget(budget), target, detach, json_mode, force
        )
    _emit_result(
        session,
        _reporting_interrupts(
            engine, lambda: engine.resume(rid, new, from_step, _parse_budget(budget))
        ),
        json_mode,
        "resume",
    )


@app.command()
def rollback(
    run_id: RunArg,
    plan: PlanOpt = False,
    force: ForceOpt = False,
    keep_refs: Annotated[
        bool, typer.Option("--keep-refs", help="Keep the run's snapshot refs after rollback.")
    ] = False,
    temporal: TemporalOpt = None,
    detach: DetachOpt = False,
    discard_edits: DiscardEditsOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Undo a run: every step's compensation, newest first, then its branch. Exit 3 if not."""
    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    engine = session.engine(
        json_mode, force=force, keep_refs=keep_refs, discard_edits=discard_edits
    )
    if plan:
        _emit_plan(rid, "rollback", engine.plan_rollback(rid), json_mode)
        return
    if target := _temporal_target(temporal, session, detach, session.store.get_run(rid)):
        from agentsaga import gates
        from agentsaga.cli_temporal import submit_rollback

        gates.check_edits(session.store, rid, "rollback", discard_edits)

        submit_rollback(session, rid, target, detach, json_mode, force, keep_refs)
    _emit_result(session, engine.rollback(rid), json_mode, "rollback")


@app.command()
def fork(
    run_id: RunArg,
    from_step: Annotated[str, typer.Option("--from", help="The first step the fork runs anew.")],
    var: VarOpt = None,
    pipeline: Annotated[
        Path | None, typer.Option("--pipeline", help="Run the fork with this pipeline file.")
    ] = None,
    plan: PlanOpt = False,
    temporal: TemporalOpt = None,
    detach: DetachOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Start a new run that reuses RUN_ID's checkpoints before --from and runs the rest."""
    from agentsaga.cli_errors import print_warnings
    from agentsaga.pipeline import load_file
    from agentsaga.preflight import before_start

    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    overrides = _parse_pairs(var, "--var")
    new = load_file(pipeline, overrides) if pipeline else None
    engine = session.engine(json_mode)
    forked = new or engine._pipeline_of(session.store.get_run(rid))
    _check_step(from_step, forked)
    if plan:
        _emit_plan(rid, "fork", engine.plan_fork(rid, from_step, overrides, new), json_mode)
        return
    # What the fork will run (from --from on) is checked before the fork exists, as a run.
    import dataclasses

    runs_anew = dataclasses.replace(forked, steps=forked.steps[forked.index_of(from_step) :])
    findings = before_start(runs_anew, session.repo_root, "the fork", not temporal)
    print_warnings([f.text() for f in findings])
    if target := _temporal_target(temporal, session, detach, session.store.get_run(rid)):
        from agentsaga.cli_temporal import submit_fork

        submit_fork(session, rid, from_step, overrides, new, target, detach, json_mode)
    result = _reporting_interrupts(
        engine, lambda: engine.fork(rid, from_step, overrides, new, session.repo_root)
    )
    _emit_result(session, result, json_mode, "fork")


@app.command()
def runs(
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="How many (newest first).")] = 50,
    json_mode: JsonOpt = False,
) -> None:
    """List runs, newest first, with their tokens and cost."""
    from agentsaga.states import RunStatus

    if status is not None and status not in {s.value for s in RunStatus}:
        raise ConfigError(
            f"--status {status!r}: expected one of {', '.join(s.value for s in RunStatus)}"
        )
    from agentsaga.cli_render import print_runs
    from agentsaga.documents import runs_document
    from agentsaga.errors import NoStore

    try:
        doc = runs_document(_Session().store.list_runs(status, limit))
    except NoStore as exc:
        if json_mode:
            _echo_json(runs_document([]))
        else:
            where = f" (no store at {exc.path})" if exc.path else " (not inside a git repository)"
            typer.echo("no runs yet" + where + "; start one with: agentsaga run PIPELINE.yml")
        return
    if status is not None and not doc["runs"] and not json_mode:
        typer.echo(f"no run is {status}; agentsaga runs lists them all")
        return
    _emit_view(doc, json_mode, print_runs)


@app.command()
def show(
    run_id: RunArg,
    step: Annotated[
        str | None,
        typer.Argument(help="One step in full: prompt, model calls, replies, output, error."),
    ] = None,
    json_mode: JsonOpt = False,
    html: Annotated[
        bool, typer.Option("--html", help="Write the run's web page as one self-contained file.")
    ] = False,
) -> None:
    """Show a run: each step's status, attempts, duration, tokens, commit, compensation.
    With STEP: that step's attempts in full."""
    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    if html:
        from agentsaga.cli_ui import write_html

        write_html(session.store, rid)
        return
    if step is not None:
        from agentsaga.cli_render import print_step
        from agentsaga.step_detail import step_document

        _emit_view(step_document(session.store, rid, step), json_mode, print_step)
        return
    from agentsaga.cli_render import print_show
    from agentsaga.documents import run_document

    _emit_view(run_document(session.store, rid), json_mode, print_show)


@app.command()
def report(run_id: RunArg, json_mode: JsonOpt = False) -> None:
    """Tokens and cost per step and attempt, tokens reused, and the failed-run tax."""
    from agentsaga.cli_render import print_report
    from agentsaga.report import token_report

    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    _emit_view(token_report(session.store, rid), json_mode, print_report)


@app.command()
def diff(
    run_id: RunArg,
    step: Annotated[str | None, typer.Argument(help="Only what this step changed.")] = None,
    stat: Annotated[bool, typer.Option("--stat", help="Only the diffstat.")] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Show what a step (or the whole run) changed, as a patch `git apply` takes."""
    from agentsaga.report import require_step, run_diff

    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    if step is not None:
        require_step(session.store, rid, step)
    text = run_diff(session.store, rid, step, stat)
    if json_mode:
        _echo_json({"run_id": rid, "step_id": step, "stat": stat, "patch": text})
        return
    typer.echo(text, nl=False)


@app.command()
def logs(
    run_id: RunArg,
    step: Annotated[str | None, typer.Argument(help="Only this step.")] = None,
    json_mode: JsonOpt = False,
) -> None:
    """Print the captured output of a run's commands (whole, from .agentsaga/logs)."""
    from agentsaga.report import require_step, run_logs

    session = _Session()
    rid = session.store.resolve_run_id(run_id)
    if step is not None:
        require_step(session.store, rid, step)
    entries = run_logs(session.store, rid, step)
    if json_mode:
        _echo_json({"run_id": rid, "step_id": step, "logs": entries})
        return
    for entry in entries:
        typer.echo(f"==> {entry['step_id']} attempt {entry['attempt']} ({entry['stream']}) <==")
        typer.echo(entry["text"].rstrip("\n"))
    if not entries:
        typer.echo("no command output recorded" + (f" for step {step!r}" if step else ""))


@app.command()
def validate(
    pipeline: Annotated[Path, typer.Argument(help="The pipeline YAML file.")],
    var: VarOpt = None,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="List every command, compensation and write it may run."),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Check the file alone: no API keys, no repository (for CI)."
        ),
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Check a pipeline without running anything: the file (file:line:col), and what a run
    needs from this machine (API keys, a repository with a commit). Exit 2 on an error."""
    from agentsaga.cli_errors import print_warnings
    from agentsaga.pipeline import load_file
    from agentsaga.preflight import before_start

    loaded = load_file(pipeline, _parse_pairs(var, "--var"), require_vars=False)
    repo_hint = Path(loaded.workspace["repo"]) if "repo" in loaded.workspace else None
    findings = before_start(
        loaded,
        repo_hint,
        f"{pipeline}: a run",
        machine=not offline,
        hint="(validate --offline checks the file alone, without keys or a repository)",
    )
    if explain:
        from agentsaga.cli_render import explain_pipeline
        from agentsaga.config import find_repo_root, load_config
        from agentsaga.preflight import model_choices

        config = load_config(find_repo_root(repo_hint or Path.cwd()))
        chosen = {c.step_id: f"{c.provider}/{c.model}" for c in model_choices(loaded, config)}
        explain_pipeline(loaded, json_mode, chosen)
        print_warnings([*loaded.warnings, *(f.text() for f in findings)])
        return
    warnings = [f"warning: {w}" for w in loaded.warnings] + [f.text() for f in findings]
    if json_mode:
        steps = [{"step_id": s.id, "kind": s.kind} for s in loaded.steps]
        doc = {"valid": True, "pipeline": loaded.name, "file": str(pipeline), "steps": steps}
        _echo_json({**doc, "warnings": warnings})
    else:
        typer.echo(
            f"{pipeline}: ok ({len(loaded.steps)} steps: "
            + ", ".join(s.id for s in loaded.steps)
            + ")"
        )
        for line in warnings:
            typer.echo(line, err=True)


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to create the demo (default: a temp dir).")
    ] = None,
    agent: Annotated[
        bool, typer.Option("--agent", help="The agent variant: one agent step, turn by turn.")
    ] = False,
    review: Annotated[
        bool, typer.Option("--review", help="Stop at a human gate before the deploy.")
    ] = False,
    json_mode: JsonOpt = False,
) -> None:
    """Run the offline demo: a throwaway repo, a failing test, a rewind, a deploy, the report."""
    from agentsaga.cli_demo import run_demo

    raise typer.Exit(
        run_demo(
            directory,
            json_mode,
            lambda repo: _Session(repo, writes=True),
            agent=agent,
            review=review,
        )
    )


@app.command()
def init(
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    example: Annotated[
        bool,
        typer.Option("--example", help="Print .agentsaga.example.yml (every key, explained)."),
    ] = False,
) -> None:
    """Write a starter .agentsaga.yml and pipelines/fix.yml for this repository, fitted to
    what it finds: the layout, the test runner and its command, the venv, the files."""
    from agentsaga import project
    from agentsaga.config import CONFIG_FILE, find_repo_root
    from agentsaga.demo import template

    if example:
        typer.echo(template("agentsaga.example.yml"), nl=False)
        return
    root = find_repo_root(Path.cwd())
    if root is None:
        raise ConfigError("not inside a git repository: run 'git init' first, or cd into one")
    found = project.detect(root)
    targets = {
        root / CONFIG_FILE: template("config.yml"),
        root / "pipelines" / "fix.yml": project.starter_pipeline(found, template("starter.yml")),
    }
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"{', '.join(existing)} already {verb}; use --force to overwrite")
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {path.relative_to(root)}")
    for line in found.describe():
        typer.echo(f"  found: {line}")
    typer.echo(
        "next: export ANTHROPIC_API_KEY=... (or declare another provider in .agentsaga.yml:\n"
        "      agentsaga init --example shows every key, Ollama and vLLM included), then\n"
        '      agentsaga run pipelines/fix.yml --var task="Make tests/test_x.py pass"'
    )


@app.command()
def schema(
    output: Annotated[
        bool,
        typer.Option("--output", help="The JSON Schema of the --json documents instead."),
    ] = False,
) -> None:
    """Print the pipeline format as JSON Schema (for yaml-language-server); with --output,
    the schema of what the commands print with --json."""
    if output:
        from agentsaga.output_schema import output_schema

        _echo_json(output_schema())
        return
    from agentsaga.pipeline import json_schema

    _echo_json(json_schema())


# --- helpers ------------------------------------------------------------------------------


def _check_memo(memo: str) -> None:
    if memo not in ("run", "global", "off"):
        raise ConfigError(f"--memo {memo!r}: expected run, global or off")


def _temporal_target(flag: str | None, session: _Session, detach: bool, run: Any = None) -> Any:
    """Where the command runs: Temporal (the flag, AGENTSAGA_TEMPORAL, the config, or the
    run's own record), else None for this process."""
    from agentsaga.cli_temporal import target_of

    target = target_of(flag, session.config, run)
    if target is None and detach:
        raise ConfigError("--detach needs Temporal: --temporal HOST:PORT or AGENTSAGA_TEMPORAL")
    return target


def _check_step(step_id: str, pipeline: Any) -> None:
    ids = [s.id for s in pipeline.steps]
    if step_id not in ids:
        from agentsaga.schema import did_you_mean

        raise UserInputError(
            f"--from {step_id!r}: no such step{did_you_mean(step_id, ids)} "
            f"(steps: {', '.join(ids)})"
        )


def _emit_plan(run_id: str, command: str, items: list[Any], json_mode: bool) -> None:
    from agentsaga.cli_render import print_plan
    from agentsaga.documents import plan_document

    _emit_view(plan_document(run_id, command, items), json_mode, print_plan)


# Commands kept in their own modules register themselves on ``app`` when imported; each
# imports its heavy parts inside the command.
from agentsaga import cli_gates as _cli_gates  # noqa: E402,F401
from agentsaga import cli_release as _cli_release  # noqa: E402,F401
from agentsaga import cli_temporal as _cli_temporal  # noqa: E402,F401
from agentsaga import cli_ui as _cli_ui  # noqa: E402,F401


def main() -> None:
    """Entry point: our errors become a message and an exit code; no traceback unless
    --debug."""
    from agentsaga.redact import MaskedStream, secret_values

    # Every message, table, error and --json passes here: a secret that reached a string
    # anywhere (an edit failure quoting a file, a reply) is masked as it is printed.
    secrets = secret_values()
    if secrets:
        sys.stdout = MaskedStream(sys.stdout, secrets)
        sys.stderr = MaskedStream(sys.stderr, secrets)
    try:
        _run_app()
    finally:
        if secrets:
            sys.stdout, sys.stderr = sys.stdout._stream, sys.stderr._stream  # type: ignore[union-attr]


def _run_app() -> None:
    """Every failure ends here: its message on stderr and, with --json, an error document
    on stdout (cli_errors.py: one rule for every command)."""
    from agentsaga.cli_errors import mark_printed, report

    mark_printed(False)  # main() may run more than once in a process (an embedding program)
    debug = "--debug" in sys.argv[1:]
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except AgentsagaError as exc:
        if debug:
            traceback.print_exc()
        report(exc.message, exc.exit_code, type(exc).__name__, exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        report("interrupted", 130, "Interrupted")
        sys.exit(130)
    except Exception as exc:  # usage errors and our bugs
        # typer vendors its own click; find its exception classes through the instance.
        names = {cls.__name__ for cls in type(exc).__mro__}
        if "Abort" in names:
            report("aborted", 130, "Interrupted")
            sys.exit(130)
        if "ClickException" in names:
            exc.show()  # type: ignore[attr-defined]
            code = 2 if "UsageError" in names else getattr(exc, "exit_code", 2)
            kind = "UsageError" if "UsageError" in names else "ClickException"
            report(exc.format_message(), code, kind, text=False)  # type: ignore[attr-defined]
            sys.exit(code)
        if debug:
            traceback.print_exc()
        message = (
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for the "
            "traceback; the run's state is kept and it can be resumed)"
        )
        report(message, 1, "InternalError")
        sys.exit(1)


def _print_error(message: str) -> None:
    from agentsaga.cli_errors import print_error

    print_error(message)
