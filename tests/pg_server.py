"""A throwaway PostgreSQL server for the test session.

``pg_url`` starts a cluster once per session (``initdb`` in a temporary folder, a free
port on 127.0.0.1, password authentication over TCP so the tests can check the password
never leaks), and stops and deletes it at the end. ``pg_fresh_url`` gives each test a
new, empty store (a schema of its own), so tests never see each other's runs.

The server refuses to run as root, so as root everything runs as the ``postgres`` user
(``runuser``); as any other user it runs as that user. Without PostgreSQL installed the
postgres tests are skipped, unless ``AGENTSAGA_REQUIRE_POSTGRES=1`` (CI), where a missing
server is a failure: a green CI must mean the PostgreSQL store was tested.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.procguard import untracked_env

PASSWORD = "s3cret-pw"  # test-only; the tests assert it never appears in messages
USER = "agentsaga"


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the PATH, else Debian's
    versioned folders (newest first)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    versions.sort(key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def _required() -> bool:
    # CI runs `.ci/run` with CI=true: there a missing server is a failure, never a skip.
    return os.environ.get("AGENTSAGA_REQUIRE_POSTGRES") == "1" or os.environ.get("CI") == "true"


def _unavailable(reason: str) -> NoReturn:
    if _required():
        pytest.fail(f"{reason} (AGENTSAGA_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: its parent is private to root, and the server runs
        # as `postgres`. Short, too: the socket path must fit in 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="agentsaga-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        if self.as_root:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.dir, ignore_errors=True)
                _unavailable("running as root and there is no `postgres` user to run the server")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.dir,
            env=untracked_env(),  # the server outlives the test that first asked for it
        )

    def init(self) -> None:
        pwfile = self.dir / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        last = ""
        for _ in range(5):  # another process may take the free port before we bind it
            self.port = _free_port()
            options = (
                f"-k {self.dir} -p {self.port} -h 127.0.0.1 "
                # A throwaway cluster: durability off, so the tests run at memory speed.
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
            if done.returncode == 0:
                return
            last = done.stdout + done.stderr + self._log_tail()
        raise RuntimeError(f"pg_ctl start failed:\n{last}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = find_pg_bin()  # tests/services.py installed it before the first test if it could
    if bin_dir is None:
        _unavailable(
            "PostgreSQL is not installed (no initdb on the PATH or in "
            "/usr/lib/postgresql/*/bin); tests/ensure_postgres.sh installs it"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[postgres]'")
    cluster = PgCluster(bin_dir)
    try:
        started = time.monotonic()
        cluster.init()
        cluster.start()
        cluster.startup_s = time.monotonic() - started  # type: ignore[attr-defined]
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL (with password) of a database on the session's server."""
    return pg_cluster.create_database("agentsaga_session")


_counter = {"n": 0}


@pytest.fixture
def pg_fresh_url(pg_cluster: PgCluster, pg_url: str) -> Callable[[], str]:
    """A factory: each call gives the URL of a new, empty store: a schema of its own in
    the session's database, chosen with ``options=-c search_path=...`` in the URL.
    (A database per test would cost ~0.5 s each in CREATE DATABASE; a schema, ~1 ms.)"""
    import psycopg

    def make() -> str:
        _counter["n"] += 1
        schema = f"t{os.getpid()}_{_counter['n']}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{pg_url}?options=-csearch_path%3D{schema}"

    return make
