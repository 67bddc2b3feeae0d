"""The crash tax of a 40-turn agent step: restart the step vs resume at the turn.

Measured by running the installed command and killing it, not by a formula. Each trial:

1. ``agentsaga run`` of a one-step pipeline: an ``agent`` step of 40 turns (the scripted
   provider, exact ``usage:`` per reply, growing with the conversation as a real one does:
   each turn re-reads the whole history from the prompt cache and adds its own tokens),
   killed by SIGKILL (``AGENTSAGA_FAULT=agent.after_tool:K``, or ``--point
   llm.before_record``: with turn K's reply in flight) inside turn K, drawn uniformly from
   1..40 with ``--seed``;
2. the same killed run recovered two ways, each in its own copy of the repository and store:
   * **resume at the turn**: ``agentsaga resume RUN`` (the conversation rebuilt from the
     record, the files reset to turn K-1's snapshot, turn K's reply served from the call
     log, the loop going on at turn K+1);
   * **restart the step**: ``agentsaga run`` again (the pipeline is this one step): the
     step begins again at turn 1 in a new run (the call memo is per run), as a durable
     engine that retries the whole activity, or an agent framework that restarts the
     conversation, would.

Tokens are read back from each store's call log (every call the provider was paid for).
Tax = tokens paid / tokens of one uninterrupted run - 1. The time from the kill to the
step's completion is given too.

Run: python benchmarks/agent_tax.py [--trials 10] [--seed 7] [--point llm.before_record]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import agentsaga_exe, machine  # noqa: E402

TURNS = 40
NEW_TOKENS = 600  # what each turn adds to the conversation (its reply and tool result)
BASE_PROMPT = 3000  # system prompt + tools + task


def turn_reply(t: int) -> dict[str, object]:
    """Turn t's reply: a tool call, and the usage a real API would report for it."""
    if t == TURNS:
        call = {"tool": "finish", "args": {"summary": "done"}}
    elif t % 8 == 0:
        call = {"tool": "create_file", "args": {"path": f"notes/turn{t}.md", "content": f"{t}\n"}}
    elif t % 5 == 0:
        call = {"tool": "run_command", "args": {"argv": ["git", "log", "--oneline", f"-{t}"]}}
    elif t % 2 == 0:
        call = {"tool": "search", "args": {"pattern": f"def f{t % 7}"}}
    else:
        call = {"tool": "read_file", "args": {"path": "src/mod.py", "start_line": t}}
    history = BASE_PROMPT + NEW_TOKENS * (t - 1)
    return {**call, "usage": {"input": NEW_TOKENS, "output": 150, "cache_read": history}}


def pipeline(replies: list[dict[str, object]]) -> str:
    lines = [
        "name: agent-tax",
        "defaults: {provider: scripted, model: claude-sonnet-4-5}",
        "steps:",
        "  - id: fix",
        "    kind: agent",
        '    prompt: "Tidy src/mod.py"',
        "    commands: [[git, log]]",
        f"    max_turns: {TURNS}",
        "    replies:",
    ]
    lines += [f"      - {json.dumps(r)}" for r in replies]
    return "\n".join(lines) + "\n"


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "mod.py").write_text(
        "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(60))
    )
    setup = [
        ["init", "-q", "-b", "main"],
        ["config", "user.email", "bench@example.invalid"],
        ["config", "user.name", "bench"],
        ["add", "-A"],
        ["commit", "-qm", "init"],
    ]
    for args in setup:
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def agentsaga(repo: Path, *args: str, fault: str | None = None) -> int:
    env = dict(os.environ)
    env.pop("AGENTSAGA_FAULT", None)
    if fault:
        env["AGENTSAGA_FAULT"] = fault
    proc = subprocess.run([*agentsaga_exe(), *args], cwd=repo, env=env, capture_output=True)
    return proc.returncode


def paid_tokens(repo: Path) -> int:
    db = sqlite3.connect(repo / ".agentsaga" / "state.db")
    try:
        row = db.execute(
            "SELECT COALESCE(SUM(tokens_input + tokens_output + tokens_cache_read "
            "+ tokens_cache_write), 0) FROM llm_calls WHERE status = 'ok'"
        ).fetchone()
    finally:
        db.close()
    return int(row[0])


def run_id_of(repo: Path) -> str:
    db = sqlite3.connect(repo / ".agentsaga" / "state.db")
    try:
        return str(db.execute("SELECT id FROM runs ORDER BY created_at DESC").fetchone()[0])
    finally:
        db.close()


def turn_tokens(t: int) -> int:
    usage = turn_reply(t)["usage"]
    assert isinstance(usage, dict)
    return sum(int(v) for v in usage.values())


def trial(work: Path, k: int, point: str) -> dict[str, float]:
    turns = [turn_reply(t) for t in range(1, TURNS + 1)]
    out: dict[str, float] = {"k": k}
    for policy in ("resume", "restart"):
        # Each policy recovers its own killed run (the same run: the replies are scripted).
        repo = make_repo(work / policy)
        (repo / "pipeline.yml").write_text(pipeline(turns))
        code = agentsaga(repo, "run", "pipeline.yml", fault=f"{point}:{k}")
        if code != -9:
            raise SystemExit(f"turn {k}: expected a SIGKILL, the run exited {code}")
        args = ["resume", run_id_of(repo)]
        if policy == "restart":
            # The pipeline is this one step: restarting the step is starting it again.
            args = ["run", "pipeline.yml"]
        started = time.perf_counter()
        code = agentsaga(repo, *args)
        out[f"{policy}_s"] = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"turn {k}: {policy} exited {code}")
        # A reply lost in flight was billed but never reached the call log: added here.
        lost = turn_tokens(k) if point == "llm.before_record" else 0
        out[f"{policy}_tokens"] = paid_tokens(repo) + lost
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--point",
        choices=("agent.after_tool", "llm.before_record"),
        default="agent.after_tool",
        help="where in turn K to kill: after its tool ran (its reply in the call log), or "
        "with its reply in flight (billed, never logged)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    clean = sum(turn_tokens(t) for t in range(1, TURNS + 1))
    rows = []
    for n in range(args.trials):
        k = rng.randint(1, TURNS)
        with tempfile.TemporaryDirectory(prefix="agent-tax-") as tmp:
            row = trial(Path(tmp), k, args.point)
        rows.append(row)
        print(
            f"trial {n + 1:>2}: killed in turn {k:>2}: resume {row['resume_tokens']:>9,.0f} "
            f"tokens ({row['resume_s']:.2f} s), restart {row['restart_tokens']:>9,.0f} "
            f"({row['restart_s']:.2f} s)",
            flush=True,
        )
    print(f"\n{machine()}; {args.trials} trials, seed {args.seed}, killed at {args.point}")
    print(f"one uninterrupted run: {clean:,} tokens over {TURNS} turns")
    for policy in ("resume", "restart"):
        taxes = [r[f"{policy}_tokens"] / clean - 1 for r in rows]
        secs = [r[f"{policy}_s"] for r in rows]
        print(
            f"{policy:>8}: crash tax mean {statistics.mean(taxes):6.1%}, "
            f"max {max(taxes):6.1%}; kill-to-done median {statistics.median(secs):.2f} s"
        )


if __name__ == "__main__":
    main()
