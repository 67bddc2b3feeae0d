"""Start-up: median wall time of short commands, each in a fresh process.

* ``agentsaga --help`` and ``agentsaga validate pipelines/demo.yml`` (target 150 ms);
* ``agentsaga runs`` and ``agentsaga show RUN`` against a store of 10,000 runs of 10 steps
  (target 250 ms). The store is generated through the Store API in a temporary folder and
  passed with ``--store``.

Also prints a bare ``python -c pass`` as the floor this interpreter sets on this machine.
Run: python benchmarks/startup.py [--runs N] [--runs-in-store N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, agentsaga_exe, machine, median, ms, populate_runs, time_command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command")
    parser.add_argument("--runs-in-store", type=int, default=10_000)
    args = parser.parse_args()
    exe = agentsaga_exe()
    print(f"start-up, median of {args.runs} runs ({machine()})")
    print(f"command: {' '.join(exe)}")
    rows: list[tuple[str, list[float], float | None]] = []
    floor = time_command([sys.executable, "-c", "pass"], args.runs)
    rows.append(("python -c pass (floor)", floor, None))
    rows.append(("agentsaga --help", time_command([*exe, "--help"], args.runs, cwd=REPO), 0.150))
    validate = time_command([*exe, "validate", "pipelines/demo.yml"], args.runs, cwd=REPO)
    rows.append(("agentsaga validate pipelines/demo.yml", validate, 0.150))
    with tempfile.TemporaryDirectory(prefix="agentsaga-bench-") as tmp:
        store = Path(tmp) / "state.db"
        start = time.perf_counter()
        ids = populate_runs(store, args.runs_in_store, 10)
        print(
            f"(generated {len(ids):,} runs x 10 steps in {time.perf_counter() - start:.1f} s, "
            f"{store.stat().st_size / 1e6:.1f} MB)"
        )
        middle = ids[len(ids) // 2]
        for label, argv in (
            (f"agentsaga runs ({len(ids):,} runs)", [*exe, "--store", str(store), "runs"]),
            ("agentsaga runs --json", [*exe, "--store", str(store), "runs", "--json"]),
            ("agentsaga show RUN", [*exe, "--store", str(store), "show", middle]),
            ("agentsaga show RUN --json", [*exe, "--store", str(store), "show", middle, "--json"]),
        ):
            rows.append((label, time_command(argv, args.runs, cwd=tmp), 0.250))
    print()
    print(f"{'command':44} {'median':>10} {'min':>10} {'max':>10}  target")
    for label, timings, target in rows:
        verdict = (
            ""
            if target is None
            else (f"{target * 1000:.0f} ms " + ("ok" if median(timings) <= target else "MISSED"))
        )
        print(f"{label:44} {ms(median(timings))} {ms(min(timings))} {ms(max(timings))}  {verdict}")


if __name__ == "__main__":
    main()
