"""``agentsaga ui``: the store served as a web page and a JSON API, by the standard library.

Routes (every ``/api/`` document is what the CLI prints with ``--json``):

    GET  /                                  the page (a single-page app, static/*.js)
    GET  /static/<file>                     its assets, vendored in the package
    GET  /api/runs?status=S&limit=N         agentsaga runs --json
    GET  /api/runs/<run>                    agentsaga show RUN --json
    GET  /api/runs/<run>/report             agentsaga report RUN --json
    GET  /api/runs/<run>/steps/<step>       one step's attempts in full (the step panel)
    GET  /api/runs/<run>/gate               what a waiting run waits for (gates.waiting_gate)
    POST /api/runs/<run>/approve|reject     a waiting run's decision, {"comment": "..."};
                                            a reject refused for a person's edits in the
                                            worktree (409 with "files", "saved") goes on
                                            with {"discard_edits": true}

``ThreadingHTTPServer`` is enough here: one user, a handful of routes, JSON and files; a
request thread reads the store through the same connection the CLI would use (the stores
serialise their connection with a lock). Who may read or decide: ``security.py``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agentsaga.errors import AgentsagaError, EditsInWorktree, RunNotFound, UserInputError
from agentsaga.store import Store
from agentsaga.ui import page
from agentsaga.ui.security import COOKIE, Access

#: A decision: (store, run_id, verdict, comment, who) -> the document to answer with.
#: (store, run id, verdict, comment, who, discard_edits) -> the recorded decision.
Decide = Callable[[Store, str, str, str, str, bool], dict[str, Any]]


@dataclass
class UIApp:
    store: Store
    access: Access
    decide: Decide | None = None
    max_body_bytes: int = 64 * 1024


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


_RUN = r"/api/runs/(?P<run>[^/]+)"
_GET_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"/api/runs/?"), "runs"),
    (re.compile(_RUN + r"/?"), "run"),
    (re.compile(_RUN + r"/report/?"), "report"),
    (re.compile(_RUN + r"/steps/(?P<step>[^/]+)/?"), "step"),
    (re.compile(_RUN + r"/gate/?"), "gate"),
]
_POST_ROUTE = re.compile(_RUN + r"/(?P<verdict>approve|reject)/?")


def _get_document(store: Store, route: str, groups: dict[str, str], query: str) -> Any:
    from agentsaga import documents, report
    from agentsaga.step_detail import step_document

    if route == "runs":
        from agentsaga.states import RunStatus

        params = parse_qs(query)
        status = params.get("status", [None])[0] or None
        if status is not None and status not in {s.value for s in RunStatus}:
            raise BadRequest(f"status {status!r}: expected one of {', '.join(RunStatus)}")
        try:
            limit = int(params.get("limit", ["50"])[0])
        except ValueError:
            raise BadRequest("limit: expected a number") from None
        return documents.runs_document(store.list_runs(status, limit))
    run_id = store.resolve_run_id(groups["run"])
    if route == "run":
        return documents.run_document(store, run_id)
    if route == "report":
        return report.token_report(store, run_id)
    if route == "gate":
        from agentsaga import gates

        gate = gates.waiting_gate(store, run_id)
        if gate is None:
            raise NotFound(f"run {run_id} is not waiting at a gate")
        # The reviewer sees the whole change so far beside the gate's own summary.
        return {**gate.to_json(), "diff": report.run_diff(store, run_id, None, stat=False)}
    try:
        detail = step_document(store, run_id, groups["step"])
    except UserInputError as exc:
        raise NotFound(exc.message) from None
    if not detail["attempts"]:
        raise NotFound(f"step {groups['step']!r} has not run in run {run_id}")
    return detail


class Handler(BaseHTTPRequestHandler):
    server_version = "agentsaga-ui"
    app: UIApp  # set on the subclass made by make_server

    # -- plumbing ------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        pass  # the terminal shows the URL and errors, not every poll of the page

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = (json.dumps(data, indent=2, default=str) + "\n").encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "status": status})

    # -- GET -----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (stdlib's name)
        url = urlsplit(self.path)
        access = self.app.access
        if not access.can_read(self.headers):
            token = parse_qs(url.query).get("token", [None])[0]
            if access.host_allowed(self.headers) and access.valid_query_token(token):
                # Trade the token in the URL for a cookie, and drop it from the address bar.
                cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                self._send(303, b"", "text/plain", Location="/", Set_Cookie=cookie)
                return
            self._refuse_read()
            return
        try:
            self._route_get(url.path, url.query)
        except (NotFound, RunNotFound) as exc:
            self._error(404, getattr(exc, "message", None) or str(exc))
        except (BadRequest, UserInputError) as exc:
            self._error(400, getattr(exc, "message", None) or str(exc))
        except AgentsagaError as exc:
            self._error(500, exc.message)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _refuse_read(self) -> None:
        if not self.app.access.host_allowed(self.headers):
            self._error(403, "this server answers only to a loopback Host")
        else:
            self._error(401, "this server needs its token: open the URL it printed at start")

    def _route_get(self, path: str, query: str) -> None:
        if path in ("/", "/index.html"):
            html = page.served_page(self.app.access.token).encode()
            self._send(200, html, page.CONTENT_TYPES[".html"], **_page_headers())
            return
        if path.startswith("/static/"):
            name = path[len("/static/") :]
            data = page.static_bytes(name)
            suffix = name[name.rfind(".") :] if "." in name else ""
            if data is None or suffix not in page.CONTENT_TYPES:
                raise NotFound(f"no such file: {path}")
            self._send(200, data, page.CONTENT_TYPES[suffix])
            return
        for pattern, route in _GET_ROUTES:
            match = pattern.fullmatch(path)
            if match:
                self._json(200, _get_document(self.app.store, route, match.groupdict(), query))
                return
        raise NotFound(f"no such page: {path}")

    # -- POST ----------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        refusal = self.app.access.write_refusal(self.headers)
        if refusal is not None:
            self._error(403, refusal)
            return
        match = _POST_ROUTE.fullmatch(urlsplit(self.path).path)
        if match is None:
            self._error(404, f"no such action: {self.path}")
            return
        if self.app.decide is None:
            self._error(501, "approval decisions are not available in this version")
            return
        try:
            body = self._read_json()
            comment = body.get("comment") or ""
            who = body.get("who") or ""
            discard = body.get("discard_edits", False)
            if not isinstance(comment, str) or not isinstance(who, str):
                raise BadRequest("comment and who are strings")
            if not isinstance(discard, bool):
                raise BadRequest("discard_edits is true or false")
            run_id = self.app.store.resolve_run_id(match["run"])
            result = self.app.decide(
                self.app.store, run_id, match["verdict"], comment, who, discard
            )
        except RunNotFound as exc:
            self._error(404, exc.message)
        except BadRequest as exc:
            self._error(400, str(exc))
        except EditsInWorktree as exc:
            # The page offers to go on anyway: the edits are saved at exc.saved.
            self._json(
                409, {"error": exc.message, "status": 409, "files": exc.files, "saved": exc.saved}
            )
        except AgentsagaError as exc:
            # Not waiting, decided already by someone else, a rejection without a reason.
            self._error(409, exc.message)
        else:
            self._json(200, result)

    def _read_json(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if length > self.app.max_body_bytes:
            raise BadRequest("request body too large")
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise BadRequest("the body is not JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the body is a JSON object")
        return data


def _page_headers() -> dict[str, str]:
    # Everything the page runs comes from this server; Chart.js and diff2html set inline
    # styles, hence 'unsafe-inline' for styles only.
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return {"Content_Security_Policy": csp, "X_Frame_Options": "DENY"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that closes a tab mid-response is no error of ours; anything else is
        # printed as the standard library does.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(app: UIApp, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"app": app})
    server_class = _Server6 if ":" in host else _Server
    return server_class((host.strip("[]"), port), handler)


def display_available() -> bool:
    """Whether a browser window can open: a desktop session, not a server or CI."""
    import os

    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
