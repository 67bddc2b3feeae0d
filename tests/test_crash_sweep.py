"""Crash injection at every named point (issue 6, part 1): kill -9, then ``resume`` and
``rollback`` must each bring the run to a correct state.

The scenario is a real git repository, the real anthropic SDK against the loopback server,
and four kinds of side effect:

    setup   shell, ``commit: true``, appends ``do <key>`` to a ledger OUTSIDE the repository;
            compensation appends ``undo <key>``
    plan    one LLM call (provider anthropic, model claude-sonnet-4-6)
    write   one LLM call whose reply is a SEARCH/REPLACE block; undone by ``git: reset``
    format  shell, ``commit: true``, edits a file in the repository; ``git: reset``
    deploy  deploy-like: ledger ``do <key>``, prints ``{"version": "v1"}``; ``run:`` revert

The commands are idempotent by key, as a careful user writes them: a step acts only if its
``AGENTSAGA_IDEMPOTENCY_KEY`` is not in the ledger yet, a compensation only if its key was
done and not yet undone. Every invocation is also logged to ``calls`` (raw, unguarded), so
the table shows how often agentsaga re-invoked a command after a crash.

Fault points are named by *label*, not by count: ``step.after_effect@write`` is resolved to
``AGENTSAGA_FAULT=step.after_effect:3`` by tracing one clean run and one clean rollback (a
wrapper records every point the process reaches and the step it was working on). A change
in the engine's order of operations moves the counts, not the test.

Each forward case crashes ``run`` once, copies the whole world (repository, store, ledger)
at the same absolute path, then checks ``resume`` on it, restores the copy and checks
``rollback`` on it. Each rollback case starts from a copy of one clean completed run,
crashes ``rollback``, and rolls back again. Run with ``-s`` to see the table.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import zygote
from tests.gitstate import capture, git, make_repo
from tests.llm_server import Behaviour, FakeLLMServer, RecordedRequest

#: ``World.agentsaga`` forks from one pre-imported process (``tests/zygote.py``): hundreds of
#: launches without an interpreter start and the imports each.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fork_server")]

KEY = "$AGENTSAGA_IDEMPOTENCY_KEY"
DO = (
    f'echo "call do {KEY}" >> "$CALLS"; '
    f'grep -qxF "do {KEY}" "$LEDGER" 2>/dev/null || echo "do {KEY}" >> "$LEDGER"'
)
UNDO = (
    f'echo "call undo {KEY} version=$DEPLOYED_VERSION" >> "$CALLS"; '
    f'if grep -qxF "do {KEY}" "$LEDGER" 2>/dev/null && ! grep -qxF "undo {KEY}" "$LEDGER"; '
    f'then echo "undo {KEY}" >> "$LEDGER"; fi'
)
EDIT_REPLY = "notes.txt\n<<<<<<< SEARCH\nhello\n=======\nhello world\n>>>>>>> REPLACE\n"
#: Steps whose side effect is in the ledger (the others' is in the repository).
LEDGER_STEPS = ("setup", "deploy")
LLM_STEPS = ("plan", "write")
TIMEOUT_S = 60


DEPLOY = DO + '; echo \'{"version": "v1"}\''


PLAN_REPLY = "Change hello to hello world."


def pipeline_text(ledger: Path, calls: Path, *, scripted: bool = False) -> str:
    """The five steps. ``scripted``: the LLM steps play their replies from the pipeline (the
    scripted provider: no SDK, no server), two each, since a replay after a kill asks again
    (test_crash_occurrences.py)."""
    q = json.dumps
    if scripted:
        name, defaults = "crash-occurrences", "{provider: scripted}"
    else:
        name = "crash-sweep"
        defaults = "{provider: anthropic, model: claude-sonnet-4-6, max_tokens: 256}"

    def replies(text: str) -> str:
        return f"\n    replies: {q([text] * 2)}" if scripted else ""

    return f"""\
