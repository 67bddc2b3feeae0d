"""A fork server for the crash sweeps: ``python -m agentsaga`` without paying the
interpreter start and the imports at every launch.

``test_crash_occurrences.py`` launches agentsaga ~260 times; each launch used to spend most
of its time starting Python and importing the CLI, the engine and the SDK. The server
(this file run as a script) imports all of that ONCE and opens nothing: no store, no
thread, no socket (it checks). For each request it forks a child that

- takes the request's cwd and whole environment, re-arms ``AGENTSAGA_FAULT``
  (``faults.configure``: the module read the variable at import, in the server),
- points fds 0/1/2 at /dev/null and the request's stdout/stderr files,
- runs ``agentsaga.cli.main`` with the request's argv, then the atexit handlers, flushes,
  and exits with main's code (``os._exit``: nothing of the server's loop runs in it).

A fault point's ``os.kill(getpid(), SIGKILL)`` kills that child, the process doing the
work, exactly as it kills a ``python -m agentsaga`` process: the server reports the wait
status as ``subprocess`` does (-9). The caller (``Zygote.run``, through ``launch``) gives
up after its timeout and SIGKILLs the child, like ``subprocess.run(timeout=...)``.

Protocol: one JSON line per request on the server's stdin; it answers ``{"pid": n}``
when the child is forked and ``{"rc": n}`` when it is reaped. One request at a time.
The server is started by a module fixture (``serving``) without the current test's
procguard mark, and stopped at the module's end.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Modules a launch would import lazily, imported once in the server.
PRELOAD = ("agentsaga.cli", "anthropic", "openai")
#: Not preloaded: heavy and never reached by the sweeps' commands.
SKIP = ("temporal", "agentsaga.ui")


# --- the server side ------------------------------------------------------------------------


def _preload() -> None:
    import importlib
    import pkgutil
    import threading

    import agentsaga

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for info in pkgutil.walk_packages(agentsaga.__path__, "agentsaga."):
        if info.name.endswith("__main__") or any(s in info.name for s in SKIP):
            continue
        with contextlib.suppress(ImportError):
            importlib.import_module(info.name)
    # A forked child inherits no thread but the forking one: the server must have none.
    assert threading.active_count() == 1, threading.enumerate()


def _child(request: dict[str, Any], proto: tuple[int, int]) -> None:
    """In the forked child: become the requested ``agentsaga`` process; never returns."""
    code = 1
    try:
        for fd in proto:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for src, dst in ((null, 0), (out, 1), (err, 2)):
            os.dup2(src, dst)
            os.close(src)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]  # as ``python -m`` has it
        from agentsaga import faults
        from agentsaga.cli import main

        faults.configure(os.environ.get("AGENTSAGA_FAULT", ""))
        sys.argv = [str(Path(faults.__file__).with_name("__main__.py")), *request["argv"]]
        sys.modules["__main__"].__package__ = "agentsaga"  # click's "python -m agentsaga"
        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, exit 1
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
    finally:
        os._exit(code & 0xFF)


def serve() -> None:
    # The protocol moves off fds 0/1, which then point at /dev/null: a stray print in the
    # server cannot corrupt it, and a child's fds 0/1 are the request's.
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    _preload()
    reader = os.fdopen(proto_in, "r")
    writer = os.fdopen(proto_out, "w")

    def say(message: dict[str, int]) -> None:
        writer.write(json.dumps(message) + "\n")
        writer.flush()

    say({"ready": os.getpid()})
    for line in reader:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, (proto_in, proto_out))
        say({"pid": pid})
        _, status = os.waitpid(pid, 0)
        say({"rc": os.waitstatus_to_exitcode(status)})


# --- the client side ------------------------------------------------------------------------


class Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [env.get("PYTHONPATH"), root]))}
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self._buf = b""
        self.scratch = Path(tempfile.mkdtemp(prefix="zygote-"))
        self._read(120.0, "ready")

    def _read(self, timeout: float, key: str) -> int:
        """The next answer line. Read from the fd itself, not a buffered file: ``pid`` and
        ``rc`` may arrive in one chunk (a child killed at once, a loaded machine), and a
        line already buffered would leave ``select`` waiting for nothing."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(timeout):
                    raise TimeoutError(key)
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the zygote died (exit {self.proc.wait()})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return int(json.loads(line)[key])

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run([python, -m, agentsaga, *argv], capture_output=True, text=True,
        timeout=timeout)``, forked from the server."""
        out, err = self.scratch / "stdout", self.scratch / "stderr"
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out)}
        request["stderr"] = str(err)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._read(30.0, "pid")
        try:
            rc = self._read(timeout, "rc")
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._read(30.0, "rc")
            raise subprocess.TimeoutExpired(argv, timeout) from None
        return subprocess.CompletedProcess(argv, rc, out.read_text(), err.read_text())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        for f in self.scratch.iterdir():
            f.unlink()
        self.scratch.rmdir()


_current: list[Zygote] = []


@contextlib.contextmanager
def serving() -> Iterator[Zygote]:
    """A server for the duration of the block (a module fixture): ``launch`` uses it."""
    from tests.procguard import untracked_env

    server = Zygote(untracked_env())  # outlives the test that first asks for it
    _current.append(server)
    try:
        yield server
    finally:
        _current.remove(server)
        server.close()


def current() -> Zygote | None:
    return _current[-1] if _current else None


def launch(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``python -m agentsaga ARGS`` with output captured: forked from the module's server
    when one serves (``serving``), else a new interpreter, as before."""
    server = current()
    if server is not None:
        return server.run(args, cwd, env, timeout)
    return subprocess.run(
        [sys.executable, "-m", "agentsaga", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # not tests/: the children set their own cwd here
    serve()
