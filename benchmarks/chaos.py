"""Chaos loop: real pipelines on a real git repository, SIGKILLed at random moments.

Each round starts one or two runs of a scripted pipeline (no network, no key) on one
repository, kills ``run``, ``resume``, ``approve``, ``reject`` and ``rollback`` at random
moments (the worktree pool's claim and release and a gate's wait included), drives every
run to the end (resume, then rollback), and checks what a user relies on:

* the user's checkout (branch, HEAD, index, files, an uncommitted change, an untracked
  file) is never touched; after the rollbacks the repository equals, ref for ref and file
  for file, the repository before the round (``tests/gitstate.capture``);
* no run is left ``running`` after a resume; resume succeeds (or waits at its gate);
* a pooled worktree never carries a file of an earlier run, and two runs never share one
  (each run's first step looks for other runs' leftovers, tracked, untracked and ignored);
* the pool keeps at most two entries and no claim file once every command has ended;
* the deploy ledger (written by the steps' own commands) shows each deploy undone before
  another is applied, and none left applied after a rollback;
* ``show --json``: the run's usage is the sum of its attempts' usage;
* no process a step started is alive once its run is settled.

Not a test (it is random and long): ``python benchmarks/chaos.py --minutes 5 [--seed N]``
prints each round and what it found, and exits 1 if any invariant broke. Set
``PYTHONPATH`` to the checkout to try.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gitstate import capture, git, make_repo  # noqa: E402

EDIT = """src/app.py
<<<<<<< SEARCH
def value():
    return 1
=======
def value():
    return 2
>>>>>>> REPLACE
"""

PROBE = r"""
import os, pathlib, subprocess, sys, time
run = os.environ["AGENTSAGA_RUN_ID"]
out = pathlib.Path(sys.argv[1])
here = pathlib.Path.cwd()
found = [str(p.relative_to(here)) for p in here.rglob("*left-by-*")
         if ".git" not in p.parts and not p.name.endswith(run)]
status = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
                        capture_output=True, text=True).stdout.split("\n")
foreign = [s for s in status if s.strip() and not s.endswith(run)
           and not s.endswith(run + "/")]
if found or foreign:
    with open(out, "a") as f:
        f.write(f"{run} in {here}: foreign files {found} status {foreign}\n")
(here / f"left-by-{run}").write_text(run)
(here / "build").mkdir(exist_ok=True)
(here / "build" / f"left-by-{run}").write_text(run)
time.sleep(float(sys.argv[2]))
"""

DEPLOY = r"""
import json, os, pathlib, sys, time
ledger = pathlib.Path(sys.argv[1])
key = os.environ["AGENTSAGA_IDEMPOTENCY_KEY"]
if os.environ.get("AGENTSAGA_COMPENSATING"):
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    if f"revert {key}" not in lines:
        with ledger.open("a") as f:
            f.write(f"revert {key}\n")
else:
    with ledger.open("a") as f:
        f.write(f"deploy {key}\n")
    time.sleep(0.2)
    print(json.dumps({"version": key}))
"""


FAULT_POINTS = [
    line.split()[0]
    for line in (Path(__file__).resolve().parent.parent / "agentsaga" / "faults.py")
    .read_text()
    .split('"""')[1]
    .splitlines()
    if line.startswith("    ") and "." in line.split()[0]
]


CHECK = "import sys; sys.path.insert(0, 'src'); import app; assert app.value() == 2"


def pipeline(tools: Path, gate: bool) -> str:
    replies = "\n".join(f"      - text: {json.dumps(EDIT)}" for _ in range(12))
    gate_step = (
        """
  - id: review
    kind: approve
    message: look
    on_reject: {rewind_to: write, max_rejects: 20}
"""
        if gate
        else ""
    )
    return f"""name: chaos
defaults: {{provider: scripted, model: claude-sonnet-4-5}}
workspace: {{branch: "agentsaga/${{{{ run.id }}}}"}}
steps:
  - id: probe
    kind: shell
    run: ["{sys.executable}", "{tools}/probe.py", "{tools}/violations.log", "0.3"]
  - id: plan
    kind: plan
    prompt: plan it
    replies:
      - {{text: the plan, usage: {{input: 1000, output: 100}}}}
      - {{text: the plan, usage: {{input: 1000, output: 100}}}}
      - {{text: the plan, usage: {{input: 1000, output: 100}}}}
  - id: write
    kind: write
    prompt: "${{{{ steps.plan.output.text }}}}"
    replies:
{replies}
  - id: notes
    kind: shell
    commit: true
    run: "echo note >> notes.md && sleep 0.2"
  - id: test
    kind: test
    run: ["{sys.executable}", "-c", "{CHECK}"]
{gate_step}
  - id: deploy
    kind: deploy
    run: ["{sys.executable}", "{tools}/deploy.py", "{tools}/ledger.log"]
    compensate:
      run: ["{sys.executable}", "{tools}/deploy.py", "{tools}/ledger.log"]
"""