name: {name}
defaults: {defaults}
env: {{LEDGER: {q(str(ledger))}, CALLS: {q(str(calls))}}}
steps:
  - id: setup
    kind: shell
    commit: true
    run: {q(DO)}
    compensate: {{run: {q(UNDO)}}}
  - id: plan
    kind: plan
    prompt: "PLAN-STEP: change hello to hello world"{replies(PLAN_REPLY)}
  - id: write
    kind: write
    prompt: "WRITE-STEP: ${{{{ steps.plan.output.text }}}}"{replies(EDIT_REPLY)}
  - id: format
    kind: shell
    commit: true
    run: "echo formatted > fmt.txt"
    compensate: {{git: reset}}
  - id: deploy
    kind: deploy
    run: {q(DEPLOY)}
    compensate:
      run: {q(UNDO)}
      env: {{DEPLOYED_VERSION: "${{{{ steps.deploy.output.json.version }}}}"}}
"""


class RoutingLLM(FakeLLMServer):
    """Answers by prompt, not by queue order: after a crash the same step may ask again,
    and what it asks decides what it gets."""

    def _next(self, request: RecordedRequest) -> Behaviour:
        with self._lock:
            self.requests.append(request)
        if "WRITE-STEP" in json.dumps(request.body):
            return Behaviour("reply", text=EDIT_REPLY, usage={"input": 40, "output": 20})
        return Behaviour("reply", text=PLAN_REPLY, usage={"input": 30, "output": 8})

    def per_step(self, since: int = 0) -> dict[str, int]:
        with self._lock:
            bodies = [json.dumps(r.body) for r in self.requests[since:]]
        return {
            "plan": sum("PLAN-STEP" in b for b in bodies),
            "write": sum("WRITE-STEP" in b for b in bodies),
        }


# --- the world: repository, ledger, store -------------------------------------------------


@dataclass
class World:
    root: Path
    server: RoutingLLM
    scripted: bool = False  # the LLM steps' replies in the pipeline (``pipeline_text``)

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    @property
    def calls(self) -> Path:
        return self.root / "calls"

    @property
    def pipeline(self) -> Path:
        return self.root / "pipeline.yml"

    @property
    def db(self) -> Path:
        return self.repo / ".agentsaga" / "state.db"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        make_repo(self.root, {"notes.txt": "hello\n", "README.md": "demo\n"})
        self.pipeline.write_text(pipeline_text(self.ledger, self.calls, scripted=self.scripted))

    def env(self, fault: str | None = None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("AGENTSAGA_STORE", "AGENTSAGA_FAULT", "AGENTSAGA_HOME")
        }
        # The default store, <repo>/.agentsaga/state.db, as a user has it.
        env.update(
            ANTHROPIC_BASE_URL=self.server.url, ANTHROPIC_API_KEY="sk-ant-test-000000", NO_COLOR="1"
        )
        if fault:
            env["AGENTSAGA_FAULT"] = fault
        return env

    def agentsaga(
        self,
        *args: str,
        fault: str | None = None,
        wrapper: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env(fault), **(extra_env or {})}
        if wrapper is None:
            return zygote.launch(list(args), self.repo, env, TIMEOUT_S)
        return subprocess.run(
            [sys.executable, str(wrapper), *args],
            cwd=self.repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def lines(self, path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the store without touching it: a copy (with its WAL) opened elsewhere, so
        the crashed state stays exactly as the killed process left it."""
        if not self.db.exists():
            return []
        scratch = self.root.parent / (self.root.name + "-dbcopy")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.db) + suffix)
            if src.exists():
                shutil.copy2(src, scratch / ("state.db" + suffix))
        conn = sqlite3.connect(scratch / "state.db")
        try:
            return list(conn.execute(sql))
        finally:
            conn.close()
            shutil.rmtree(scratch, ignore_errors=True)

    def run_ids(self) -> list[str]:
        return [r[0] for r in self.query("SELECT id FROM runs ORDER BY created_at")]

    def recorded_replies(self) -> dict[str, int]:
        rows = self.query(
            "SELECT step_id, COUNT(*) FROM llm_calls WHERE status = 'ok' GROUP BY step_id"
        )
        return {step: n for step, n in rows}

    def integrity(self) -> str:
        rows = self.query("PRAGMA integrity_check")
        return rows[0][0] if rows else "no database"


