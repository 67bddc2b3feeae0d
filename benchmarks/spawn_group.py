"""What a command's session costs under CPU contention, and the floor of a durable step.

Linux gives each new session a scheduling group of its own when autogroups are on (the
default: ``kernel.sched_autogroup_enabled``), and a new group starts with almost no
share of a busy CPU. This script spawns ``true`` in a loop, N times, in three ways, with
and without K CPU-bound processes alongside (in this script's own session, as a build
or a test suite started from the same shell would be):

* **session**: ``start_new_session=True`` (what agentsaga did for every command);
* **group**: ``process_group=0`` (what it does without a controlling terminal);
* **durable loop**: a process group, plus two SQLite commits with ``synchronous=FULL``
  around each spawn (a running record and a checkpoint): the least a durable step can
  cost from Python, engine aside.

Each figure is ms a spawn, the median of ``--repeat`` loops taking turns.

Run: python benchmarks/spawn_group.py [--spawns 300] [--busy 0 4] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median
from peers import busy

TRUE = "/usr/bin/true" if Path("/usr/bin/true").exists() else "/bin/true"


def spawn(session: bool) -> None:
    subprocess.Popen(
        [TRUE],
        stdin=subprocess.DEVNULL,
        start_new_session=session,
        process_group=None if session else 0,
    ).wait()


def spawn_loop(session: bool, n: int) -> None:
    for _ in range(n):
        spawn(session)


def durable_loop(folder: Path, n: int) -> None:
    conn = sqlite3.connect(folder / "loop.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS steps (i INTEGER PRIMARY KEY, status TEXT)")
    conn.execute("DELETE FROM steps")
    for i in range(n):
        conn.execute("INSERT INTO steps VALUES (?, 'running')", (i,))
        spawn(session=False)
        conn.execute("UPDATE steps SET status = 'done' WHERE i = ?", (i,))
    conn.close()


def timed(call: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=300)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.spawns
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    state = autogroup.read_text().strip() if autogroup.exists() else "absent"
    print(f"spawn_group ({machine()}), {n} spawns, medians of {args.repeat}, autogroup {state}")
    print("| busy | session, ms | group, ms | durable loop, ms |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="spawn-group-", dir=Path.home() / ".cache") as name:
        folder = Path(name)
        ways: dict[str, Callable[[], None]] = {
            "session": lambda: spawn_loop(True, n),
            "group": lambda: spawn_loop(False, n),
            "durable": lambda: durable_loop(folder, n),
        }
        for k in args.busy:
            hogs = busy(k)
            try:
                times: dict[str, list[float]] = {way: [] for way in ways}
                for _ in range(args.repeat):
                    for way, call in ways.items():
                        times[way].append(timed(call, n))
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
            cells = " | ".join(f"{median(times[way]):.2f}" for way in ways)
            print(f"| {k} | {cells} |")


if __name__ == "__main__":
    main()