class Chaos:
    def __init__(self, root: Path, rng: random.Random, verbose: bool) -> None:
        self.root = root
        self.rng = rng
        self.verbose = verbose
        self.tools = root / "tools"
        self.tools.mkdir()
        (self.tools / "probe.py").write_text(PROBE)
        (self.tools / "deploy.py").write_text(DEPLOY)
        self.repo = make_repo(
            root,
            {
                "src/app.py": "def value():\n    return 1\n",
                "README.md": "hello\n",
                ".gitignore": "build/\n",
            },
        )
        for gate in (False, True):
            name = "gate.yml" if gate else "plain.yml"
            (self.tools / name).write_text(pipeline(self.tools, gate))
        # The user's own unfinished work, which nothing may touch.
        (self.repo / "README.md").write_text("hello, edited by the user\n")
        (self.repo / "mine.txt").write_text("untracked, the user's\n")
        self.tag = f"chaos-{os.getpid()}-{rng.randrange(10**9)}"
        self.problems: list[str] = []
        self.kills = 0

    # --- driving the CLI ---------------------------------------------------------------------

    def cli(self, *args: str, kill_after: float | None = None) -> tuple[int | None, str]:
        """Run agentsaga in the repository; SIGKILL it (only it, as kill -9 would) after
        ``kill_after`` seconds. Its exit code, or None when it was killed."""
        armed = kill_after is not None or args[0] in ("run", "resume")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentsaga", *args],
            cwd=self.repo,
            env=self.env() if armed and args[0] not in ("show", "runs") else self._plain(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
            self.kills += 1
            if self.verbose:
                print(f"    killed {' '.join(args[:2])} after {kill_after:.2f}s")
            return None, out
        if proc.returncode == -signal.SIGKILL:
            self.kills += 1  # at an armed fault point
            return None, out
        if "Traceback" in out:
            self.problem(f"traceback from {' '.join(args)}:\n{out}")
        return proc.returncode, out

    def _plain(self) -> dict[str, str]:
        env = dict(os.environ, CHAOS_TAG=self.tag)
        env.pop("AGENTSAGA_FAULT", None)
        return env

    def problem(self, text: str) -> None:
        print("  PROBLEM:", text)
        self.problems.append(text)

    def runs(self) -> list[dict[str, Any]]:
        code, out = self.cli("runs", "--json")
        return list(json.loads(out)["runs"]) if code == 0 else []

    def kill_time(self) -> float:
        return self.rng.uniform(0.5, 6.0)

    def env(self) -> dict[str, str]:
        """The environment of one command: sometimes armed to SIGKILL itself at a named
        fault point (the pool's narrow windows are hard to hit with a timer)."""
        env = dict(os.environ, CHAOS_TAG=self.tag)
        env.pop("AGENTSAGA_FAULT", None)
        if self.rng.random() < 0.35:
            pool_only = [p for p in FAULT_POINTS if p.startswith("pool.")]
            point = self.rng.choice(pool_only if self.rng.random() < 0.4 else FAULT_POINTS)
            env["AGENTSAGA_FAULT"] = f"{point}:{self.rng.randint(1, 3)}"
            if self.verbose:
                print(f"    armed {env['AGENTSAGA_FAULT']}")
        return env

    # --- one round -----------------------------------------------------------------------------

    def round(self, number: int) -> None:
        before = capture(self.repo)
        known = {r["run_id"] for r in self.runs()}
        gate = self.rng.random() < 0.4
        pipe = str(self.tools / ("gate.yml" if gate else "plain.yml"))
        two = self.rng.random() < 0.3
        print(f"round {number}: {'gate' if gate else 'plain'}{', two runs' if two else ''}")
        starters = [
            subprocess.Popen(
                [sys.executable, "-m", "agentsaga", "run", pipe],
                cwd=self.repo,
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2 if two else 1)
        ]
        for proc in starters:
            kill = self.rng.random() < 0.6
            try:
                out, _ = proc.communicate(timeout=self.kill_time() if kill else None)
                if "Traceback" in out:
                    self.problem(f"traceback from run:\n{out}")
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                self.kills += 1
        new = [r["run_id"] for r in self.runs() if r["run_id"] not in known]
        for run_id in new:
            self.settle(run_id)
        self.check_round(before, new)

    def settle(self, run_id: str) -> None:
        """Drive a run to success (killing resume/approve on the way), then roll it back
        (killing rollback on the way)."""
        for _ in range(self.rng.randrange(3)):
            cmd = self.rng.choice(["resume", "rollback"])
            self.cli(cmd, run_id, kill_after=self.kill_time())
        status = self.status(run_id)
        if status not in ("rolled_back", "rolling_back", "rollback_failed"):
            for _ in range(6):
                code, out = self.cli("resume", run_id)
                status = self.status(run_id)
                if status == "waiting":
                    self.at_gate(run_id)
                    status = self.status(run_id)
                if status in ("succeeded", "rolled_back"):
                    break
            if status == "running":
                self.problem(f"{run_id} still running after resume")
            if status not in ("succeeded", "rolled_back"):
                self.problem(f"{run_id} ended {status} after resume:\n{out}")
            if status == "succeeded":
                self.check_ledger(run_id, applied=1)
        if self.rng.random() < 0.6:
            self.cli("rollback", run_id, kill_after=self.kill_time())
        code, out = self.cli("rollback", run_id)
        if code == 2 and "--discard-edits" in out:
            code, out = self.cli("rollback", run_id, "--discard-edits")
        if code == 3 and "edits made at gate" in out:
            # An approved person's edits are a commit of theirs: rollback stops at it (by
            # design), --force goes past it (the edits stay saved under a ref).
            code, out = self.cli("rollback", run_id, "--force")
        if self.status(run_id) != "rolled_back":
            self.problem(f"{run_id} not rolled back (exit {code}):\n{out}")
        self.check_ledger(run_id, applied=0)
        self.check_usage(run_id)

    def at_gate(self, run_id: str) -> None:
        """A person at the gate: sometimes edits the worktree, then approves or rejects,
        each possibly killed."""
        worktree = self.repo / ".agentsaga" / "worktrees" / run_id
        if self.rng.random() < 0.3 and worktree.is_dir():
            (worktree / "reviewer.txt").write_text("a person's note\n")
        for _ in range(4):
            if self.status(run_id) != "waiting":
                return
            kill = self.kill_time() if self.rng.random() < 0.5 else None
            if self.rng.random() < 0.7:
                self.cli("approve", run_id, kill_after=kill)
            else:
                code, out = self.cli("reject", run_id, "--comment", "again", kill_after=kill)
                if code == 2 and "--discard-edits" in out:
                    self.cli("reject", run_id, "--comment", "again", "--discard-edits")

    def status(self, run_id: str) -> str:
        code, out = self.cli("show", run_id, "--json")
        if code != 0:
            self.problem(f"show {run_id} exit {code}: {out}")
            return "?"
        return str(json.loads(out)["status"])

    # --- invariants ------------------------------------------------------------------------------

    def check_ledger(self, run_id: str, applied: int) -> None:
        ledger = self.tools / "ledger.log"
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        live: list[str] = []
        for line in lines:
            what, key = line.split(" ", 1)
            if not key.startswith(run_id + ":"):
                continue
            if what == "deploy":
                if live:
                    self.problem(f"{key} deployed while {live} still applied")
                live.append(key)
            elif key in live:
                live.remove(key)
        if len(live) != applied:
            self.problem(f"{run_id}: {len(live)} deploys applied, expected {applied}: {live}")

    def check_usage(self, run_id: str) -> None:
        code, out = self.cli("show", run_id, "--json")
        doc = json.loads(out)
        total = sum(
            a["usage"]["total"] for s in doc["steps"] for a in s["attempts"] if a.get("usage")
        )
        if total != doc["usage"]["total"]:
            self.problem(f"{run_id}: run usage {doc['usage']['total']} != attempts' {total}")

    def check_round(self, before: dict[str, Any], new: list[str]) -> None:
        after = capture(self.repo)
        # A person's edits saved at a gate stay (by design): not a difference.
        for state in (before, after):
            state["refs"] = [r for r in state["refs"] if "/reviewer-edits-" not in r]
        for key in before:
            if before[key] != after[key]:
                self.problem(
                    f"repository {key} differs after rollback:\n{before[key]}\n{after[key]}"
                )
        violations = self.tools / "violations.log"
        if violations.exists() and violations.read_text():
            self.problem("pooled worktree leftovers:\n" + violations.read_text())
            violations.write_text("")
        pool = self.repo / ".agentsaga" / "pool"
        entries = (
            [p.name for p in pool.iterdir() if p.is_dir() and p.name != "claims"]
            if pool.is_dir()
            else []
        )
        claims = list((pool / "claims").iterdir()) if (pool / "claims").is_dir() else []
        if len(entries) > 2 or claims:
            self.problem(f"pool: entries {entries}, claims {[c.name for c in claims]}")
        for r in self.runs():
            if r["status"] == "running":
                self.problem(f"{r['run_id']} is running with no command alive")
        self.check_processes()
        print(f"  runs {new}, pool {len(entries)} entries, kills so far {self.kills}")

    def check_processes(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            alive = []
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or int(pid) == os.getpid():
                    continue
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                if f"CHAOS_TAG={self.tag}".encode() in environ and not cmdline.startswith(b"rm "):
                    alive.append(f"{pid}: {cmdline.decode(errors='replace')}")
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if alive:
            self.problem(f"processes left running: {alive}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    print(f"seed {seed}")
    root = Path(tempfile.mkdtemp(prefix="agentsaga-chaos-"))
    chaos = Chaos(root, random.Random(seed), verbose=True)
    git(chaos.repo, "status")
    end = time.monotonic() + args.minutes * 60
    number = 0
    while time.monotonic() < end:
        number += 1
        chaos.round(number)
    print(f"{number} rounds, {chaos.kills} kills, {len(chaos.problems)} problems (seed {seed})")
    print(f"folder: {root}")
    if not args.keep and not chaos.problems:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return 1 if chaos.problems else 0


if __name__ == "__main__":
    sys.exit(main())