def snapshot(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)


def restore(snap: Path, live: Path) -> None:
    """Put a copied world back at its original absolute path (the store and the worktree's
    ``.git`` file hold absolute paths)."""
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(snap, live, symlinks=True)


# --- tracing: which point is reached when, for which step ---------------------------------

TRACER = """
import os, sys
import agentsaga.faults as faults

_orig = faults.point
_out = open(os.environ["TRACE_FILE"], "a")

def _step_of(frame):
    while frame is not None:
        loc = frame.f_locals
        step = loc.get("step")
        if step is not None and hasattr(step, "kind") and hasattr(step, "id"):
            return step.id
        attempt = loc.get("attempt")
        if attempt is not None and hasattr(attempt, "step_id"):
            return attempt.step_id
        owner = loc.get("self")
        if owner is not None and isinstance(getattr(owner, "step_id", None), str):
            return owner.step_id
        frame = frame.f_back
    return ""

def _store_method(frame):
    found = ""
    while frame is not None:
        code = frame.f_code
        if "agentsaga/store" in code.co_filename and not code.co_name.startswith("_") \\
                and code.co_name not in ("transaction", "__exit__", "__enter__"):
            found = code.co_name  # the outermost public store method
        frame = frame.f_back
    return found

def point(name):
    frame = sys._getframe(1)
    label = name
    if name == "store.in_write":
        label += "@" + (_store_method(frame) or "?")
        step = _step_of(frame)
        if step:
            label += "[" + step + "]"
    else:
        label += "@" + _step_of(frame)
    _out.write(label + "\\n")
    _out.flush()
    _orig(name)

faults.point = point
sys.argv = ["agentsaga", *sys.argv[1:]]
from agentsaga.cli import main
main()
"""


def resolve(trace: list[str], label: str) -> str:
    """``point@what[#k]`` -> ``point:n``: n counts every hit of that point up to the k-th
    hit carrying this label."""
    wanted, _, nth = label.partition("#")
    k = int(nth or 1)
    point = wanted.split("@")[0]
    seen = hits = 0
    for entry in trace:
        if entry.split("@")[0] != point:
            continue
        seen += 1
        if entry == wanted:
            hits += 1
            if hits == k:
                return f"{point}:{seen}"
    raise AssertionError(f"{label} is never reached; the trace has: {sorted(set(trace))}")


# --- the cases ------------------------------------------------------------------------------

FORWARD = [
    "step.before_record@setup",
    "step.after_record@setup",
    "step.after_record@write",
    "step.after_effect@setup",
    "step.after_effect@plan",
    "step.after_effect@write",
    "step.after_effect@format",
    "step.after_effect@deploy",
    "command.started@deploy",
    "step.after_checkpoint@write",
    "llm.before_record@plan",
    "llm.after_reply@plan",
    "llm.after_reply@write",
    "git.in_commit@write",
    "git.in_commit@format",
    "store.in_write@create_run",
    "store.in_write@update_run#2",
    "store.in_write@record_llm_call[write]",
    "store.in_write@finish_attempt[write]",
    "store.in_write@finish_attempt[deploy]",
]
ROLLBACK = [
    "comp.before@deploy",
    "comp.before@write",
    "comp.before@setup",
    "comp.after_effect@deploy",
    "comp.after_effect@write",
    "comp.after_effect@setup",
    "comp.between@deploy",
    "comp.between@format",
    "git.in_reset@format",
    "git.in_reset@write",
    "store.in_write@start_compensation[deploy]",
    "store.in_write@finish_compensation[format]",
    "store.in_write@update_run#1",
]

#: label -> {"crash": ..., "resume": ..., "rollback": ...}: the table printed at the end.
TABLE: dict[str, dict[str, str]] = {}


