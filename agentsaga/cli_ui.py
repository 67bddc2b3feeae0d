"""``agentsaga ui`` and ``agentsaga show RUN --html``: the web view's commands.

Registered on the CLI's app by ``cli.py``; the server, the page and the documents are
imported inside the commands, so ``agentsaga --help`` pays nothing for them.
"""

from __future__ import annotations

import secrets
import sys
from typing import Annotated, Any

import typer

from agentsaga.cli import _Session, app
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
) -> None:
    """Serve a web view of the runs: timelines, tokens, diffs, approvals. Ctrl-C stops it."""
    from agentsaga.ui.security import Access, is_loopback
    from agentsaga.ui.server import UIApp, display_available

    if port is not None and not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 0 to 65535")
    session = _Session()
    loopback = is_loopback(host)
    access = Access(token=secrets.token_urlsafe(24), loopback=loopback)
    httpd = _listen(UIApp(session.store, access, decide=None), host, port)
    bound = httpd.server_address
    bound_host = bound[0].decode() if isinstance(bound[0], bytes) else str(bound[0])
    bound_port = bound[1]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}/"
    if not loopback:
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
    from agentsaga.report import run_detail, step_detail, token_report

    steps: list[str] = []
    for attempt in store.attempts(run_id):
        if attempt.step_id not in steps:
            steps.append(attempt.step_id)
    return {
        "run": run_detail(store, run_id),
        "report": token_report(store, run_id),
        "steps": {step: step_detail(store, run_id, step) for step in steps},
    }


def write_html(store: Any, run_id: str) -> None:
    """``show RUN --html``: the run page as one self-contained file, on stdout."""
    from agentsaga.ui.page import standalone_page

    sys.stdout.write(standalone_page(run_id, run_page_documents(store, run_id)))
