"""The read step on a repository of 2,000+ files: how long the step takes.

A generated git repository of N Python files (sizes spread like a real project's: most a
few KB, some 20-60 KB; ~8 M characters in all at 2,000 files), a plan that names two
files, and a read of ``**/*.py`` within 40,000 tokens, run by the installed command. The
figure is the read step's own duration as the store recorded it (its attempt), so process
start-up and the plan step are not in it. Target (issue 11): at most 1 s at 2,000 files.

    python benchmarks/read.py [--files 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
from pathlib import Path

from _common import agentsaga_exe, machine, median, ms


def make_repo(root: Path, n_files: int) -> Path:
    rng = random.Random(7)
    repo = root / "repo"
    for i in range(n_files):
        package = f"pkg{i % 40}"
        path = repo / "src" / package / f"module_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        functions = rng.choice([4, 8, 12, 20, 40, 120])
        body = "".join(
            f"def function_{i}_{j}(value, other=None):\n"
            f"    '''Compute the {j}th thing for module {i}.'''\n"
            f"    result = [value * {j} + k for k in range({j} + 3)]\n"
            f"    return sum(result) if other is None else other(result)\n\n\n"
            for j in range(functions)
        )
        path.write_text(f"import os\nfrom {package} import module_{(i + 1) % n_files}\n\n" + body)
    for args in (
        ("init", "-q", "-b", "main"),
        ("add", "-A"),
        ("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "files"),
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


PIPELINE = """\
name: read-bench
workspace: {isolation: none}
defaults: {provider: scripted, model: m}
steps:
  - id: plan
    kind: plan
    prompt: plan
    replies: ["Change src/pkg3/module_43.py and src/pkg7/module_1207.py."]
  - id: read
    kind: read
    files: ["**/*.py"]
    max_tokens: 40000
"""


def read_step_s(repo: Path, store: Path) -> float:
    exe = agentsaga_exe()
    run = subprocess.run(
        [*exe, "--store", str(store), "run", str(repo.parent / "p.yml"), "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = json.loads(run.stdout)["run_id"]
    show = subprocess.run(
        [*exe, "--store", str(store), "show", run_id, "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    (step,) = [s for s in json.loads(show.stdout)["steps"] if s["step_id"] == "read"]
    return step["attempts"][-1]["duration_ms"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = make_repo(root, args.files)
        chars = sum(p.stat().st_size for p in repo.rglob("*.py"))
        (root / "p.yml").write_text(PIPELINE)
        timings = [read_step_s(repo, root / f"state{i}.db") for i in range(args.runs)]
        print(f"read of {args.files:,} files ({chars / 1e6:.1f} M characters), 40,000 tokens:")
        print(
            f"  read step median {ms(median(timings))}  (runs: {', '.join(ms(t) for t in timings)})"
        )


if __name__ == "__main__":
    main()
