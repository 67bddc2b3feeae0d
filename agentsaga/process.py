"""Run one command as its own process group, its output streamed to log files.

Shared by the command step kinds and the ``run:`` compensation. The whole output goes to
the log files; only tails come back, so a step that prints 10 MB does not grow the store.
A timeout or a cancel (Ctrl-C) stops the whole process group: SIGTERM, then SIGKILL.

A step's commands carry its attempt's token in their environment (:data:`TOKEN_VAR`),
recorded in the attempt before anything runs: a process that takes over a run whose owner
was killed finds what the dead owner left running by that token
(:func:`stop_attempt_processes`), with no second program before each command.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentsaga import faults
from agentsaga.errors import Interrupted, StepFailed, UserInputError
from agentsaga.redact import MaskingWriter, secret_values

TAIL_CHARS = 4000
#: stdout larger than this is not parsed as JSON (a deploy's JSON answer is small).
MAX_JSON_BYTES = 1_000_000
_GRACE_S = 2.0


#: Commands running now: Ctrl-C stops them through their cancel event; with none running,
#: the interrupt must break out of whatever the step is doing (an HTTP call) instead.
_RUNNING: set[object] = set()
#: Their process groups, so that a second Ctrl-C, which leaves at once, leaves none behind.
_GROUPS: dict[object, int] = {}


def command_running() -> bool:
    return bool(_RUNNING)


def kill_running() -> None:
    """SIGKILL every running command's process group (no grace: the process is leaving)."""
    for pgid in list(_GROUPS.values()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


@dataclass
class CommandResult:
    exit_code: int | None
    stdout_tail: str
    stderr_tail: str
    timed_out: bool
    duration_ms: float
    stdout_path: Path
    stderr_path: Path

    def stdout_json(self) -> Any:
        """stdout parsed as JSON, or None when it is not (only) a JSON document."""
        try:
            if self.stdout_path.stat().st_size > MAX_JSON_BYTES:
                return None
            text = self.stdout_path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        if not text or text[0] not in "{[":
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None


def argv_for(command: str | list[str]) -> list[str]:
    """A string runs under ``bash -c`` (values in it were shell-quoted when rendered); a
    list is argv, executed without a shell."""
    if isinstance(command, str):
        return ["bash", "-c", command]
    if not command:
        raise UserInputError("an empty command list; give at least the program to run")
    return [str(part) for part in command]


def run_command(
    command: str | list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_stem: Path,
    timeout_s: float | None = None,
    cancel: threading.Event | None = None,
    redact: bool = True,
) -> CommandResult:
    """Run ``command``. A step's ``env`` holds its attempt's token (:func:`with_token`),
    recorded before this is called: a process killed at any instant leaves either no
    command or one that a takeover finds by that token."""
    argv = argv_for(command)
    _private_dirs(log_stem.parent)
    out_path = log_stem.with_name(log_stem.name + ".out")
    err_path = log_stem.with_name(log_stem.name + ".err")
    started = time.monotonic()
    # Counted as running from before the spawn: a Ctrl-C arriving mid-spawn must reach the
    # command through the cancel event, not abandon it.
    token = object()
    _RUNNING.add(token)
    # Secrets are masked as the output streams to the log files, not after the command
    # ends: a process killed mid-command must not leave a secret in a log.
    secrets = secret_values(env) if redact else []
    # Through pipes where the waiting thread can carry them (a pidfd) or they must be
    # masked: the log files are then created at their first byte, and a command that
    # prints nothing costs no file (two created per step were a tenth of a no-op step's
    # CPU on ext4). Otherwise the command writes to the files itself.
    piped = bool(secrets) or hasattr(os, "pidfd_open")
    try:
        if piped:
            out: Any = _LazyFile(out_path)
            err: Any = _LazyFile(err_path)
        else:
            out, err = _private_open(out_path), _private_open(err_path)
        pump = _Pump(out, err, secrets) if piped else None
        try:
            outputs = pump.child_ends() if pump else (out, err)
            spawned = _spawn(argv, cwd, env, outputs)
            if pump is not None:
                pump.spawned()
            if isinstance(spawned, str):
                err.write(spawned.encode() + b"\n")
                code = 127 if spawned.startswith("command not found") else 126
                elapsed = (time.monotonic() - started) * 1000
                return CommandResult(code, "", spawned, False, elapsed, out_path, err_path)
            _GROUPS[token] = spawned.pid
            faults.point("command.started")
            timed_out = _wait(spawned, timeout_s, cancel, pump)
        finally:
            if pump is not None:
                pump.finish()
            out.close()
            err.close()
    finally:
        _RUNNING.discard(token)
        _GROUPS.pop(token, None)
    if cancel is not None and cancel.is_set():
        raise Interrupted()
    return CommandResult(
        exit_code=None if timed_out else spawned.returncode,
        stdout_tail=_tail(out, out_path),
        stderr_tail=_tail(err, err_path),
        timed_out=timed_out,
        duration_ms=(time.monotonic() - started) * 1000,
        stdout_path=out_path,
        stderr_path=err_path,
    )


def _spawn(
    argv: list[str], cwd: Path, env: dict[str, str], outputs: tuple[Any, Any]
) -> subprocess.Popen[bytes] | str:
    """Start the command, or say why it could not start (its stderr line)."""
    program = _program_path(argv[0], env, cwd)
    if program.startswith(_NOT_STARTED):
        return program
    session = _own_session()
    try:
        return subprocess.Popen(
            argv,
            # The program by its path: Popen's own search of a long PATH (one failed
            # execve per entry, in the child) would cost more than the rest of the spawn.
            executable=program,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=outputs[0],
            stderr=outputs[1],
            # Its own process group: a timeout or Ctrl-C stops the command and its
            # children, and the terminal's Ctrl-C reaches us, not the command directly.
            # A session of its own only at a terminal (_own_session).
            start_new_session=session,
            process_group=None if session else 0,
        )
    except FileNotFoundError:
        return f"command not found: {argv[0]}"
    except PermissionError:
        return f"permission denied: {argv[0]}"
    except ValueError as exc:
        # A NUL byte in an argument or an environment value (model output, say): no
        # command can receive it.
        raise StepFailed(
            f"cannot run the command: {exc} (a value passed to it contains a NUL byte)",
            kind="error",
            retryable=False,
        ) from None
    except OSError as exc:
        if exc.errno != errno.E2BIG:
            raise
        # A model's reply flowing into a command (one value may hold at most 128 KiB on
        # Linux): the step fails with the reason, not the process with a traceback.
        raise StepFailed(
            "cannot run the command: its arguments and environment are too large for the "
            "system (E2BIG; one value may hold at most 128 KiB); pass a large value "
            "through a file instead",
            kind="error",
            retryable=False,
        ) from None


@functools.cache
def _own_session() -> bool:
    """Whether commands get a session of their own: only when agentsaga has a controlling
    terminal. Then a command has none, so a prompt on ``/dev/tty`` (git's, ssh's) fails
    at once; in a process group of the terminal's session it would be stopped (SIGTTIN)
    for reading from the terminal in the background, and the step would hang. Without a
    terminal a process group gives all the same, and a session would cost a scheduler
    autogroup per command (Linux's default), which starts the command with almost no
    CPU share while other processes keep the cores busy: a no-op step took 7.8 ms
    instead of 5.5 with 4 busy processes on 2 cores (docs/design.md, "Performance")."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


#: How a command that could not start is reported (its stderr line starts so).
_NOT_STARTED = ("command not found: ", "permission denied: ")


def _program_path(program: str, env: dict[str, str], cwd: Path) -> str:
    """The file ``program`` names, found as execvp would find it (relative names from
    ``cwd``), or the line saying why it cannot run."""
    if "\0" in program:
        return program  # Popen reports it
    if "/" in program:
        target = cwd / program
        if not target.exists():
            return f"command not found: {program}"
        return program if os.access(target, os.X_OK) else f"permission denied: {program}"
    path = env.get("PATH", os.defpath)
    known = _FOUND.get((program, path))
    if known is not None and os.access(known, os.X_OK):
        return known  # found before (on a PATH of absolute folders only) and still there
    entries = path.split(os.pathsep)
    if not all(os.path.isabs(entry) for entry in entries):
        # A relative entry (".", "bin", or empty: the current folder) names a folder of
        # the command's working directory, as execvp would see it from there; what is
        # found there depends on that folder, so it is not remembered.
        here = os.pathsep.join(str(cwd / (entry or ".")) for entry in entries)
        found = shutil.which(program, path=here)
        return found if found is not None else f"command not found: {program}"
    found = shutil.which(program, path=path)
    if found is None:
        return f"command not found: {program}"
    _FOUND[(program, path)] = found
    return found


#: Programs found on a PATH: (name, PATH) -> the file. Each step of a long run names the
#: same few programs; walking a PATH of 15 folders costs 15 stats. Only a hit is kept,
#: and checked again before use: a program installed by one step is found by the next.
_FOUND: dict[tuple[str, str], str] = {}


#: The environment variable holding the tokens of the attempts a process belongs to: its
#: own step's, after those of the steps it runs inside (an agentsaga run in a step).
TOKEN_VAR = "AGENTSAGA_ATTEMPT_TOKEN"


def attempt_token() -> tuple[str, dict[str, Any]]:
    """A new attempt's token and the process record the store keeps for it."""
    token = os.urandom(9).hex()
    return token, {"token": token, "host": socket.gethostname()}


def with_token(env: dict[str, str], token: str) -> dict[str, str]:
    """``env`` with ``token`` added to the tokens it already carries."""
    outer = env.get(TOKEN_VAR, "").split()[-7:]  # nesting is shallow; the value stays short
    env[TOKEN_VAR] = " ".join([*outer, token])
    return env


def _start_time(pid: int) -> int | None:
    """Clock ticks after boot at which ``pid`` started (``/proc/<pid>/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _live_processes() -> Iterator[tuple[Path, int]]:
    """Each live (not zombie) process in ``/proc``: its folder and its process group."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone, or not ours to read
        if fields[0] not in ("Z", "X"):
            yield entry, int(fields[2])


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    return [int(entry.name) for entry, group in _live_processes() if group == pgid]


def stop_attempt_processes(record: dict[str, Any]) -> list[int]:
    """Stop what a dead owner left running of an attempt, and wait until it has ended.
    Returns the process groups stopped (empty: nothing was left).

    The processes are those carrying the attempt's token in their environment, and the
    process groups they are in: a command and its children, and children that cleared
    their environment but stayed in its group. A record from before tokens names the
    command's process group (``pgid`` and its leader's start time) instead."""
    if record.get("host") != socket.gethostname():
        return []
    if record.get("token"):
        groups = _groups_of_token(str(record["token"]))
    else:
        groups = _legacy_group(record)
    live = set(groups)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        # Only groups with a member left: an empty group's id may belong to another
        # process by now.
        for pgid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + (_GRACE_S if sig == signal.SIGTERM else 30.0)
        while True:
            live = {pgid for pgid in live if _group_members(pgid)}
            if not live or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
    return sorted(groups)


def _groups_of_token(token: str) -> set[int]:
    """The process groups of the live processes whose environment carries ``token``;
    never this process's own."""
    wanted, name = token.encode(), TOKEN_VAR.encode() + b"="
    mine = os.getpgid(0)
    groups: set[int] = set()
    for entry, group in _live_processes():
        if group == mine or group in groups:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        for variable in environ.split(b"\0"):
            if variable.startswith(name) and wanted in variable[len(name) :].split():
                groups.add(group)
    return groups


def _legacy_group(record: dict[str, Any]) -> set[int]:
    """A group is ours while its leader is the recorded process (same start time), or,
    once the leader is gone, while any member lives: Linux does not reuse a pid while a
    process group of that id exists."""
    pgid = int(record.get("pgid") or 0)
    if pgid <= 1:
        return set()
    leader_start = _start_time(pgid)
    if leader_start is not None and leader_start != record.get("start"):
        return set()  # the pid was reused by another process
    return {pgid} if _group_members(pgid) else set()


class _Pump:
    """Carries a command's stdout and stderr from pipes to its log files through a
    MaskingWriter each. The thread waiting for the command pumps them between its waits
    (:class:`_Waiter`: one poll on the pipes and the process); where it cannot (no
    pidfd), a thread of its own does (``start_thread``). ``finish()`` (after the command
    ended) drains what the pipes still hold without waiting for an EOF that a background
    grandchild holding the pipe open would delay for ever."""

    def __init__(self, out: Any, err: Any, secrets: list[str]) -> None:
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        self.writers = {
            self.out_r: MaskingWriter(out, secrets),
            self.err_r: MaskingWriter(err, secrets),
        }
        self.live = set(self.writers)
        self.thread: threading.Thread | None = None
        self.wake_r = self.wake_w = -1

    def child_ends(self) -> tuple[int, int]:
        return self.out_w, self.err_w

    def spawned(self) -> None:
        """The child has its copies of the write ends: ours go, so the pipes reach EOF
        when the command and its children are done with them."""
        for fd in (self.out_w, self.err_w):
            os.close(fd)
        self.out_w = self.err_w = -1

    def read(self, fd: int) -> None:
        """Carry what ``fd`` holds (it polled readable); at EOF it is done."""
        data = os.read(fd, 65536)
        if data:
            self.writers[fd].write(data)
        else:
            self.live.discard(fd)

    def start_thread(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        self.thread = threading.Thread(target=self._run, name="agentsaga-log-pump", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = select.poll()
        for fd in (*self.live, self.wake_r):
            poller.register(fd, select.POLLIN)
        while self.live:
            events = poller.poll()
            if any(fd == self.wake_r for fd, _ in events):
                return
            for fd, _ in events:
                self.read(fd)
                if fd not in self.live:
                    poller.unregister(fd)

    def _drain(self, fd: int) -> None:
        os.set_blocking(fd, False)
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            self.writers[fd].write(data)

    def finish(self) -> None:
        for fd in (self.out_w, self.err_w):
            if fd >= 0:
                os.close(fd)
        if self.thread is not None:
            os.write(self.wake_w, b"x")
            self.thread.join()
        for fd in self.live:
            self._drain(fd)
        for writer in self.writers.values():
            writer.close()
        for fd in (self.out_r, self.err_r, self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)


def _wait(
    proc: subprocess.Popen[bytes],
    timeout_s: float | None,
    cancel: threading.Event | None,
    pump: _Pump | None,
) -> bool:
    """Wait for the process, pumping its output; stop its group on timeout or cancel.
    True if it timed out."""
    waiter = _Waiter(proc, pump)
    try:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            step = 0.05 if cancel is not None else None
            if remaining is not None and step is not None:
                step = min(step, max(remaining, 0.0))
            elif remaining is not None:
                step = max(remaining, 0.0)
            if waiter.exited(step):
                return False
            if cancel is not None and cancel.is_set():
                stop_group(proc)
                return False
            if deadline is not None and time.monotonic() >= deadline:
                stop_group(proc)
                return True
    finally:
        waiter.close()


class _Waiter:
    """Waits for a process's exit on a pidfd (Linux 5.3+), which becomes readable the
    instant the process exits: ``Popen.wait(timeout)`` polls with sleeps that double from
    0.5 ms, so a command that exits after 1 ms is noticed after 1.5-3.5 ms. The same
    poll carries the output a pump masks, so no thread has to wake for it. Elsewhere:
    Popen's wait, and the pump's own thread."""

    def __init__(self, proc: subprocess.Popen[bytes], pump: _Pump | None) -> None:
        self.proc, self.pump = proc, pump
        self.pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(proc.pid)
            except OSError:
                self.pidfd = -1
        if self.pidfd < 0:
            if pump is not None:
                pump.start_thread()
            return
        # poll, not select: select cannot watch a descriptor numbered >= 1024.
        self.poller = select.poll()
        self.poller.register(self.pidfd, select.POLLIN)
        for fd in pump.live if pump is not None else ():
            self.poller.register(fd, select.POLLIN)

    def exited(self, wait_s: float | None) -> bool:
        """Wait up to ``wait_s`` (None: for ever) for the process to exit; True if it did."""
        if self.proc.returncode is not None:
            return True
        if self.pidfd < 0:
            try:
                self.proc.wait(timeout=wait_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = self.poller.poll(None if left is None else math.ceil(left * 1000))
            if not events:
                return False
            for fd, _ in events:
                if fd == self.pidfd:
                    self.proc.wait()
                    return True
                assert self.pump is not None
                self.pump.read(fd)
                if fd not in self.pump.live:
                    self.poller.unregister(fd)
            if deadline is not None and time.monotonic() >= deadline:
                return False  # a chatty command must not keep a cancel from being seen

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, _GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def read_tail(path: Path, chars: int = TAIL_CHARS) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - chars * 4))
            data = handle.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-chars:]


def _tail(log: Any, path: Path) -> str:
    """The tail of a command's log file; a lazy one never created is empty (no open that
    fails: two per step for the commands that print nothing)."""
    if isinstance(log, _LazyFile) and log.handle is None:
        return ""
    return read_tail(path)


class _LazyFile:
    """A log file created (owner-only) at its first byte; one left at its path by an
    earlier command is removed at once, so the path never shows stale output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None
        path.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.handle is None:
            self.handle = _private_open(self.path)
        self.handle.write(data)

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _private_open(path: Path) -> Any:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")


def _private_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents readable by the owner only (logs hold
    prompts and command output); mkdir's ``mode`` applies to the last level alone."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
