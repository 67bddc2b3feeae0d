"""A step's cost with the PostgreSQL store: statements sent and ms a step, checkouts side by side.

Each step's records cross the network: a statement is a round trip to the server, so
with PostgreSQL the number of statements a step sends, not the CPU of running them, is
what a step costs. This script starts a throwaway cluster with the server's durable
defaults (``fsync`` and ``synchronous_commit`` on, unlike the test suite's cluster), with
``pg_stat_statements`` loaded, and runs ``agentsaga run`` of a pipeline of N no-op command
steps (``true``, ``isolation: none``) into a fresh database per run, with each checkout
given (``--trees``, each put first on ``PYTHONPATH``; default: this one) taking turns.

Figures per checkout, medians of ``--repeat`` runs:

* **ms a step**: (last step's end - first step's start) / N, from the store's attempt
  times (start-up excluded);
* **statements a step**: what the server executed during the run (``pg_stat_statements``
  calls, transaction control included, and the foreign-key check the server makes
  itself for each new attempt, which is not a round trip) / N;
* **transactions a step**: the database's committed transactions during the run / N.

Run: python benchmarks/pg_steps.py [--steps 1000] [--repeat 3] [--trees DIR ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine, median, noop_pipeline

sys.path.insert(0, str(REPO))

from tests.pg_server import PgCluster, find_pg_bin  # noqa: E402


def start(cluster: PgCluster) -> None:
    """``PgCluster.start`` with the server's durable defaults and pg_stat_statements."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        cluster.port = s.getsockname()[1]
    options = (
        f"-k {cluster.dir} -p {cluster.port} -h 127.0.0.1 "
        "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    )
    done = cluster._run(
        "pg_ctl", "-D", str(cluster.data), "-l", str(cluster.log), "-o", options, "-w", "start"
    )
    if done.returncode != 0:
        raise SystemExit(f"pg_ctl start failed:\n{done.stdout}{done.stderr}")


def counters(url: str) -> tuple[int, int]:
    """(statements executed, transactions committed) in this database so far."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        (calls,) = conn.execute(
            "SELECT COALESCE(SUM(calls), 0) FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
        ).fetchone() or (0,)
        (commits,) = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone() or (0,)
    return int(calls), int(commits)


def per_step(url: str, n: int) -> float:
    import psycopg

    with psycopg.connect(url) as conn:
        first, last = conn.execute(
            "SELECT MIN(started_at), MAX(finished_at) FROM step_attempts WHERE run_id = "
            "(SELECT id FROM runs ORDER BY created_at DESC LIMIT 1)"
        ).fetchone() or ("", "")
    from datetime import datetime

    span = datetime.fromisoformat(last) - datetime.fromisoformat(first)
    return span.total_seconds() * 1000 / n


def measure(cluster: PgCluster, tree: Path, n: int, pipeline: Path, k: int) -> dict[str, Any]:
    import psycopg

    url = cluster.create_database(f"steps{k}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    # The first run creates the schema: a one-step run first, so the counted run is a
    # long one against a store that exists, as a user's second run is.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    one = pipeline.with_name("one.yml")
    argv = [sys.executable, "-m", "agentsaga", "--store", url, "run"]

    # Run from the pipeline's folder: `python -m` puts the working directory first on
    # sys.path, where a checkout would shadow the one on PYTHONPATH.
    def agentsaga_run(file: Path) -> None:
        subprocess.run(
            [*argv, str(file)], env=env, cwd=pipeline.parent, capture_output=True, check=True
        )

    agentsaga_run(one)
    calls, commits = counters(url)
    agentsaga_run(pipeline)
    calls2, commits2 = counters(url)
    return {
        "ms": per_step(url, n),
        "statements": (calls2 - calls) / n,
        "transactions": (commits2 - commits) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trees", type=Path, nargs="+", default=[REPO])
    args = parser.parse_args()
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (tests/ensure_postgres.sh installs it)")
    print(f"pg_steps ({machine()}), {args.steps} steps, medians of {args.repeat}")
    cluster = PgCluster(bin_dir)
    results: dict[Path, list[dict[str, Any]]] = {tree: [] for tree in args.trees}
    with tempfile.TemporaryDirectory(prefix="pg-steps-") as folder:
        pipeline = Path(folder) / "steps.yml"
        pipeline.write_text(noop_pipeline(args.steps))
        pipeline.with_name("one.yml").write_text(noop_pipeline(1))
        try:
            cluster.init()
            start(cluster)
            k = 0
            for _ in range(args.repeat):
                for tree in args.trees:
                    k += 1
                    results[tree].append(measure(cluster, tree, args.steps, pipeline, k))
        finally:
            cluster.stop()
    print("| checkout | commit | ms a step | statements a step | transactions a step |")
    print("|---|---|---|---|---|")
    for tree, runs in results.items():
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        cells = " | ".join(f"{median([r[key] for r in runs]):.2f}" for key in runs[0])
        print(f"| {tree} | {commit} | {cells} |")


if __name__ == "__main__":
    main()
