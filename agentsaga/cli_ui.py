"""``agentsaga ui`` and ``agentsaga show RUN --html``: the web view's commands.

Registered on the CLI's app by ``cli.py``; the server, the page and the documents are
imported inside the commands, so ``agentsaga --help`` pays nothing for them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from agentsaga.cli import _Session, _state, app
from agentsaga.errors import ConfigError


@app.command()
def ui(
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port (0: any free one). Default: 8470, or the next free."),
    ] = None,
    host: Annotated[
        str,
        typer.Option("--host", help="Address to bind. Not loopback: a token is required."),
    ] = "127.0.0.1",
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Do not open a browser window.")
    ] = False,
    require_token: Annotated[
        bool,
        typer.Option("--require-token", help="Ask for the token on loopback too (shared hosts)."),
    ] = False,
) -> None:
    """Serve a web view of the runs: timelines, tokens, diffs, approvals. Ctrl-C stops it."""
    from agentsaga.ui.security import Access, is_loopback
    from agentsaga.ui.server import UIApp, display_available

    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 0 to 65535")
    session = _Session(writes=True)
    loopback = is_loopback(host)
    access = Access(secrets.token_urlsafe(24), loopback, require_token)
    decide = Decider(session, _store_for_children(session))
    httpd = _listen(UIApp(session.store, access, decide=decide), host, port)
    bound = httpd.server_address
    bound_host = bound[0].decode() if isinstance(bound[0], bytes) else str(bound[0])
    bound_port = bound[1]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}/"
    if not loopback or require_token:
        url += f"?token={access.token}"
        typer.echo(
            f"serving on {host}: anyone who can reach it needs the token below\n"
            f"token: {access.token}",
            err=True,
        )
    typer.echo(f"agentsaga ui: {url}  (store {session.store.location}; Ctrl-C to stop)")
    sys.stdout.flush()
    if not no_browser and display_available():
        import webbrowser

        webbrowser.open(url)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
    finally:
        httpd.server_close()


DEFAULT_PORT = 8470


def _listen(app: Any, host: str, port: int | None) -> Any:
    """A server on ``port``; without one, on 8470 or the next free port (a second ``ui``
    in another repository should just work)."""
    import errno

    from agentsaga.ui.server import make_server

    candidates = [port] if port is not None else range(DEFAULT_PORT, DEFAULT_PORT + 20)
    failure: OSError | None = None
    for candidate in candidates:
        try:
            return make_server(app, host, candidate)
        except OSError as exc:
            failure = exc
            if exc.errno != errno.EADDRINUSE:
                break
    assert failure is not None
    where = f"{host}:{port}" if port is not None else f"{host} (ports {DEFAULT_PORT}-8489)"
    raise ConfigError(f"cannot listen on {where}: {failure.strerror or failure}")


def run_page_documents(store: Any, run_id: str) -> dict[str, Any]:
    """What the run page shows, all of it: the run, its token report, every step."""
    from agentsaga.documents import run_document
    from agentsaga.report import token_report
    from agentsaga.step_detail import step_document

    steps: list[str] = []
    for attempt in store.attempts(run_id):
        if attempt.step_id not in steps:
            steps.append(attempt.step_id)
    from agentsaga.gates import waiting_gate

    gate = waiting_gate(store, run_id)
    return {
        "run": run_document(store, run_id),
        "report": token_report(store, run_id),
        "steps": {step: step_document(store, run_id, step) for step in steps},
        "gate": gate.to_json() if gate else None,
    }


def write_html(store: Any, run_id: str) -> None:
    """``show RUN --html``: the run page as one self-contained file, on stdout."""
    from agentsaga.ui.page import standalone_page

    sys.stdout.write(standalone_page(run_id, run_page_documents(store, run_id)))


def _store_for_children(session: _Session) -> str:
    """The store a process started from here must open: the one this command opened (a
    PostgreSQL URL keeps its password: it goes in the environment, never on argv)."""
    from agentsaga.config import store_location

    return store_location(_state["store"], session.config) or session.store.location


class Decider:
    """The approval panel's decision: recorded by ``gates`` (what ``agentsaga approve``
    and ``reject`` call), then the run goes on in a process of its own, as
    ``agentsaga resume`` would drive it: the server never runs a step itself, and the
    run goes on if the page or the server is closed. A run on Temporal gets the decision
    as its waiting workflow's ``decide`` update, as ``agentsaga approve`` sends it."""

    def __init__(self, session: _Session, store_location: str) -> None:
        self.repo_root = session.repo_root
        self.home = session.home
        self.config = session.config
        self.store_location = store_location

    def __call__(
        self,
        store: Any,
        run_id: str,
        verdict: str,
        comment: str,
        who: str,
        discard_edits: bool = False,
    ) -> dict[str, Any]:
        from agentsaga import gates
        from agentsaga.cli_gates import decider

        who = who.strip() or f"{decider(self.repo_root)} (web view)"
        if verdict == "reject" and not comment.strip():
            raise ConfigError("say what is wrong: the agent reads it when it rewinds")
        if verdict == "reject":
            # As `agentsaga reject`: a person's edits in the worktree refuse it (409).
            gates.check_edits(store, run_id, "reject", discard_edits)
        remote = self.on_temporal(store, run_id, verdict, comment, who, discard_edits)
        if remote is not None:
            return _answer(run_id, remote, "on Temporal")
        if verdict == "approve":
            record = gates.approve(store, run_id, who, comment)
        else:
            record = gates.reject(store, run_id, who, comment, discard_edits=discard_edits)
        log = self.resume_in_background(store, run_id)
        recorded = {
            "decision": record.decision,
            "decided_by": record.decided_by,
            "decided_at": record.decided_at,
            "comment": record.comment,
        }
        return {**_answer(run_id, recorded, f"log: {log}"), "log": str(log)}

    def on_temporal(
        self,
        store: Any,
        run_id: str,
        verdict: str,
        comment: str,
        who: str,
        discard_edits: bool = False,
    ) -> dict[str, Any] | None:
        """The workflow's own record of the decision; None for a local run, or a Temporal
        run with no open workflow (recorded here, its resume goes to Temporal)."""
        from agentsaga.cli_temporal import target_of

        target = target_of(None, self.config, store.get_run(run_id))
        if target is None:
            return None
        from agentsaga.runners.temporal_client import decide_and_follow
        from agentsaga.runtime import Event

        verdict_doc = {"decision": verdict, "who": who, "comment": comment}
        if discard_edits:
            verdict_doc["discard_edits"] = "yes"
        return decide_and_follow(target, run_id, verdict_doc, store, None, Event, lambda r: None)

    def resume_in_background(self, store: Any, run_id: str) -> Path:
        ws = store.get_run(run_id).workspace or {}
        cwd = Path(ws.get("repo_root") or self.repo_root or Path.cwd())
        logs = self.home / "logs" / run_id
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"resume-from-ui-{len(list(logs.glob('resume-from-ui-*')))}.log"
        env = {**os.environ, "AGENTSAGA_STORE": self.store_location}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agentsaga", "resume", run_id],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C on the server does not interrupt the run.
                start_new_session=True,
            )
        threading.Thread(target=proc.wait, daemon=True).start()  # reaped when it ends
        return log


def _answer(run_id: str, record: dict[str, Any], where: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "decision": record["decision"],
        "by": record["decided_by"],
        "comment": record.get("comment", ""),
        "at": record.get("decided_at"),
        "message": f"{record['decision']} by {record['decided_by']}; the run goes on ({where})",
    }
