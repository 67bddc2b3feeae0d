"""Crash injection for the durability tests: ``AGENTSAGA_FAULT=<point>[:<n>]``.

When the variable names a point, the process SIGKILLs itself the n-th time (default: the
first) it reaches that point — no cleanup, no finally blocks, as a power cut or an OOM kill
would. Unset (always, outside tests), ``point()`` is one dictionary lookup. The points:

    step.before_record    a step is about to be recorded as running
    step.after_record     recorded running, nothing done yet
    command.started       a command has started (its attempt's token recorded before)
    step.after_effect     the step's side effect is done, its checkpoint not yet written
    step.after_checkpoint the checkpoint is written, the next step not started
    llm.before_record     a reply has arrived (paid for), not yet in the call log
    llm.after_reply       a reply is in the call log, the step has not used it yet
    agent.after_reply     an agent turn's reply is in the call log, no tool has run
    agent.in_tool         a tool call is recorded as started, its effect not yet done
    agent.after_tool      a tool call's effect is done, its result not yet recorded
    agent.before_turn     the turn's results are recorded, its end (snapshot) not yet
    agent.after_turn      the turn is recorded with its snapshot, the next call not made
    workspace.after_intent a run's workspace is recorded as intended, nothing created yet
    workspace.after_stash  --allow-dirty: the user's changes stashed, the stash not recorded
    git.in_commit         files staged on the run branch, the commit not made
    pool.release_after_move  a worktree's folder moved into the pool, its index not yet
    pool.claim_after_intent  a claim of a pooled worktree recorded, nothing moved yet
    pool.claim_in_move       the run's path registered (locked), its folder not there yet
    pool.claim_after_move    the pooled folder at the run's path, not yet cleaned
    pool.claim_before_done   cleaned and proven clean, the claim not yet cleared
    git.in_reset          a reset half done: the tree restored, the branch not moved
    comp.before           a compensation is recorded as running, not yet run
    comp.after_effect     the compensation ran, its success not yet recorded
    comp.between          one compensation recorded, the next not started
    store.in_write        inside a store transaction, before COMMIT
    gate.after_decision   a gate's decision is recorded, the run not yet driven on
"""

from __future__ import annotations

import os
import signal

#: The armed point -> the hit that kills it (empty: none armed), and the hits so far.
_ARMED: dict[str, int] = {}
_HITS = {"n": 0}


def configure(spec: str) -> None:
    """Arm (or, with ``""``, disarm) the fault from a ``<point>[:<n>]`` spec and reset the
    count. Read from ``AGENTSAGA_FAULT`` at import; the tests' fork server (``tests/zygote.py``)
    calls it again in each forked child, whose environment is set after the import."""
    name, _, nth = spec.partition(":")
    _ARMED.clear()
    if name:
        _ARMED[name] = int(nth or 1)
    _HITS["n"] = 0


def point(name: str) -> None:
    nth = _ARMED.get(name)
    if nth is None:
        return
    _HITS["n"] += 1
    if _HITS["n"] >= nth:
        os.kill(os.getpid(), signal.SIGKILL)


configure(os.environ.get("AGENTSAGA_FAULT", ""))
