"""How the CLI shows things: the live progress of a run, tables, plans.

On a terminal, a live line shows the running step and its elapsed time; elsewhere (CI, a
pipe) each event is one plain line. ``NO_COLOR`` turns colour off.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from agentsaga.engine import Event


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
        # Not a terminal and no colour (a log, CI, a pipe): each line is written as is.
        # Rich's markup parsing and rendering cost ~0.2 ms a line, two lines a step: a
        # tenth of a no-op step's CPU.
        self.plain = not self.live and self.console.color_system is None
        # Off a terminal the width cannot change (no resize): asked once, not per line
        # (rich looks at the environment and the file each time: a tenth of the line).
        self._width = None if self.console.is_terminal else max(self.console.width, 40)

    def on_event(self, event: Event) -> None:
        if self.quiet:
            return
        if event.kind == "run" and event.status in _TERMINAL:
            self._stop_live()
            return  # the closing summary (print_result) says it, once
        if event.kind == "step" and event.status == "running":
            self._start_live(event)
            return
        self._stop_live()
        self._print(*self._texts(event))

    def _print(self, plain: str, status: str) -> None:
        if self.plain:
            out = self.console.file
            # isprintable is one C pass; the table's translation a dict lookup per char.
            out.write((plain if plain.isprintable() else plain.translate(_CONTROLS)) + "\n")
            out.flush()
            return
        text = esc(plain)
        if status:
            text = text.replace(f": {status}", f": {_styled(status)}", 1)
        self.console.print(text)

    def _texts(self, event: Event) -> tuple[str, str]:
        """The event's line (plain text, wrapped) and the status word to colour in it."""
        status = event.status or ""
        width = self._width or max(self.console.width, 40)
        if event.kind == "run":
            plain = f"run {event.run_id}: {status}"
        elif event.kind in ("step", "compensate"):
            attempt = f" (attempt {event.attempt})" if event.attempt else ""
            verb = "compensation of " if event.kind == "compensate" else ""
            plain = f"  {verb}{event.step_id}{attempt}: {status}"
        else:
            where = f"{event.step_id}: " if event.step_id else ""
            return wrap(f"  {where}{event.message}", width), ""
        if event.message.strip():
            plain += " - " + event.message.strip().splitlines()[0][:200]
        return wrap(plain, width), status

    def _start_live(self, event: Event) -> None:
        label = f"{event.step_id} (attempt {event.attempt})"
        if not self.live:
            self._print(f"  {label}: running", "running")
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


_TERMINAL = {"succeeded", "failed", "interrupted", "rolled_back", "rollback_failed"}


def table(*columns: str, right: tuple[str, ...] = (), title: str | None = None) -> Table:
    """The one table style of every listing: no box, one space between columns, numbers
    right-aligned; a cell too long for 80 columns wraps between words."""
    t = Table(
        box=None,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        show_edge=False,
        title=title,
        title_justify="left",
        title_style="",
        header_style="bold",
    )
    for column in columns:
        t.add_column(column, justify="right" if column in right else "left")
    return t


#: Above this many rows a table is printed as plain aligned text: rich lays a table out
#: cell by cell, 2.5 s for the 10,000 rows of a long run's `resume --plan`.
PLAIN_ROWS = 500


def print_table(console: Console, t: Table) -> None:
    """``console.print(t)``; a long table as plain columns, one space apart (numbers
    right-aligned, no colour, no wrapping), in one write."""
    if t.row_count <= PLAIN_ROWS:
        console.print(t)
        return
    from rich.text import Text

    def plain(cell: object) -> str:
        return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain

    columns = [[str(c.header), *(plain(cell) for cell in c.cells)] for c in t.columns]
    widths = [max(map(len, cells)) for cells in columns]
    right = [c.justify == "right" for c in t.columns]
    lines = [str(t.title)] if t.title else []
    for row in zip(*columns, strict=True):
        cells = (
            cell.rjust(width) if r else cell.ljust(width)
            for cell, width, r in zip(row, widths, right, strict=True)
        )
        lines.append(" ".join(cells).rstrip())
    console.file.write("\n".join(lines) + "\n")


def wrap(line: str, width: int = 80) -> str:
    """A line of prose fitted to ``width`` columns, broken between words only; the
    continuation lines are indented under the first."""
    import textwrap

    if len(line) <= width:
        return line
    lead = len(line) - len(line.lstrip(" "))
    return textwrap.fill(
        line,
        width=width,
        subsequent_indent=" " * (lead + 2),
        break_long_words=False,
        break_on_hyphens=False,
    )


