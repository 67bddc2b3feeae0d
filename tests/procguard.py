"""No test leaves a process behind.

Every process a test starts inherits the environment, so the session marks it: the
variable ``AGENTSAGA_TEST_SESSION`` holds a token of this pytest session, and
``AGENTSAGA_TEST_NODE`` (set for each test) the test's own token. Step commands run in a
session of their own (killing ``agentsaga`` does not reach them), and detached runs and
workers outlive a failed assertion; only the environment still says who started them.

- After each test, the processes carrying its token are waited for (a detached run may
  still be closing its store); whatever still runs after ``GRACE_S`` is killed, process
  group and all, and the test errors in its teardown, naming the commands.
- At the session's end (after the session fixtures stopped PostgreSQL and Temporal),
  whatever still carries the session's token is killed the same way, listed loudly, and
  the session fails.

Under pytest-xdist each worker is a session of its own (its own token, its own checks);
a worker hands what it found to the controller (``workeroutput``), which lists it and fails
the run as one session would.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SESSION_VAR = "AGENTSAGA_TEST_SESSION"
NODE_VAR = "AGENTSAGA_TEST_NODE"
#: How long a test's leftover processes get to exit by themselves (a condition wait:
#: nothing is slept when nothing is left).
GRACE_S = 20.0

_token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
_nodes = itertools.count(1)
_node_names: dict[str, str] = {}
_leaks: list[str] = []


def _own_lineage() -> set[int]:
    """This process and its ancestors: never candidates, whatever their environment."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def _alive(stat: str) -> bool:
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def marked(var: str, value: str) -> dict[int, str]:
    """Live processes whose environment has ``var=value``: pid -> command line. (The
    environment is read first: /proc/PID/environ is much cheaper than /proc/PID/stat.)"""
    needle = b"\0" + f"{var}={value}".encode() + b"\0"
    skip = _own_lineage()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/environ", "rb") as f:
                if needle not in b"\0" + f.read() + b"\0":
                    continue
            if int(entry.name) in skip or not _alive(Path(entry.path, "stat").read_text()):
                continue
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found[int(entry.name)] = cmd.decode(errors="replace")[:200]
    return found


def untracked_env() -> dict[str, str]:
    """The environment for a server a session or module fixture starts: without the
    current test's mark (a fixture may be first requested inside a test), so the server
    is not taken for that test's leftover. The session's mark stays: at the session's
    end it must be gone too."""
    env = dict(os.environ)
    env.pop(NODE_VAR, None)
    return env


def kill(pids: dict[int, str]) -> None:
    """SIGKILL each process's group (steps lead their own), or the process alone when it
    shares pytest's group."""
    ours = os.getpgrp()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != ours and group > 1:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)


def leftovers(var: str, value: str, grace_s: float) -> dict[int, str]:
    """The marked processes still alive after ``grace_s`` (killed before returning)."""
    deadline = time.monotonic() + grace_s
    found = marked(var, value)
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = marked(var, value)
    if found:
        kill(found)
    return found


def _describe(found: dict[int, str]) -> str:
    return "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in sorted(found.items()))


def pytest_configure(config: pytest.Config) -> None:
    os.environ[SESSION_VAR] = _token


@pytest.fixture(autouse=True)
def _no_leftover_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Mark what this test starts; after it, nothing it started may still run."""
    node = f"{_token}-{next(_nodes)}"
    os.environ[NODE_VAR] = node
    try:
        yield
    finally:
        os.environ.pop(NODE_VAR, None)
        found = leftovers(NODE_VAR, node, GRACE_S)
        if found:
            _leaks.append(f"{request.node.nodeid}:\n{_describe(found)}")
            pytest.fail(
                "the test left processes running (killed now):\n" + _describe(found),
                pytrace=False,
            )


_SESSION_LEAK = "(session) processes still running at the end"
_WORKER_KEY = "agentsaga_leaks"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config: Any = session.config
    if config.pluginmanager.hasplugin("dsession"):
        # An xdist controller runs no test: its workers checked theirs (testnodedown).
        if any(leak.startswith(_SESSION_LEAK) for leak in _leaks):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    found = leftovers(SESSION_VAR, _token, 10.0)
    if found:
        _leaks.append(f"{_SESSION_LEAK}:\n{_describe(found)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if hasattr(config, "workerinput"):  # an xdist worker: tell the controller
        config.workeroutput[_WORKER_KEY] = list(_leaks)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown without xdist
def pytest_testnodedown(node: Any, error: Any) -> None:
    """(xdist controller) A worker finished: take over what its checks found."""
    _leaks.extend(getattr(node, "workeroutput", {}).get(_WORKER_KEY, []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _leaks:
        terminalreporter.section("processes left running by tests (killed)", red=True)
        for leak in _leaks:
            terminalreporter.write_line(leak)
