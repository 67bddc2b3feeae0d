"""How the CLI shows things: the live progress of a run, tables, plans.

On a terminal, a live line shows the running step and its elapsed time; elsewhere (CI, a
pipe) each event is one plain line. ``NO_COLOR`` turns colour off.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from agentsaga.engine import Event, PlanItem, RunResult


_COLORS = {
    "completed": "green",
    "succeeded": "green",
    "compensated": "cyan",
    "rolled_back": "cyan",
    "failed": "red",
    "compensation_failed": "red",
    "rollback_failed": "red",
    "running": "yellow",
    "compensating": "yellow",
    "rolling_back": "yellow",
    "skipped": "dim",
    "pending": "dim",
    "interrupted": "magenta",
    "waiting": "blue",
}


def _console(stderr: bool = False) -> Console:
    return Console(
        stderr=stderr, no_color="NO_COLOR" in os.environ, highlight=False, soft_wrap=True
    )


def _styled(status: str) -> str:
    color = _COLORS.get(status)
    return f"[{color}]{status}[/{color}]" if color else status


class Renderer:
    """Receives engine events. Progress goes to stderr so stdout stays for results."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = _console(stderr=True)
        self.live = self.console.is_terminal and not quiet
        self._status: Any = None
        self._current: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def on_event(self, event: Event) -> None:
        if self.quiet:
            return
        if event.kind == "step" and event.status == "running":
            self._start_live(event)
            return
        self._stop_live()
        self.console.print(self._line(event))

    def _line(self, event: Event) -> str:
        if event.kind == "run":
            text = f"run {event.run_id}: {_styled(event.status or '')}"
        elif event.kind in ("step", "compensate"):
            attempt = f" (attempt {event.attempt})" if event.attempt else ""
            verb = "compensation of " if event.kind == "compensate" else ""
            text = f"  {verb}{event.step_id}{attempt}: {_styled(event.status or '')}"
        else:
            where = f"{event.step_id}: " if event.step_id else ""
            text = f"  {where}{event.message}"
            return text.replace("[", "\\[")
        if event.message:
            first = event.message.strip().splitlines()[0] if event.message.strip() else ""
            text += " - " + first[:200].replace("[", "\\[")
        return text

    def _start_live(self, event: Event) -> None:
        label = f"{event.step_id} (attempt {event.attempt})"
        if not self.live:
            self.console.print(f"  {label}: {_styled('running')}")
            return
        self._stop_live()
        self._current = (label, time.monotonic())
        self._status = self.console.status(f"{label}: running")
        self._status.start()
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.2):
            if self._status is not None and self._current is not None:
                label, started = self._current
                self._status.update(f"{label}: running {time.monotonic() - started:.1f}s")

    def _stop_live(self) -> None:
        if self._status is not None:
            self._stop.set()
            self._status.stop()
            self._status = None


def print_result(result: RunResult) -> None:
    console = _console()
    parts = ", ".join(f"{s.id} {_styled(s.status)}" for s in result.steps)
    console.print(f"run {result.run_id} {_styled(result.status)}: {parts}")
    if result.error and result.status != "succeeded":
        console.print(f"  {result.error.get('message', '')}".replace("[", "\\["))
    if result.status == "failed":
        console.print(
            f"  resume with: agentsaga resume {result.run_id}   "
            f"undo with: agentsaga rollback {result.run_id}"
        )
    if result.status == "waiting" and result.gate:
        _print_gate(console, result.gate)


def _print_gate(console: Console, gate: dict[str, Any]) -> None:
    """What a waiting run waits for, and the two commands (result, show)."""
    for line in (
        f"  waiting at gate {gate['step']}: {gate['message']}",
        f"  approve: {gate['approve']}",
        f"  reject:  {gate['reject']}",
    ):
        console.print(line.replace("[", "\\["))