@dataclass
class Baseline:
    root: Path
    server: RoutingLLM
    run_trace: list[str]
    rollback_trace: list[str]
    before: dict[str, Any]
    snap: Path
    live: Path
    notes: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def server() -> Iterator[RoutingLLM]:
    with RoutingLLM() as srv:
        yield srv


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, server: RoutingLLM) -> Iterator[Baseline]:
    """One clean run and one clean rollback, traced; the completed run is kept as a copy
    that every rollback case starts from."""
    root = tmp_path_factory.mktemp("crash-base")
    world = World(root / "w", server)
    world.create()
    before = capture(world.repo)
    tracer = root / "tracer.py"
    tracer.write_text(TRACER)
    run_trace_file, rb_trace_file = root / "trace-run", root / "trace-rollback"
    done = world.agentsaga(
        "run", str(world.pipeline), wrapper=tracer, extra_env={"TRACE_FILE": str(run_trace_file)}
    )
    assert done.returncode == 0, done.stderr
    snap = root / "snap"
    snapshot(world.root, snap)
    (run_id,) = world.run_ids()
    rolled = world.agentsaga(
        "rollback", run_id, wrapper=tracer, extra_env={"TRACE_FILE": str(rb_trace_file)}
    )
    base = Baseline(
        root,
        server,
        run_trace_file.read_text().split(),
        rb_trace_file.read_text().split(),
        before,
        snap,
        world.root,
    )
    if rolled.returncode != 0:
        base.notes.append("clean rollback failed: " + rolled.stderr.strip().splitlines()[-1])
    yield base
    _print_table(base)


def _print_table(base: Baseline) -> None:
    if not TABLE:
        return
    width = max(len(k) for k in TABLE) + 2
    lines = [
        "",
        "crash sweep: fault point x outcome",
        "-" * 110,
        f"{'point@step':<{width}}{'fault':<26}{'resume':<44}rollback",
        "-" * 110,
    ]
    for label in FORWARD + ROLLBACK:
        row = TABLE.get(label)
        if row is None:
            continue
        lines.append(f"{label:<{width}}{row['fault']:<26}{row['resume']:<44}{row['rollback']}")
    lines += ["-" * 110, *base.notes, ""]
    print("\n".join(lines))


# --- the checks -------------------------------------------------------------------------------


def ledger_problems(lines: list[str], final_applied: int) -> list[str]:
    """The saga's promises, read from the ledger the commands wrote."""
    problems = []
    for line, n in Counter(lines).items():
        if n > 1:
            problems.append(f"{line!r} {n} times")
    applied: dict[str, str | None] = {s: None for s in LEDGER_STEPS}
    for line in lines:
        verb, _, key = line.partition(" ")
        step = key.split(":")[1]
        if verb == "do":
            if applied.get(step) is not None:
                problems.append(
                    f"{step} applied again ({key}) while {applied[step]} was not undone"
                )
            applied[step] = key
        elif verb == "undo":
            if applied.get(step) != key:
                problems.append(f"undo {key} without its do being in effect")
            applied[step] = None
    for step, key in applied.items():
        if (key is not None) != bool(final_applied):
            state = "still applied" if key else "not applied"
            problems.append(f"{step} {state} at the end")
    return problems


def call_notes(calls: list[str]) -> str:
    """How often each command was invoked (a repeat is fine: the key makes it idempotent)."""
    repeats = [
        f"{c.split()[1]} {c.split()[2].split(':')[1]} x{n}"
        for c, n in Counter(line.rsplit(" version=", 1)[0] for line in calls).items()
        if n > 1
    ]
    return ("; re-invoked: " + ", ".join(repeats)) if repeats else ""


