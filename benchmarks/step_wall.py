"""Where a no-op step's wall time goes: an ``agentsaga run`` of N ``true`` steps in this
process, with the calls on a step's critical path timed (wall clock, summed, per step).

* **command**: ``process.run_command``, of which **spawn** (``Popen``: the ``vfork`` until
  the program execs) and **wait for exit** (the program running, on its pidfd);
* **start_attempt**: the running record (committed without an fsync);
* **finish_attempt**: the checkpoint's commit, of which **fsync** (the WAL's fdatasync).

The store is a fresh file in a temporary folder on the disk of ``--dir`` (default: the
system's temporary folder; its filesystem matters: a tmpfs has no fsync to wait for).

Run: python benchmarks/step_wall.py [--steps 1000] [--dir PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine, noop_pipeline, write

sys.path.insert(0, str(REPO))

TIMED: dict[str, list[float]] = {}


def _timed(owner: Any, name: str, label: str) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            entry = TIMED.setdefault(label, [0.0, 0])
            entry[0] += time.perf_counter() - start
            entry[1] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()

    from agentsaga import cli, process
    from agentsaga.store import sql, wal_sync

    _timed(process, "run_command", "command")
    _timed(subprocess.Popen, "__init__", "  spawn")
    _timed(process._Waiter, "exited", "  wait for exit")
    _timed(sql.SqlStore, "start_attempt", "start_attempt")
    _timed(sql.SqlStore, "finish_attempt", "finish_attempt")
    _timed(wal_sync.WalSync, "now", "  fsync")

    with tempfile.TemporaryDirectory(prefix="step-wall-", dir=args.dir) as folder:
        work = Path(folder)
        pipeline = write(work / "p.yml", noop_pipeline(args.steps, name="wall"))
        os.chdir(work)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            sys.argv = ["agentsaga", "--store", str(work / "state.db"), "run", str(pipeline)]
            with contextlib.suppress(SystemExit):
                cli.main()
        whole = time.perf_counter() - start
    print(f"step wall ({machine()}), {args.steps:,} steps in process, {whole:.2f} s in all")
    for label, (seconds, calls) in TIMED.items():
        per_step = seconds / args.steps * 1000
        print(f"{label:24s} {per_step:7.3f} ms a step   ({calls:,} calls)")


if __name__ == "__main__":
    main()