def print_decisions(decisions: list[dict[str, Any]]) -> None:
    """Who decided at each gate, when and why (show, report)."""
    console = _console()
    for d in decisions:
        why = f": {d['comment']}" if d["comment"] else ""
        line = f"  gate {d['step']} (visit {d['visit']}): {d['decision']} by {d['by']} at {d['at']}"
        console.print((line + why).replace("[", "\\["))


def print_plan(run_id: str, items: list[PlanItem]) -> None:
    console = _console()
    table = Table(title=f"plan for {run_id} (nothing changed)", title_justify="left")
    for column in ("step", "action", "why"):
        table.add_column(column)
    for item in items:
        table.add_row(item.step_id, item.action, item.reason)
    console.print(table)


def print_runs(summaries: list[Any]) -> None:
    console = _console()
    if not summaries:
        console.print("no runs yet; start one with: agentsaga run PIPELINE.yml")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("run", "pipeline", "status", "steps", "tokens", "cost", "started"):
        table.add_column(column)
    for s in summaries:
        cost = (
            "unknown"
            if s.usage.cost_usd is None and s.usage.total
            else (f"${s.usage.cost_usd:.4f}" if s.usage.cost_usd is not None else "-")
        )
        table.add_row(
            s.id,
            s.pipeline_name,
            _styled(s.status),
            str(s.steps),
            f"{s.usage.total:,}",
            cost,
            s.created_at[:19].replace("T", " "),
        )
    console.print(table)


def environment_lines(run: dict[str, Any]) -> list[str]:
    """What the run found of the user's project: venv, redirected imports, setup."""
    lines = []
    python = run.get("python") or {}
    if python:
        venv = python.get("venv")
        where = f"venv {venv} (from {python.get('venv_from')})" if venv else "no venv"
        exe = f"python {python['python']}, " if python.get("python") else ""
        lines.append(f"{exe}{where}")
        for root in python.get("import_roots") or []:
            lines.append(f"imports {root['checkout']} -> {root['worktree']}")
        if python.get("note"):
            lines.append(str(python["note"]))
    setup = run.get("setup") or {}
    for key in ("start", "included", "setup", "submodules"):
        if setup.get(key):
            lines.append(f"{key}: {setup[key]}")
    return lines


def print_show(detail: dict[str, Any]) -> None:
    console = _console()
    run = detail["run"]
    console.print(f"run {run['id']}  {run['pipeline']}  {_styled(run['status'])}")
    if run.get("parent_run_id"):
        console.print(f"  forked from {run['parent_run_id']} at {run['parent_step']}")
    if run.get("branch"):
        console.print(f"  branch {run['branch']}  workspace {run.get('workspace')}")
    for line in environment_lines(run):
        console.print(f"  {line}".replace("[", "\\["))
    if run.get("error"):
        console.print(f"  {run['error'].get('message', '')}".replace("[", "\\["))
    table = Table(box=None, pad_edge=False)
    for column in ("step", "attempt", "status", "duration", "tokens", "commit", "compensation"):
        table.add_column(column)
    for a in detail["attempts"]:
        duration = f"{a['duration_ms'] / 1000:.2f}s" if a["duration_ms"] is not None else "-"
        status = a["status"] + (" (superseded)" if a["superseded"] else "")
        status += " (reused)" if a["reused_from"] else ""
        table.add_row(
            a["step"],
            str(a["attempt"]),
            _styled(status),
            duration,
            f"{a['tokens']:,}",
            (a.get("commit") or "")[:10],
            a.get("compensation") or "",
        )
    console.print(table)
    print_decisions(detail.get("decisions") or [])
    if detail.get("gate"):
        _print_gate(console, detail["gate"])