def branch_problems(world: World, run_id: str) -> list[str]:
    branches = git(
        world.repo, "for-each-ref", "--format=%(refname:short)", f"refs/heads/agentsaga/{run_id}"
    ).split()
    if len(branches) != 1:
        return [f"run branch: {branches}"]
    branch = branches[0]
    problems = []
    commits = int(git(world.repo, "rev-list", "--count", f"main..{branch}").strip())
    if commits != 2:  # write, format: one each, never twice
        problems.append(f"{commits} commits on the run branch, expected 2")
    if git(world.repo, "show", f"{branch}:notes.txt") != "hello world\n":
        problems.append("notes.txt not edited exactly once")
    if git(world.repo, "show", f"{branch}:fmt.txt", check=False) != "formatted\n":
        problems.append("fmt.txt missing")
    return problems


def _short(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return lines[-1][:200] if lines else ""


def check_resume(
    world: World, run_id: str, sent: dict[str, int], recorded: dict[str, int]
) -> tuple[str, list[str]]:
    mark = len(world.server.requests)
    proc = world.agentsaga("resume", run_id)
    problems = []
    if proc.returncode != 0:
        problems.append(f"resume exit {proc.returncode}: {_short(proc)}")
    problems += ledger_problems(world.lines(world.ledger), final_applied=1)
    if proc.returncode == 0:
        problems += branch_problems(world, run_id)
    again = world.server.per_step(mark)
    for step in LLM_STEPS:
        # Only a reply that never reached the call log may be asked for again.
        in_flight = sent.get(step, 0) - recorded.get(step, 0)
        expected = 1 + in_flight if sent.get(step, 0) else 1
        total = sent.get(step, 0) + again[step]
        if total != expected:
            problems.append(f"{step}: {total} LLM requests, expected {expected}")
    if world.integrity() != "ok":
        problems.append(f"integrity: {world.integrity()}")
    asked = sum(again.values())
    summary = (
        f"exit 0, {asked} LLM call(s) in resume"
        if not problems
        else "FAIL " + "; ".join(p[:90] for p in problems)
    )
    return summary + call_notes(world.lines(world.calls)), problems


def check_rollback(
    world: World, run_id: str, before: dict[str, Any], label: str = ""
) -> tuple[str, list[str]]:
    mark = len(world.server.requests)
    proc = world.agentsaga("rollback", run_id)
    problems = []
    if proc.returncode != 0:
        problems.append(f"rollback exit {proc.returncode}: {_short(proc)}")
    problems += ledger_problems(world.lines(world.ledger), final_applied=0)
    after = capture(world.repo)
    if after != before:
        diff = [k for k in before if before[k] != after[k]]
        problems.append(f"repository differs in {diff}")
    if len(world.server.requests) != mark:
        problems.append("rollback called the LLM")
    if world.integrity() != "ok":
        problems.append(f"integrity: {world.integrity()}")
    summary = (
        "exit 0, repo restored" if not problems else "FAIL " + "; ".join(p[:90] for p in problems)
    )
    return summary + call_notes(world.lines(world.calls)), problems


# --- the sweep --------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label", FORWARD)
def test_crash_during_run_then_resume_or_rollback(
    label: str, baseline: Baseline, tmp_path: Path
) -> None:
    fault = resolve(baseline.run_trace, label)
    world = World(tmp_path / "w", baseline.server)
    world.create()
    before = capture(world.repo)
    mark = len(world.server.requests)
    crashed = world.agentsaga("run", str(world.pipeline), fault=fault)
    row = TABLE.setdefault(label, {"fault": fault, "resume": "-", "rollback": "-"})
    assert crashed.returncode == -9, f"{fault} did not kill the run: {crashed.stderr}"
    sent = world.server.per_step(mark)
    recorded = world.recorded_replies()
    run_ids = world.run_ids()
    if not run_ids:
        # Killed before the run's first record committed: nothing happened to undo.
        after = capture(world.repo)
        problems = [
            f"repository differs in {k}: {after[k]}" for k in before if before[k] != after[k]
        ]
        problems += ["ledger written"] if world.lines(world.ledger) else []
        row["resume"] = row["rollback"] = (
            "no run recorded: nothing to do" if not problems else "FAIL " + "; ".join(problems)
        )
        assert not problems
        return
    (run_id,) = run_ids
    snap = tmp_path / "snap"
    snapshot(world.root, snap)

    row["resume"], resume_problems = check_resume(world, run_id, sent, recorded)
    restore(snap, world.root)
    row["rollback"], rollback_problems = check_rollback(world, run_id, before)
    assert not resume_problems and not rollback_problems, row


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label", ROLLBACK)
def test_crash_during_rollback_then_rollback_again(label: str, baseline: Baseline) -> None:
    fault = resolve(baseline.rollback_trace, label)
    restore(baseline.snap, baseline.live)
    world = World(baseline.live, baseline.server)
    (run_id,) = world.run_ids()
    crashed = world.agentsaga("rollback", run_id, fault=fault)
    row = TABLE.setdefault(
        label, {"fault": fault, "resume": "n/a (rollback phase)", "rollback": "-"}
    )
    assert crashed.returncode == -9, f"{fault} did not kill the rollback: {crashed.stderr}"
    row["rollback"], problems = check_rollback(world, run_id, baseline.before)
    assert not problems, row


def test_every_fault_point_is_swept(baseline: Baseline) -> None:
    """The sweep names every point faults.py declares, and each is reached."""
    from agentsaga import faults

    declared = {
        line.split()[0]
        for line in (faults.__doc__ or "").splitlines()
        if line.startswith("    ") and "." in line.split()[0]
    }
    swept = {label.split("@")[0] for label in FORWARD + ROLLBACK}
    reached = {e.split("@")[0] for e in baseline.run_trace + baseline.rollback_trace}
    # Points this pipeline never reaches are swept by their own suites: each must name it.
    for point, suite in SWEPT_ELSEWHERE.items():
        assert point in (Path(__file__).parent / suite).read_text(), (point, suite)
    assert declared == swept | set(SWEPT_ELSEWHERE), declared ^ (swept | set(SWEPT_ELSEWHERE))
    assert declared - set(SWEPT_ELSEWHERE) <= reached, declared - reached


#: Fault points outside this sweep's pipeline (no agent step, no gate), and the test file
#: that kills a process at each.
SWEPT_ELSEWHERE = {
    "agent.after_reply": "test_agent_step.py",
    "agent.in_tool": "test_agent_step.py",
    "agent.after_tool": "test_agent_step.py",
    "agent.before_turn": "test_agent_step.py",
    "agent.after_turn": "test_agent_step.py",
    "llm.before_record": "test_agent_step.py",
    "gate.after_decision": "test_gates.py",
    "workspace.after_intent": "test_git_workspace.py",
    "workspace.after_stash": "test_git_workspace.py",
    "pool.release_after_move": "test_worktree_pool.py",
    "pool.claim_after_intent": "test_worktree_pool.py",
    "pool.claim_in_move": "test_worktree_pool.py",
    "pool.claim_after_move": "test_worktree_pool.py",
    "pool.claim_before_done": "test_worktree_pool.py",
}


def test_rollback_of_a_committing_shell_step_with_a_run_compensation(
    server: RoutingLLM, tmp_path: Path
) -> None:
    """No crash at all: a ``shell`` step with ``commit: true`` whose compensation is a
    ``run:`` command (the natural one for a command with an outside effect). Rollback must
    restore the repository; the run's own commit on its own branch is not "a person's"."""
    world = World(tmp_path / "w", server)
    world.create()
    world.pipeline.write_text(
        textwrap.dedent(f"""\
        name: committing-shell
        env: {{LEDGER: {json.dumps(str(world.ledger))}, CALLS: {json.dumps(str(world.calls))}}}
        steps:
          - id: gen
            kind: shell
            commit: true
            run: {json.dumps(DO + "; echo generated > gen.txt")}
            compensate: {{run: {json.dumps(UNDO)}}}
        """)
    )
    before = capture(world.repo)
    done = world.agentsaga("run", str(world.pipeline))
    assert done.returncode == 0, done.stderr
    (run_id,) = world.run_ids()
    summary, problems = check_rollback(world, run_id, before)
    assert not problems, summary
