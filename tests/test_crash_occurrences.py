"""Crash injection at every OCCURRENCE of every fault point (issue 10): ``point:n`` for
every n that a clean run (and a clean rollback) reaches, not one n per point name.

``test_crash_sweep.py`` kills at chosen labels over a pipeline whose LLM steps go through
the real SDK. This sweep is exhaustive instead, so it runs the same five steps with the
``scripted`` provider (no SDK import, no server): every store transaction of the run,
every git commit, every step boundary and every compensation boundary is a kill point,
forward and during rollback. After each kill, ``resume`` must finish the run with each
effect applied once (the ledger the commands write, and the run branch), and
``rollback`` (from a copy of the crashed world) must restore the repository ref for ref
and byte for byte; a rollback killed at any occurrence must finish on the next
``rollback``. The table is printed with ``-s``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.gitstate import capture
from tests.test_crash_sweep import (
    TRACER,
    RoutingLLM,
    World,
    branch_problems,
    ledger_problems,
    restore,
    snapshot,
)

#: ``World.agentsaga`` forks from one pre-imported process (``tests/zygote.py``): hundreds of
#: launches without an interpreter start and the imports each.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fork_server")]


def occurrences(trace: list[str]) -> list[tuple[str, str]]:
    """``(point:n, label)`` for every hit in the trace, in order."""
    seen: Counter[str] = Counter()
    out = []
    for entry in trace:
        point = entry.split("@")[0]
        seen[point] += 1
        out.append((f"{point}:{seen[point]}", entry))
    return out


def traced(world: World, tracer: Path, trace: Path, *args: str) -> list[str]:
    done = world.agentsaga(*args, wrapper=tracer, extra_env={"TRACE_FILE": str(trace)})
    assert done.returncode == 0, done.stderr
    return trace.read_text().split()


def fresh(root: Path, server: RoutingLLM) -> World:
    """A new world at ``root``: created once (git init, commits), then copied from that
    template, byte for byte and at the same absolute path, for every later case."""
    template = root.with_name(root.name + "-template")
    world = World(root, server, scripted=True)
    if template.exists():
        restore(template, root)
    else:
        shutil.rmtree(root, ignore_errors=True)
        world.create()
        snapshot(root, template)
    return world


def _short(proc: Any) -> str:
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return lines[-1][:160] if lines else ""


def after_resume(world: World, run_id: str) -> list[str]:
    proc = world.agentsaga("resume", run_id)
    problems = [] if proc.returncode == 0 else [f"resume exit {proc.returncode}: {_short(proc)}"]
    problems += ledger_problems(world.lines(world.ledger), final_applied=1)
    if proc.returncode == 0:
        problems += branch_problems(world, run_id)
    if world.integrity() != "ok":
        problems.append(f"integrity: {world.integrity()}")
    return problems


def after_rollback(world: World, run_id: str, before: dict[str, Any]) -> list[str]:
    proc = world.agentsaga("rollback", run_id)
    problems = [] if proc.returncode == 0 else [f"rollback exit {proc.returncode}: {_short(proc)}"]
    problems += ledger_problems(world.lines(world.ledger), final_applied=0)
    after = capture(world.repo)
    problems += [f"repository differs in {k}" for k in before if before[k] != after[k]]
    if world.integrity() != "ok":
        problems.append(f"integrity: {world.integrity()}")
    return problems


def report(title: str, rows: list[tuple[str, str, list[str]]]) -> str:
    lines = [f"\n{title}: {len(rows)} occurrences"]
    lines += [f"  {fault:<24}{label:<52}{'; '.join(p) or 'ok'}" for fault, label, p in rows]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def server() -> Any:
    with RoutingLLM() as srv:  # unused by the scripted steps; World wants a base URL
        yield srv


@pytest.mark.timeout(1800)
def test_a_kill_at_every_occurrence_of_the_run_then_resume_or_rollback(
    server: RoutingLLM, tmp_path: Path
) -> None:
    tracer = tmp_path / "tracer.py"
    tracer.write_text(TRACER)
    clean = fresh(tmp_path / "clean", server)
    trace = traced(clean, tracer, tmp_path / "trace-run", "run", str(clean.pipeline))
    cases = occurrences(trace)
    assert len(cases) >= 60, cases  # every transaction, commit and boundary of 5 steps
    rows = []
    for fault, label in cases:
        world = fresh(tmp_path / "w", server)
        before = capture(world.repo)
        crashed = world.agentsaga("run", str(world.pipeline), fault=fault)
        if crashed.returncode != -9:
            rows.append((fault, label, [f"not killed: exit {crashed.returncode}"]))
            continue
        run_ids = world.run_ids()
        if not run_ids:
            after = capture(world.repo)
            problems = [f"repository differs in {k}" for k in before if before[k] != after[k]]
            problems += ["ledger written"] if world.lines(world.ledger) else []
            rows.append((fault, label, problems))
            continue
        (run_id,) = run_ids
        snap = tmp_path / "snap"
        snapshot(world.root, snap)
        problems = [f"resume: {p}" for p in after_resume(world, run_id)]
        restore(snap, world.root)
        problems += [f"rollback: {p}" for p in after_rollback(world, run_id, before)]
        rows.append((fault, label, problems))
    text = report("forward kills", rows)
    print(text)
    assert not any(p for _, _, p in rows), text


@pytest.mark.timeout(1800)
def test_a_kill_at_every_occurrence_of_the_rollback_then_rollback_again(
    server: RoutingLLM, tmp_path: Path
) -> None:
    tracer = tmp_path / "tracer.py"
    tracer.write_text(TRACER)
    world = fresh(tmp_path / "w", server)
    before = capture(world.repo)
    done = world.agentsaga("run", str(world.pipeline))
    assert done.returncode == 0, done.stderr
    (run_id,) = world.run_ids()
    snap = tmp_path / "snap"
    snapshot(world.root, snap)
    trace = traced(world, tracer, tmp_path / "trace-rollback", "rollback", run_id)
    cases = occurrences(trace)
    assert len(cases) >= 25, cases
    rows = []
    for fault, label in cases:
        restore(snap, world.root)
        crashed = world.agentsaga("rollback", run_id, fault=fault)
        if crashed.returncode != -9:
            rows.append((fault, label, [f"not killed: exit {crashed.returncode}"]))
            continue
        rows.append((fault, label, after_rollback(world, run_id, before)))
    text = report("rollback kills", rows)
    print(text)
    assert not any(p for _, _, p in rows), text
