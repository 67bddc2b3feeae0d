"""The engine's own CPU per durable step, split: store calls, commands, and the rest.

``peers.py`` measures a whole ``agentsaga run`` (start-up, children, the pipeline's
parsing); this measures the engine in process, per step of peers.py's workload (N
``kind: shell`` steps running ``true``), by the main thread's CPU clock
(``time.thread_time``: the store's fsync thread is not counted):

* **store**: inside the store's public methods (SQL, JSON, the commit);
* **commands**: inside ``process.run_command`` (spawn, wait, log files); with ``--stub``
  the command is not run at all (a fixed result is returned), which takes the child
  process and the kernel's fork/exec out of the figure and makes it repeatable on a
  shared machine;
* **engine**: the rest of the main thread: the namespace, rendering, fingerprint,
  environment, decisions, bookkeeping and the progress lines (``Renderer`` writing to
  stderr, as ``agentsaga run`` does; send stderr to /dev/null).

Each figure includes its share of the timers themselves (~1.5 us a timed call, five a
step). The store is a fresh SQLite file in ``--dir`` (default: a temporary folder).

Run: python benchmarks/engine_cpu.py [--steps 3000] [--repeat 5] [--stub] [--dir /dev/shm]
       2>/dev/null
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import peers  # noqa: E402

from agentsaga.cli_render import Renderer  # noqa: E402
from agentsaga.engine import Engine, EngineOptions  # noqa: E402
from agentsaga.pipeline import load_text  # noqa: E402
from agentsaga.process import CommandResult  # noqa: E402
from agentsaga.steps import command  # noqa: E402
from agentsaga.store import open_store  # noqa: E402


def measure(steps: int, stub: bool, folder: str | None) -> dict[str, float]:
    spent = {"store": 0.0, "commands": 0.0}
    depth = [0]

    def timed(kind: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return fn(*args, **kwargs)  # a store call made by a command: the command's
            depth[0] += 1
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[kind] += time.thread_time() - started
                depth[0] -= 1

        return wrapper

    work = Path(tempfile.mkdtemp(prefix="engine-cpu-", dir=folder))
    real = command.run_command

    def stubbed(argv: Any, *, log_stem: Path, **_: Any) -> CommandResult:
        return CommandResult(0, "", "", False, 0.1, log_stem, log_stem)  # no output

    command.run_command = timed("commands", stubbed if stub else real)  # type: ignore[assignment]
    try:
        pipeline = load_text(peers.noop_pipeline(steps, name="noop"), "p.yml", {})
        store = open_store(str(work / "state.db"), None, create=True)
        for name in dir(type(store)):
            method = getattr(store, name)
            if not name.startswith("_") and name != "transaction" and callable(method):
                setattr(store, name, timed("store", method))
        engine = Engine(store, work / ".agentsaga", EngineOptions(on_event=Renderer().on_event))
        started = time.thread_time()
        result = engine.run(pipeline, None)
        main = time.thread_time() - started
        store.close()
    finally:
        command.run_command = real  # type: ignore[assignment]
    if result.status != "succeeded":
        raise SystemExit(f"the run ended {result.status}")
    ms = 1000 / steps
    return {
        "main thread": main * ms,
        "store": spent["store"] * ms,
        "commands": spent["commands"] * ms,
        "engine": (main - spent["store"] - spent["commands"]) * ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stub", action="store_true", help="do not run the commands")
    parser.add_argument("--dir", default=None, help="where the store goes (e.g. /dev/shm)")
    args = parser.parse_args()
    runs = [measure(args.steps, args.stub, args.dir) for _ in range(args.repeat)]
    out = sys.__stdout__
    load = os.getloadavg()[0]
    print(f"{args.steps:,} steps, {args.repeat} runs, load {load:.1f}, ms per step", file=out)
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key:12} median {statistics.median(values):.3f}  min {min(values):.3f}", file=out)


if __name__ == "__main__":
    main()
