"""Shared fixtures: every test runs in its own ``tmp_path`` with its own store.

The CLI is driven two ways: in-process through ``agentsaga.cli.main`` (the real entry
point, so ``AgentsagaError`` becomes the exit code a user sees; ``CliRunner`` calls the
typer app directly and would skip that translation), and as the installed command in a
subprocess, for the tests that kill it or signal it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from agentsaga.cli import main
from agentsaga.store import open_store


@dataclass(repr=False)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __repr__(self) -> str:  # shown by pytest when an assertion on a Result fails
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    return 1  # sys.exit("message") prints it and exits 1


def cli(*args: str | Path) -> Result:
    """Run ``agentsaga ARGS`` in this process through ``main()``, as the console script
    does, and return its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["agentsaga", *map(str, args)]
    code = 0
    with (
        mock.patch.object(sys, "argv", argv),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            main()
        except SystemExit as exc:
            code = _exit_code(exc)
    return Result(code, out.getvalue(), err.getvalue())


def agentsaga_argv(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "agentsaga", *map(str, args)]


def run_agentsaga(*args: str | Path, timeout: float = 60) -> Result:
    """Run the installed command in a subprocess (the true end-to-end path)."""
    proc = subprocess.run(
        agentsaga_argv(*args), capture_output=True, text=True, timeout=timeout, check=False
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


class Spawned:
    """``agentsaga ARGS`` started in the background; its output goes to files so a
    chatty process can never block on a full pipe."""

    def __init__(self, workdir: Path, *args: str | Path) -> None:
        n = len(list(workdir.glob("spawn-*.out")))
        self.out_path = workdir / f"spawn-{n}.out"
        self.err_path = workdir / f"spawn-{n}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(agentsaga_argv(*args), stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 60) -> Result:
        code = self.proc.wait(timeout=timeout)
        return Result(code, self.out_path.read_text(), self.err_path.read_text())

    def kill(self) -> None:
        """SIGKILL, then reap: an unreaped zombie still answers ``kill(pid, 0)`` and
        would look like a live lease owner."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


def wait_until(predicate: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    """Poll until ``predicate()``; the timeout is only a safety net against hangs."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def process_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a container's init may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def kill_group_from_pidfile(path: Path) -> None:
    """Stop a step command left behind by a killed agentsaga (steps run in their own
    session, so killing agentsaga does not reach them)."""
    if not path.exists():
        return
    text = path.read_text().strip()
    if not text:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(int(text), signal.SIGKILL)


class Ledger:
    """The side-effect file the steps' own commands append to: the dbos-style proof of
    what ran, independent of agentsaga's records."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return self.path.read_text().splitlines()

    def count(self, line: str) -> int:
        return self.lines().count(line)

    def has(self, line: str) -> bool:
        return line in self.lines()


@dataclass
class Env:
    """What a test works with: its folder, the store, and the helpers above."""

    path: Path
    ledger: Ledger

    def write(self, name: str, text: str) -> Path:
        """Write a pipeline (or any file), dedented, into the test's folder."""
        target = self.path / name
        target.write_text(textwrap.dedent(text).lstrip("\n"))
        return target

    def store(self) -> Any:
        return open_store(str(self.path / "state.db"))

    def run_status(self, run_id: str) -> str:
        store = self.store()
        try:
            return str(store.get_run(run_id).status)
        finally:
            store.close()

    def attempts(self, run_id: str) -> list[Any]:
        store = self.store()
        try:
            return list(store.attempts(run_id))
        finally:
            store.close()

    def newest_run_id(self) -> str:
        store = self.store()
        try:
            runs = store.list_runs()
        finally:
            store.close()
        assert runs, "no run in the store"
        return str(runs[0].id)

    def spawn(self, *args: str | Path) -> Spawned:
        return Spawned(self.path, *args)


@pytest.fixture(scope="session")
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _cache_home: Path) -> None:
    """No test touches the real repository, the user's store or the user's cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(_cache_home))
    monkeypatch.setenv("AGENTSAGA_STORE", str(tmp_path / "state.db"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("AGENTSAGA_HOME", raising=False)
    # Under ``pytest -n``: what a test starts (a step's own pytest, above all) sees the
    # environment of a serial run, not the variables xdist sets for its workers.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield Env(tmp_path, Ledger(tmp_path / "ledger"))


@pytest.fixture(scope="module")
def fork_server() -> Iterator[None]:
    """For the module's tests, ``zygote.launch`` forks each ``agentsaga`` from one
    pre-imported process instead of starting an interpreter (tests/zygote.py): for the
    tests that launch it dozens of times, to kill it at every point."""
    from tests import zygote

    with zygote.serving():
        yield


pytest_plugins = [
    "tests.procguard",
    "tests.pg_server",
    "tests.temporal_server",
    "tests.services",
]
