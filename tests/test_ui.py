"""The web view (``agentsaga ui``, ``show --html``): its API against the CLI, its guard
against the network, and the page itself in a real headless browser.

One saga is made for the module by the real CLI in subprocesses: the offline demo (a test
that fails, a rewind to the write step with its compensation, a deploy), then a rollback
(the compensations newest first). The server is the installed command, started on a free
loopback port; the browser is Debian's chromium (tests/browser.py).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from agentsaga.ui.security import Access
from agentsaga.ui.server import display_available
from tests.browser import Browser, browser  # noqa: F401 (the fixture)
from tests.conftest import cli, wait_until
from tests.gitstate import make_repo
from tests.llm_project import MODELS, make_project
from tests.llm_server import FakeLLMServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def agentsaga(store: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentsaga", "--store", store, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def cli_json(store: str, *args: str) -> Any:
    done = agentsaga(store, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Saga:
    store: str
    run_id: str
    repo: Path


@pytest.fixture(scope="module")
def saga(tmp_path_factory: pytest.TempPathFactory) -> Saga:
    base = tmp_path_factory.mktemp("saga")
    store = str(base / "state.db")
    demo = agentsaga(store, "demo", "--dir", str(base / "demo"), "--json", cwd=base)
    assert demo.returncode == 0, demo.stderr
    data = json.loads(demo.stdout)
    repo = Path(data["repo"])
    rollback = agentsaga(store, "rollback", data["run_id"], cwd=repo)
    assert rollback.returncode == 0, rollback.stderr
    return Saga(store, data["run_id"], repo)


class UIServer:
    """``agentsaga ui`` in a subprocess, on a free port; its output goes to a file."""

    def __init__(self, store: str, workdir: Path, *args: str) -> None:
        self.out = workdir / f"ui-{time.monotonic_ns()}.out"
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agentsaga", "--store", store, "ui", "--port", "0"]
                + ["--no-browser", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        deadline = time.monotonic() + 60
        while not (match := re.search(r"(http://\S+)", self.out.read_text())):
            assert self.proc.poll() is None, self.out.read_text()
            assert time.monotonic() < deadline, "the server printed no URL"
            time.sleep(0.05)
        self.url = match.group(1)
        parts = urlsplit(self.url)
        self.port = parts.port or 80
        self.token = re.search(r"token: (\S+)", self.out.read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request to 127.0.0.1:port, redirects not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    payload = json.dumps(body).encode() if body is not None else None
    send = {"Content-Type": "application/json"} if payload is not None else {}
    send.update(headers or {})
    try:
        conn.request(method, path, body=payload, headers=send)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    content_type = response.getheader("Content-Type") or ""
    data: Any = json.loads(raw) if raw and "json" in content_type else raw.decode()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


@pytest.fixture(scope="module")
def server(saga: Saga, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    ui = UIServer(saga.store, tmp_path_factory.mktemp("ui"))
    yield ui
    ui.stop()


# --- the API serves the CLI's documents ---------------------------------------------------


def test_api_returns_exactly_the_cli_json_documents(saga: Saga, server: UIServer) -> None:
    for path, args in [
        ("/api/runs", ["runs"]),
        (f"/api/runs/{saga.run_id}", ["show", saga.run_id]),
        (f"/api/runs/{saga.run_id}/report", ["report", saga.run_id]),
    ]:
        status, headers, data = request(server.port, "GET", path)
        assert status == 200, data
        assert headers["content-type"].startswith("application/json")
        assert data == cli_json(saga.store, *args), path


def test_api_takes_a_run_id_prefix_and_says_what_is_unknown(saga: Saga, server: UIServer) -> None:
    status, _, data = request(server.port, "GET", f"/api/runs/{saga.run_id[:8]}")
    assert status == 200
    assert data == cli_json(saga.store, "show", saga.run_id)
    status, _, data = request(server.port, "GET", "/api/runs/zzzzzzzz")
    assert status == 404 and "zzzzzzzz" in data["error"]
    status, _, data = request(server.port, "GET", f"/api/runs/{saga.run_id}/steps/nosuch")
    assert status == 404 and "nosuch" in data["error"]
    status, _, data = request(server.port, "GET", "/api/runs?status=rolled_back&limit=5")
    assert status == 200 and data == cli_json(saga.store, "runs", "--status", "rolled_back")
    status, _, data = request(server.port, "GET", "/api/runs?status=nope")
    assert status == 400 and "nope" in data["error"]


def test_step_detail_has_prompts_replies_output_and_diffs(saga: Saga, server: UIServer) -> None:
    status, _, write = request(server.port, "GET", f"/api/runs/{saga.run_id}/steps/write")
    assert status == 200
    assert [a["attempt"] for a in write["attempts"]] == [1, 2]
    for attempt in write["attempts"]:
        (call,) = attempt["model_calls"]
        assert "SEARCH" in call["reply"] and call["usage"]["total"] > 0
        assert call["request"]["messages"], "the prompt is shown"
        assert attempt["diff"].startswith("diff --git a/src/calc.py")
    # The rewound write saw the test failure in its prompt.
    second_prompt = json.dumps(write["attempts"][1]["model_calls"][0]["request"])
    assert "tests failed" in second_prompt
    status, _, test = request(server.port, "GET", f"/api/runs/{saga.run_id}/steps/test")
    failed = test["attempts"][0]
    assert failed["error"]["message"].startswith("tests failed")
    assert "FAIL" in failed["logs"]["stderr"]


def test_report_splits_tokens_by_step_and_adds_up(saga: Saga) -> None:
    report = cli_json(saga.store, "report", saga.run_id)
    steps = report["steps"]
    assert [s["step_id"] for s in steps] == ["plan", "read", "write", "test", "deploy"]
    assert sum(s["spent_tokens"] for s in steps) == report["spent_tokens"]
    assert sum(s["reused_checkpoint_tokens"] for s in steps) == report["reused_checkpoint_tokens"]
    assert (
        sum(s["restart_counterfactual_tokens"] for s in steps)
        == report["restart_counterfactual_tokens"]
    )
    assert sum(s["saved_tokens"] for s in steps) == report["saved_tokens"]
    # The rewind to write kept plan's checkpoint: a restart would have paid it again.
    plan = steps[0]
    assert plan["saved_tokens"] == plan["spent_tokens"] > 0


def test_run_detail_lists_compensations_in_the_order_they_ran(saga: Saga) -> None:
    detail = cli_json(saga.store, "show", saga.run_id)
    undone = [
        (c["step_id"], c["reason"]) for c in detail["compensations"] if c["status"] != "skipped"
    ]
    assert undone == [("write", "rewind"), ("deploy", "rollback"), ("write", "rollback")]


# --- who may read, who may decide ---------------------------------------------------------


def test_loopback_server_refuses_a_foreign_host_name(server: UIServer) -> None:
    # A page whose DNS name was rebound to 127.0.0.1 sends its own name as Host.
    status, _, data = request(server.port, "GET", "/api/runs", {"Host": "evil.example"})
    assert status == 403
    status, _, _ = request(server.port, "GET", "/", {"Host": f"localhost:{server.port}"})
    assert status == 200


def test_writes_need_the_token_a_json_body_and_our_origin(saga: Saga, server: UIServer) -> None:
    path = f"/api/runs/{saga.run_id}/approve"
    status, _, data = request(server.port, "POST", path, body={"comment": "ok"})
    assert status == 403 and "token" in data["error"]
    status, _, page = request(server.port, "GET", "/")
    token = re.search(r'name="agentsaga-token" content="([^"]+)"', page)
    assert token is not None
    good = {"X-Agentsaga-Token": token.group(1)}
    status, _, data = request(
        server.port, "POST", path, {**good, "Origin": "http://evil.example"}, {"comment": "x"}
    )
    assert status == 403 and "Origin" in data["error"]
    status, _, data = request(
        server.port, "POST", path, {**good, "Content-Type": "text/plain"}, {"comment": "x"}
    )
    assert status == 403 and "application/json" in data["error"]
    # With everything right, the decision reaches the run: this one is not waiting.
    origin = {"Origin": f"http://127.0.0.1:{server.port}"}
    status, _, data = request(server.port, "POST", path, {**good, **origin}, {"comment": "x"})
    assert status == 409, data
    assert cli_json(saga.store, "show", saga.run_id)["status"] == "rolled_back"


@pytest.mark.parametrize(
    "args", [["--host", "0.0.0.0"], ["--host", "127.0.0.1", "--require-token"]]
)
def test_any_other_host_needs_the_token_printed_at_start(
    saga: Saga, tmp_path: Path, args: list[str]
) -> None:
    ui = UIServer(saga.store, tmp_path, *args)
    try:
        assert ui.token is not None, ui.out.read_text()
        token = ui.token.group(1)
        assert f"?token={token}" in ui.url
        for path in ("/", "/api/runs", f"/api/runs/{saga.run_id}", "/static/app.js"):
            status, _, _ = request(ui.port, "GET", path)
            assert status == 401, path
        status, _, _ = request(ui.port, "GET", "/api/runs", {"Authorization": "Bearer nope"})
        assert status == 401
        status, _, data = request(ui.port, "GET", "/api/runs", {"Authorization": f"Bearer {token}"})
        assert status == 200 and data["runs"][0]["run_id"] == saga.run_id
        # The printed URL trades the token for a cookie and drops it from the address.
        status, headers, _ = request(ui.port, "GET", f"/?token={token}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in headers["set-cookie"]
        status, _, _ = request(ui.port, "GET", "/api/runs", {"Cookie": cookie})
        assert status == 200
        # A cookie alone (what a foreign page can make a browser send) decides nothing.
        status, _, data = request(
            ui.port, "POST", f"/api/runs/{saga.run_id}/reject", {"Cookie": cookie}, {}
        )
        assert status == 403
    finally:
        ui.stop()


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8470", True),
        ("localhost:8470", True),
        ("LOCALHOST", True),
        ("[::1]:8470", True),
        ("127.0.0.2", True),
        ("evil.example", False),
        ("127.0.0.1.evil.example:8470", False),
        ("[::ffff:8.8.8.8]:80", False),
        (None, False),
    ],
)
def test_loopback_host_names(host: str | None, allowed: bool) -> None:
    headers = {"Host": host} if host is not None else {}
    assert Access(token="t", loopback=True).can_read(headers) is allowed
    # Bound elsewhere, the name is not the guard: the token is.
    assert Access(token="t", loopback=False).can_read(headers) is False
    assert Access(token="t", loopback=False).can_read({**headers, "Authorization": "Bearer t"})


def test_a_browser_opens_only_where_there_is_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert display_available() is False
    monkeypatch.setenv("DISPLAY", ":0")
    assert display_available() is True
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert display_available() is True


def test_ipv6_loopback(saga: Saga, tmp_path: Path) -> None:
    ui = UIServer(saga.store, tmp_path, "--host", "::1")
    try:
        assert ui.url.startswith("http://[::1]:") and ui.token is None
        conn = http.client.HTTPConnection("::1", ui.port, timeout=60)
        conn.request("GET", "/api/runs", headers={"Host": f"[::1]:{ui.port}"})
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == cli_json(saga.store, "runs")
        conn.close()
    finally:
        ui.stop()


def test_bad_port_is_bad_input(saga: Saga) -> None:
    done = agentsaga(saga.store, "ui", "--port", "70000", "--no-browser")
    assert done.returncode == 2
    assert "--port 70000" in done.stderr and "Traceback" not in done.stderr


# --- show --html ----------------------------------------------------------------------------


def test_show_html_is_one_self_contained_file(saga: Saga) -> None:
    done = agentsaga(saga.store, "show", saga.run_id, "--html")
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith("<!doctype html>")
    assert "/static/" not in page and "src=" not in page and 'href="http' not in page
    embedded = re.search(
        r'<script type="application/json" id="agentsaga-data">(.*?)</script>', page
    )
    assert embedded is not None
    documents = json.loads(embedded.group(1))
    assert documents["run"] == cli_json(saga.store, "show", saga.run_id)
    assert documents["report"] == cli_json(saga.store, "report", saga.run_id)
    assert set(documents["steps"]) == {"plan", "read", "write", "test", "deploy"}


# --- in a real browser ----------------------------------------------------------------------


def screenshot_dir(tmp: Path) -> Path:
    """docs/screenshots when asked to refresh the committed examples, else a temp folder."""
    if os.environ.get("AGENTSAGA_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs" / "screenshots"
    return tmp


def assert_no_js_errors(browser: Browser) -> None:  # noqa: F811
    assert browser.console_errors() == []


def test_runs_page_lists_the_run(saga: Saga, server: UIServer, browser: Browser) -> None:  # noqa: F811
    browser.get(server.url)
    browser.wait_for(f"return document.querySelector('tr.run-row[data-run=\"{saga.run_id}\"]')")
    status = browser.js(
        f"return document.querySelector('tr[data-run=\"{saga.run_id}\"]').dataset.status"
    )
    assert status == "rolled_back"
    # Filter by status: a status no run has hides it.
    browser.js(
        "const s = document.getElementById('filter-status');"
        "s.value = 'rolled_back'; s.dispatchEvent(new Event('change'));"
    )
    assert browser.js("return document.querySelectorAll('tr.run-row').length") == 1
    assert_no_js_errors(browser)


def test_timeline_has_a_bar_per_attempt_rewinds_and_compensations(
    saga: Saga,
    server: UIServer,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    shown = cli_json(saga.store, "show", saga.run_id)
    attempts = sorted(
        ({**a, "step": s["step_id"]} for s in shown["steps"] for a in s["attempts"]),
        key=lambda a: a["seq"],
    )
    browser.get(f"{server.url}#/runs/{saga.run_id}")
    browser.wait_for("return document.getElementById('timeline')?.dataset.attempts")
    # Bars drawn by Chart.js, counted on the chart itself (one element per bar).
    drawn = browser.js(
        "const c = Chart.getChart('timeline');"
        "return c.data.datasets.map((d, i) => [d.label, c.getDatasetMeta(i).data.length]);"
    )
    bars = {label: n for label, n in drawn}
    assert sum(n for label, n in bars.items() if not label.startswith("compensation")) == len(
        attempts
    )
    assert bars["compensation (undo)"] == 3
    canvas = browser.js("return {...document.getElementById('timeline').dataset}")
    assert json.loads(canvas["arrows"]) == ["rewind"]
    assert json.loads(canvas["undo"]) == ["write", "deploy", "write"]
    assert browser.js("return Chart.getChart('timeline').$sagaDrawn") == {"arrows": 1, "undo": 3}
    rows = browser.js(
        "return [...document.querySelectorAll('#attempts tr.attempt-row')]"
        ".map(r => r.dataset.step + '#' + r.dataset.attempt)"
    )
    assert rows == [f"{a['step']}#{a['attempt']}" for a in attempts]
    assert browser.js("return Chart.getChart('tokens').data.labels") == [
        "plan",
        "read",
        "write",
        "test",
        "deploy",
    ]
    browser.screenshot(screenshot_dir(tmp_path) / "run.png")
    assert_no_js_errors(browser)


def test_an_interrupted_attempt_is_drawn_and_labelled_interrupted(
    tmp_path: Path,
    browser: Browser,  # noqa: F811
) -> None:
    """A real run stopped by Ctrl-C during a command: its attempt, stored ``interrupted``,
    has its own bar colour and badge (not a failure's)."""
    store = str(tmp_path / "state.db")
    (tmp_path / "p.yml").write_text(
        "name: i\nworkspace: {isolation: none}\nsteps:\n"
        "  - {id: a, kind: shell, run: 'true'}\n"
        "  - {id: b, kind: shell, run: 'echo $$ > b.pid; for i in $(seq 1200); do sleep 0.05;"
        " done'}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentsaga", "--store", store, "run", "p.yml"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: (tmp_path / "b.pid").exists(), what="step b to start")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    (run,) = cli_json(store, "runs")["runs"]
    ui = UIServer(store, tmp_path)
    try:
        browser.get(f"{ui.url}#/runs/{run['run_id']}")
        browser.wait_for("return document.getElementById('timeline')?.dataset.attempts")
        drawn = browser.js(
            "const c = Chart.getChart('timeline');"
            "return c.data.datasets.map((d, i) => [d.label, c.getDatasetMeta(i).data.length]);"
        )
        assert dict(drawn) == {"completed": 1, "interrupted (Ctrl-C)": 1}
        badges = browser.js(
            "return [...document.querySelectorAll('#attempts tr.attempt-row .badge')]"
            ".map(b => b.textContent)"
        )
        assert badges == ["completed", "interrupted"]
        assert_no_js_errors(browser)
    finally:
        ui.stop()


def test_step_detail_shows_the_prompt_reply_and_a_highlighted_diff(
    saga: Saga,
    server: UIServer,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    browser.get(f"{server.url}#/runs/{saga.run_id}/steps/write")
    browser.wait_for("return document.querySelector('#step-detail .d2h-file-wrapper')")
    cards = browser.js("return document.querySelectorAll('#step-detail article.attempt').length")
    assert cards == 2
    text = browser.js("return document.getElementById('step-detail').innerText")
    assert "SEARCH" in text and "tests failed" in text
    # highlight.js coloured the Python in the diff.
    assert browser.js("return document.querySelectorAll('#step-detail .diff .hljs-keyword').length")
    browser.js("document.querySelector('#step-detail .diff').scrollIntoView()")
    browser.screenshot(screenshot_dir(tmp_path) / "step.png")
    assert_no_js_errors(browser)


def test_the_html_file_opens_from_disk_with_no_server(
    saga: Saga,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    page = tmp_path / "run.html"
    page.write_text(agentsaga(saga.store, "show", saga.run_id, "--html").stdout)
    browser.get(page.as_uri())
    browser.wait_for("return document.getElementById('timeline')?.dataset.attempts")
    assert browser.js("return document.querySelector('.run-page').dataset.run") == saga.run_id
    browser.get(page.as_uri() + "#/runs/" + saga.run_id + "/steps/write")
    browser.wait_for("return document.querySelector('#step-detail .d2h-file-wrapper')")
    assert_no_js_errors(browser)


LIVE_PIPELINE = """\
name: live
workspace: {isolation: none}
steps:
  - id: wait
    kind: shell
    run: "while [ ! -f go ]; do sleep 0.05; done"
  - id: flaky
    kind: shell
    run: "test -f tried || { touch tried; echo first try fails >&2; exit 1; }"
    retry: {attempts: 2, backoff: 0}
"""


def test_pages_follow_an_active_run_live(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = str(tmp_path / "live.db")
    (tmp_path / "p.yml").write_text(LIVE_PIPELINE)
    with (tmp_path / "run.out").open("wb") as out:
        run = subprocess.Popen(
            [sys.executable, "-m", "agentsaga", "--store", store, "run", "p.yml", "--json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    ui = UIServer(store, tmp_path)
    try:
        browser.get(ui.url)
        row = "document.querySelector('tr.run-row')"
        assert browser.wait_for(f"return {row}?.dataset.status == 'running' && {row}.dataset.run")
        run_id = browser.js(f"return {row}.dataset.run")
        browser.get(f"{ui.url}#/runs/{run_id}")
        browser.wait_for("return document.querySelector('.run-page')?.dataset.status == 'running'")
        (tmp_path / "go").touch()
        assert run.wait(timeout=60) == 0, (tmp_path / "run.out").read_text()
        # No reload: the page polls the API while the run is active.
        browser.wait_for(
            "return document.querySelector('.run-page')?.dataset.status == 'succeeded'"
        )
        timeline = browser.js("return {...document.getElementById('timeline').dataset}")
        assert timeline["attempts"] == "3"
        assert json.loads(timeline["arrows"]) == ["retry"]
        assert browser.js("return Chart.getChart('timeline').$sagaDrawn.arrows") == 1
        assert_no_js_errors(browser)
    finally:
        browser.get("about:blank")  # a page left open would poll a stopped server
        if run.poll() is None:
            run.kill()
            run.wait(timeout=30)
        ui.stop()


@pytest.mark.postgres
def test_api_over_postgresql_serves_the_cli_documents(pg_fresh_url: Any, tmp_path: Path) -> None:
    store = pg_fresh_url()
    (tmp_path / "p.yml").write_text(LIVE_PIPELINE)
    (tmp_path / "go").touch()
    done = agentsaga(store, "run", "p.yml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    ui = UIServer(store, tmp_path)
    try:
        for path, args in [
            ("/api/runs", ["runs"]),
            (f"/api/runs/{run_id}", ["show", run_id]),
            (f"/api/runs/{run_id}/report", ["report", run_id]),
        ]:
            status, _, data = request(ui.port, "GET", path)
            assert status == 200 and data == cli_json(store, *args), path
        status, _, step = request(ui.port, "GET", f"/api/runs/{run_id}/steps/wait")
        assert status == 200 and step["attempts"][0]["status"] == "completed"
    finally:
        ui.stop()


def test_agent_step_shows_its_tool_transcript(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = str(tmp_path / "agent.db")
    demo = agentsaga(store, "demo", "--agent", "--dir", str(tmp_path / "d"), "--json", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    run_id = json.loads(demo.stdout)["run_id"]
    ui = UIServer(store, tmp_path)
    try:
        status, _, step = request(ui.port, "GET", f"/api/runs/{run_id}/steps/fix")
        assert status == 200
        turns = step["attempts"][-1]["transcript"]
        assert len(turns) >= 3 and turns[-1]["calls"][0]["tool"] == "finish"
        browser.get(f"{ui.url}#/runs/{run_id}/steps/fix")
        browser.wait_for("return document.querySelector('#step-detail table.transcript')")
        rows = browser.js("return document.querySelectorAll('table.transcript tr.turn').length")
        assert rows == len(turns)
        text = browser.js("return document.querySelector('table.transcript').innerText")
        assert "read_file(path=src/calc.py)" in text and "finish(" in text
        # The model's tool calls are shown as its replies.
        replies = browser.js("return document.getElementById('step-detail').innerText")
        assert "[tool call] run_command" in replies
        assert_no_js_errors(browser)
    finally:
        browser.get("about:blank")  # a page left open would poll a stopped server
        ui.stop()


def test_without_port_the_next_free_one_after_8470(saga: Saga, tmp_path: Path) -> None:
    import socket

    held = []
    try:
        for port in (8470, 8471):  # whatever holds them (another ui, or these sockets)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
                held.append(s)
            except OSError:
                s.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentsaga", "--store", saga.store, "ui", "--no-browser"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert match is not None, line
            assert 8472 <= int(match.group(1)) < 8490, line
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    finally:
        for s in held:
            s.close()


# --- approvals ------------------------------------------------------------------------------

CALC = {"calc.py": "def add(a, b):\n    return a - b\n"}
EDIT = "calc.py\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"
GATED = f"""\
name: gated-write
vars: {{out: deployed.py}}
defaults: {{provider: anthropic, model: {MODELS["anthropic"]}}}
steps:
  - id: write
    kind: write
    prompt: |
      Fix add() in calc.py.
      ${{{{ rewind.from }}}} said: ${{{{ rewind.error }}}}
  - id: review
    kind: approve
    message: Is the fix right?
    on_reject: {{rewind_to: write, max_rejects: 2}}
  - id: deploy
    kind: shell
    run: ["cp", "calc.py", "${{{{ vars.out }}}}"]
"""


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as s:
        yield s


def test_approval_panel_rejects_with_a_comment_then_approves(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    llm: FakeLLMServer,
    browser: Browser,  # noqa: F811
) -> None:
    project = make_project(tmp_path, monkeypatch, llm, files=CALC)
    llm.reply(EDIT.format(old="    return a - b", new="    return a + b  # fixed"))
    llm.reply(EDIT.format(old="    return a - b", new="    return b + a"))
    project.write("p.yml", GATED)
    waiting = cli("run", "p.yml", "--var", f"out={tmp_path / 'deployed.py'}", "--json")
    assert waiting.exit_code == 5, waiting
    run_id = waiting.json()["run_id"]
    # The server (and the run it continues) inherits the loopback LLM server's address.
    ui = UIServer(str(project.store_path), tmp_path)
    page = ".run-page"
    try:
        # The runs page says what awaits a person, and leads to it.
        browser.get(ui.url)
        browser.wait_for("return document.querySelector('#waiting a')")
        assert run_id in browser.js("return document.getElementById('waiting').innerText")
        browser.js("document.querySelector('#waiting a').click()")
        browser.wait_for("return document.querySelector('#approval .gate pre')")
        text = browser.js("return document.getElementById('approval').innerText")
        assert "Is the fix right?" in text and "review" in text
        assert browser.js("return document.querySelector('#approval .d2h-file-wrapper')")
        browser.screenshot(screenshot_dir(tmp_path) / "approval.png")
        # The same page written to a file says how to decide, and has no buttons.
        html = tmp_path / "waiting.html"
        html.write_text(cli("show", run_id, "--html").stdout)
        browser.get(html.as_uri())
        browser.wait_for("return document.querySelector('#approval .gate pre')")
        text = browser.js("return document.getElementById('approval').innerText")
        assert f"agentsaga approve {run_id}" in text and "Is the fix right?" in text
        assert browser.js("return document.getElementById('approve')") is None
        browser.get(f"{ui.url}#/runs/{run_id}")
        browser.wait_for("return document.getElementById('decision-comment')")
        comment = "no trailing comments, write b + a"
        browser.js(f"document.getElementById('decision-comment').value = {json.dumps(comment)}")
        browser.js("document.getElementById('reject').click()")
        assert (
            browser.wait_for("return document.getElementById('decision-result')?.dataset.decision")
            == "rejected"
        )
        # The run rewinds to write in a process of its own and waits at the gate again.
        wait_until(lambda: llm.count == 2, what="the rewound write's model call")
        wait_until(
            lambda: (
                cli_json(str(project.store_path), "show", run_id)["status"] == "waiting"
                and len(cli_json(str(project.store_path), "show", run_id)["decisions"]) == 1
            ),
            what="the run waiting at its gate again",
        )
        assert f"review said: {comment}" in json.dumps(llm.requests[1].body)
        assert comment not in json.dumps(llm.requests[0].body)
        browser.get(f"{ui.url}#/runs/{run_id}")
        browser.wait_for("return document.querySelector('#approval .decisions li')")
        browser.js("document.getElementById('approve').click()")
        browser.wait_for(f"return document.querySelector('{page}')?.dataset.status == 'succeeded'")
        assert (tmp_path / "deployed.py").read_text() == "def add(a, b):\n    return b + a\n"
        assert llm.count == 2  # approving asked the model nothing
        decisions = cli_json(str(project.store_path), "show", run_id)["decisions"]
        assert [d["decision"] for d in decisions] == ["rejected", "approved"]
        assert decisions[1]["decided_by"].endswith("(web view)")
        assert_no_js_errors(browser)
    finally:
        browser.get("about:blank")  # a page left open would poll a stopped server
        ui.stop()


def test_a_decision_on_a_run_not_waiting_is_refused_and_names_its_status(
    saga: Saga, server: UIServer
) -> None:
    status, _, page = request(server.port, "GET", "/")
    token = re.search(r'name="agentsaga-token" content="([^"]+)"', page)
    assert token is not None
    status, _, data = request(
        server.port,
        "POST",
        f"/api/runs/{saga.run_id}/approve",
        {"X-Agentsaga-Token": token.group(1)},
        {"comment": "ok"},
    )
    assert status == 409 and "rolled_back" in data["error"]
    status, _, data = request(server.port, "GET", f"/api/runs/{saga.run_id}/gate")
    assert status == 404 and "not waiting" in data["error"]


@pytest.mark.temporal
def test_a_decision_reaches_a_run_waiting_on_temporal(
    tmp_path: Path,
    temporal_address: str,
    temporal_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.test_temporal import Worker, wait_for_status

    repo = make_repo(tmp_path, {"README.md": "hello\n"})
    ledger = tmp_path / "ledger"
    (tmp_path / "p.yml").write_text(
        "name: gated\nworkspace: {isolation: none}\nsteps:\n"
        f"  - id: write\n    kind: shell\n"
        f"    run: 'echo \"write:${{{{ rewind.error }}}}\" >> {ledger}'\n"
        "  - id: review\n    kind: approve\n    message: Ship it?\n"
        "    on_reject: {rewind_to: write, max_rejects: 2}\n"
        f"  - id: deploy\n    kind: shell\n    run: 'echo deploy >> {ledger}'\n"
    )
    monkeypatch.setenv("AGENTSAGA_TEMPORAL", temporal_address)
    monkeypatch.setenv("AGENTSAGA_TEMPORAL_QUEUE", temporal_queue)
    worker = Worker(repo, temporal_address, temporal_queue)
    store = os.environ["AGENTSAGA_STORE"]
    ui = None
    try:
        started = agentsaga(store, "run", str(tmp_path / "p.yml"), "--json", cwd=repo)
        assert started.returncode == 5, started.stderr
        run_id = json.loads(started.stdout)["run_id"]
        ui = UIServer(store, repo)
        status, _, page = request(ui.port, "GET", "/")
        token = re.search(r'name="agentsaga-token" content="([^"]+)"', page)
        assert token is not None
        decide = {"X-Agentsaga-Token": token.group(1)}
        # The rejection goes to the waiting workflow (its decide update): it rewinds.
        status, _, data = request(
            ui.port, "POST", f"/api/runs/{run_id}/reject", decide, {"comment": "add tests"}
        )
        assert status == 200 and "Temporal" in data["message"], data
        wait_until(lambda: ledger.read_text().splitlines()[-1:] == ["write:add tests"])
        wait_for_status(tmp_path, run_id, "waiting")
        status, _, data = request(ui.port, "POST", f"/api/runs/{run_id}/approve", decide, {})
        assert status == 200, data
        wait_for_status(tmp_path, run_id, "succeeded")
        assert ledger.read_text().splitlines() == ["write:", "write:add tests", "deploy"]
        decisions = cli_json(store, "show", run_id)["decisions"]
        assert [d["decision"] for d in decisions] == ["rejected", "approved"]
    finally:
        if ui is not None:
            ui.stop()
        worker.stop()