def explain_pipeline(pipeline: Any, json_mode: bool) -> None:
    """Everything a pipeline from elsewhere would do, for review before running it."""
    from agentsaga.saga.plans import describe, effective_compensation

    items = []
    for step in pipeline.steps:
        entry: dict[str, Any] = {"step": step.id, "kind": step.kind}
        if "run" in step.fields:
            entry["runs"] = step.fields["run"]
        if step.kind in ("write", "agent"):
            # Edit paths are confined (edits.confine_path): this is the whole reach.
            entry["writes"] = [
                "**  (paths the model's edits name)",
                "except .git/**, .agentsaga/**, .agentsaga.yml, "
                "absolute paths, '..' and symlinks leading out",
            ]
        elif step.kind in ("shell", "deploy", "test"):
            entry["writes"] = ["whatever its command writes (run in the workspace)"]
        if step.kind == "agent":
            entry["runs"] = list(step.fields.get("commands", [])) or "no command"
            entry["reads"] = ["**  (confined as its edits are)"]
        if step.kind == "read":
            # Reads are confined like edits (edits.confine_path, in steps/read.py).
            entry["reads"] = [
                *step.fields.get("files", []),
                "except files .gitignore hides, .git/**, .agentsaga/**, .agentsaga.yml "
                "and symlinks leading out of the workspace",
            ]
        if step.commit or step.kind in ("write", "agent", "external"):
            entry["commits"] = "its changes, on the run branch"
        if step.kind in ("plan", "write", "agent"):
            entry["llm"] = f"{step.fields.get('provider') or pipeline.defaults.get('provider')}"
        comp = effective_compensation(step)
        if comp is not None:
            entry["compensation"] = describe(comp)
        if step.env:
            entry["env"] = sorted(step.env)
        if step.irreversible:
            entry["irreversible"] = True
        items.append(entry)
    if json_mode:
        sys.stdout.write(json.dumps({"name": pipeline.name, "steps": items}, indent=2) + "\n")
        return
    console = _console()
    console.print(f"{pipeline.name}: what this pipeline will run")
    for entry in items:
        console.print(f"- {entry['step']} ({entry['kind']})".replace("[", "\\["))
        for key in (
            "runs",
            "reads",
            "writes",
            "commits",
            "llm",
            "compensation",
            "env",
            "irreversible",
        ):
            if key in entry:
                value = entry[key]
                if key == "runs" and isinstance(value, list):
                    text = json.dumps(value)  # argv: each element is one argument
                elif isinstance(value, list):
                    text = "; ".join(map(str, value))
                else:
                    text = str(value)
                console.print(f"    {key}: {text}".replace("[", "\\["))


def print_report(data: dict[str, Any]) -> None:
    console = _console()
    table = Table(
        box=None, pad_edge=False, title=f"tokens for run {data['run_id']}", title_justify="left"
    )
    for column in (
        "step",
        "attempt",
        "status",
        "input",
        "output",
        "cache r",
        "cache w",
        "cost",
        "reused",
    ):
        table.add_column(column, justify="right" if column not in ("step", "status") else "left")
    for row in data["attempts"]:
        u = row["usage"]
        cost = (
            "-"
            if not row["tokens"]
            else ("unknown" if row["cost_usd"] is None else f"${row['cost_usd']:.4f}")
        )
        reused = (
            "checkpoint"
            if row["reused_checkpoint"]
            else (f"{row['reused_from_log']:,} (log)" if row["reused_from_log"] else "")
        )
        table.add_row(
            row["step"],
            str(row["attempt"]),
            row["status"],
            f"{u['input']:,}",
            f"{u['output']:,}",
            f"{u['cache_read']:,}",
            f"{u['cache_write']:,}",
            cost,
            reused,
        )
    console.print(table)
    cost = data["cost_usd"]
    console.print(
        f"spent {data['spent_tokens']:,} tokens"
        + (f" (${cost:.4f})" if cost is not None else " (cost unknown)")
        + f"; one clean pass: {data['clean_pass_tokens']:,}"
    )
    console.print(
        f"reused: {data['reused_checkpoint_tokens']:,} tokens from checkpoints, "
        f"{data['reused_from_log_tokens']:,} from the call log"
    )
    console.print(
        f"failed-run tax: saga {data['tax_saga']:.1%}; restart from scratch would "
        f"have been {data['tax_restart']:.1%} "
        f"({data['restart_counterfactual_tokens']:,} tokens)"
    )
    print_decisions(data.get("decisions") or [])