def say(lines: list[str]) -> None:
    """Print prose lines (not markup), each wrapped to the terminal (80 columns when
    output is not a terminal)."""
    console = _console()
    for line in lines:
        console.print(esc(wrap(line, max(console.width, 40))))


def print_step(doc: dict[str, Any]) -> None:
    """``show RUN STEP``: printed verbatim (a reply or a prompt is never re-wrapped)."""
    from agentsaga.cli_step import step_lines

    console = _console()
    for line in step_lines(doc):
        console.print(esc(line), overflow="ignore", crop=False)


#: C0 controls but newline and tab, DEL and C1 controls, each shown as ``\xNN``: a model's
#: reply or a command's output must not drive the terminal (set its title, clear the
#: screen, hide text, plant a hyperlink) when ``show`` prints it.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}


def esc(text: object) -> str:
    """Text from a store or a model, shown literally (rich reads ``[...]`` as markup)."""
    return str(text).translate(_CONTROLS).replace("[", "\\[")


def tokens_text(n: int) -> str:
    return f"{n:,}"


def cost_text(cost: float | None, tokens: int) -> str:
    if not tokens:
        return "-"
    return "unknown" if cost is None else f"${cost:.4f}"


def _flat_attempts(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A document's attempts across its steps, in the order they started."""
    rows = [(step["step_id"], a) for step in doc["steps"] for a in step["attempts"]]
    return sorted(rows, key=lambda row: row[1]["seq"])


def print_result(
    doc: dict[str, Any], command: str = "run", advice: list[dict[str, str]] | None = None
) -> None:
    """The one closing summary of a run, resume, rollback or fork."""
    from agentsaga.cli_summary import summary_lines

    say(summary_lines(doc, command, advice or []))


def print_plan(doc: dict[str, Any]) -> None:
    console = _console()
    t = table(
        "step",
        "attempt",
        "action",
        "why",
        title=f"{doc['command']} --plan for run {doc['run_id']} (nothing changed)",
    )
    for item in doc["plan"]:
        attempt = "" if item["attempt"] is None else str(item["attempt"])
        t.add_row(
            esc(item["step_id"] or "(workspace)"), attempt, item["action"], esc(item["reason"])
        )
    print_table(console, t)


def _print_gate(gate: dict[str, Any]) -> None:
    """What a waiting run waits for, and the two commands (show)."""
    say(
        [
            f"  waiting at gate {gate['step_id']}: {gate['message']}",
            f"  approve: {gate['approve']}",
            f"  reject:  {gate['reject']}",
        ]
    )


def print_decisions(decisions: list[dict[str, Any]]) -> None:
    """Who decided at each gate, when and why (show, report)."""
    lines = []
    for d in decisions:
        why = f": {d['comment']}" if d["comment"] else ""
        lines.append(
            f"  gate {d['step_id']} (visit {d['visit']}): {d['decision']} by "
            f"{d['decided_by']} at {d['decided_at']}{why}"
        )
    say(lines)


def print_runs(doc: dict[str, Any]) -> None:
    console = _console()
    if not doc["runs"]:
        console.print("no runs yet; start one with: agentsaga run PIPELINE.yml")
        return
    t = table(
        "run",
        "pipeline",
        "status",
        "steps",
        "tokens",
        "cost",
        "started (UTC)",
        right=("steps", "tokens", "cost"),
    )
    for r in doc["runs"]:
        u = r["usage"]
        t.add_row(
            r["run_id"],
            esc(r["pipeline"]),
            _styled(r["status"]),
            str(r["step_count"]),
            tokens_text(u["total"]),
            cost_text(u["cost_usd"], u["total"]),
            r["created_at"][:16].replace("T", " "),
        )
    print_table(console, t)


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
    start = setup.get("start")
    if isinstance(start, dict):
        # {"from": "HEAD", "uncommitted": [names]}: said in words, not as a dict.
        left = start.get("uncommitted") or []
        if start.get("from") != "HEAD" or left:
            said = "left out" if start.get("from") == "HEAD" else "included"
            names = ", ".join(left[:8]) + (f" and {len(left) - 8} more" if len(left) > 8 else "")
            lines.append(
                f"start: {start.get('from')}" + (f" (uncommitted, {said}: {names})" if left else "")
            )
    elif start:
        lines.append(f"start: {start}")
    for key in ("included", "setup", "submodules"):
        if setup.get(key):
            lines.append(f"{key}: {setup[key]}")
    return lines


def print_show(doc: dict[str, Any]) -> None:
    console = _console()
    console.print(f"run {doc['run_id']}  {esc(doc['pipeline'])}  {_styled(doc['status'])}")
    if doc.get("parent_run_id"):
        console.print(f"  forked from {doc['parent_run_id']} at {doc['parent_step_id']}")
    if doc.get("branch"):
        gone = " (removed by the rollback)" if doc["status"] == "rolled_back" else ""
        console.print(f"  branch {esc(doc['branch'])}{gone}")
    say([f"  {line}" for line in environment_lines(doc)])
    if doc.get("error"):
        say([f"  {doc['error']['message']}"])
    t = table(
        "step", "#", "status", "time", "tokens", "commit", "undo", right=("#", "time", "tokens")
    )
    for step_id, a in _flat_attempts(doc):
        duration = f"{a['duration_ms'] / 1000:.2f}s" if a["duration_ms"] is not None else "-"
        comp = a["compensations"][-1] if a["compensations"] else None
        t.add_row(
            esc(step_id),
            str(a["attempt"]),
            _styled(a["status"]),
            duration,
            "reused" if a["reused"] else tokens_text(a["usage"]["total"]),
            (a.get("commit") or "")[:10],
            comp["status"] if comp else "",
        )
        _call_rows(t, a["model_calls"], ("", "", "status", "latency", "tokens", "", ""))
    print_table(console, t)
    print_decisions(doc.get("decisions") or [])
    if doc.get("gate"):
        _print_gate(doc["gate"])
    say([f"one step in full: agentsaga show {doc['run_id']} STEP"])


def _call_rows(t: Table, calls: list[dict[str, Any]], shape: tuple[str, ...]) -> None:
    """One row per model call under its attempt, when there is more than one: a write
    with three calls is three rows, not one."""
    if len(calls) < 2:
        return
    for call in calls:
        cells = {
            "status": call["status"]
            + ("" if call["http_attempts"] < 2 else f" ({call['http_attempts']} HTTP)"),
            "latency": f"{call['latency_ms'] / 1000:.2f}s",
            "tokens": tokens_text(call["usage"]["total"]),
            "input": tokens_text(call["usage"]["input"]),
            "output": tokens_text(call["usage"]["output"]),
            "cache_read": tokens_text(call["usage"]["cache_read"]),
            "cache_write": tokens_text(call["usage"]["cache_write"]),
            "cost": cost_text(call["usage"]["cost_usd"], call["usage"]["total"]),
        }
        label = f"  call {call['call']}"
        t.add_row(label, *[cells.get(key, "") for key in shape[1:]], style="dim")


def explain_pipeline(pipeline: Any, json_mode: bool, models: dict[str, str] | None = None) -> None:
    """Everything a pipeline from elsewhere would do, for review before running it.
    ``models``: the provider/model each LLM step will use (``preflight.model_choices``)."""
    items = _workspace_entries(pipeline.workspace)
    items += [_step_entry(pipeline, step, models or {}) for step in pipeline.steps]
    if json_mode:
        sys.stdout.write(json.dumps({"pipeline": pipeline.name, "steps": items}, indent=2) + "\n")
        return
    console = _console()
    console.print(f"{pipeline.name}: what this pipeline will run")
    for entry in items:
        console.print(f"- {entry['step_id']} ({entry['kind']})".replace("[", "\\["))
        for key in _EXPLAINED:
            if key in entry:
                text = _explained_value(key, entry[key])
                console.print(f"    {key}: {text}".replace("[", "\\["))


#: The keys of an explained step, in the order the text shows them.
_EXPLAINED = (
    "runs",
    "allows",
    "reads",
    "writes",
    "commits",
    "llm",
    "compensation",
    "env",
    "irreversible",
)


def _explained_value(key: str, value: Any) -> str:
    if key == "runs" and isinstance(value, list):
        return json.dumps(value)  # argv: each element is one argument
    if key == "allows":
        return "".join(f"\n      {line}" for line in value)
    if isinstance(value, list):
        return "; ".join(map(str, value))
    return str(value)


def _workspace_entries(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """What runs before the first step, in each new worktree."""
    if not (spec.get("setup") or spec.get("include")):
        return []
    entry: dict[str, Any] = {"step_id": "(workspace)", "kind": "workspace"}
    if spec.get("setup"):
        entry["runs"] = spec["setup"]
    if spec.get("include"):
        entry["writes"] = [
            f"copies into the worktree the gitignored files matching {g}" for g in spec["include"]
        ]
    return [entry]


def _step_entry(pipeline: Any, step: Any, models: dict[str, str]) -> dict[str, Any]:
    from agentsaga.saga.plans import describe, effective_compensation

    entry: dict[str, Any] = {"step_id": step.id, "kind": step.kind}
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
        entry["allows"] = _agent_allows(pipeline, step)
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
        entry["llm"] = models.get(step.id) or str(
            step.fields.get("provider") or pipeline.defaults.get("provider")
        )
    comp = effective_compensation(step)
    if comp is not None:
        entry["compensation"] = describe(comp)
    if step.env:
        entry["env"] = sorted(step.env)
    if step.irreversible:
        entry["irreversible"] = True
    return entry


def _agent_allows(pipeline: Any, step: Any) -> list[str]:
    """What an agent step's allow-list lets the model run, said plainly per entry."""
    from agentsaga.allowlist import permits_anything, prefix_of

    lines = []
    for raw in step.fields.get("commands", []):
        prefix = prefix_of(raw, pipeline.vars)
        if not prefix:
            lines.append(f"{raw!r}: nothing (an empty command)")
            continue
        shown = shlex.join(prefix)
        how = permits_anything(prefix)
        if how is not None:
            lines.append(f"{shown} ...: ANY command ({how})")
        else:
            lines.append(f"{shown} ...: only argv starting exactly with these words")
    lines.append(
        "an allowed command that runs the project's code (tests, scripts, builds) runs "
        "what the agent wrote in the workspace"
    )
    return lines


def print_report(doc: dict[str, Any]) -> None:
    console = _console()
    t = table(
        "step",
        "#",
        "status",
        "input",
        "output",
        "cache r",
        "cache w",
        "cost",
        "reused",
        right=("#", "input", "output", "cache r", "cache w", "cost", "reused"),
        title=f"tokens of run {doc['run_id']}",
    )
    saved_at: list[str] = []
    for step_id, a in _flat_attempts(doc):
        u = a["usage"]
        reused = a["reused_tokens"]["checkpoint"] + a["reused_tokens"]["call_log"]
        t.add_row(
            esc(step_id),
            str(a["attempt"]),
            _styled(a["status"]),
            tokens_text(u["input"]),
            tokens_text(u["output"]),
            tokens_text(u["cache_read"]),
            tokens_text(u["cache_write"]),
            cost_text(u["cost_usd"], u["total"]),
            tokens_text(reused) if reused else "",
        )
        _call_rows(
            t,
            a["model_calls"],
            ("", "", "status", "input", "output", "cache_read", "cache_write", "cost", ""),
        )
        if a["saved_tokens"]:
            saved_at.append(f"{step_id} #{a['attempt']}: {a['saved_tokens']:,}")
    print_table(console, t)
    cost = doc["cost_usd"]
    lines = [
        f"spent:      {doc['spent_tokens']:,} tokens"
        + (f" (${cost:.4f})" if cost is not None else " (cost unknown)")
        + ", this run's own model calls",
        f"reused:     {doc['reused_tokens']:,} tokens not paid: "
        f"{doc['reused_checkpoint_tokens']:,} from a parent run's checkpoints, "
        f"{doc['reused_from_log_tokens']:,} from the call log",
        f"clean pass: {doc['clean_pass_tokens']:,} tokens (each step's final attempt)",
    ]
    if doc["saved_tokens"]:
        lines.append(
            f"saved:      {doc['saved_tokens']:,} tokens of checkpoints kept where the run "
            f"went back ({'; '.join(saved_at)}), which a restart from scratch pays again"
        )
    lines.append(
        f"failed-run tax: saga {doc['tax_saga']:.1%}; restarting from scratch after each "
        f"failure: {doc['tax_restart']:.1%} ({doc['restart_counterfactual_tokens']:,} tokens)"
    )
    say(lines)
    print_decisions(doc.get("decisions") or [])
