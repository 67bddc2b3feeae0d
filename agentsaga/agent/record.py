"""What an agent step's earlier attempts left for this one: the turns to continue from.

An attempt that ended through no fault of the conversation — its process died
(``Crashed``), a person pressed Ctrl-C (``Interrupted``), the provider stayed unreachable
through every retry — leaves turns worth keeping. The next attempt of the same step
continues them: the completed turns become the conversation again, exactly as sent (their
replies and answers are stored verbatim), and the calls of the turn that was in flight are
known so they can be carried out again, once. An attempt that failed on the agent's own
account (``turns``, ``stuck``, a budget), a rewind or a changed pipeline (superseded)
starts a new conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentsaga.store import AgentTurnRecord, AttemptRecord, Store, ToolCallRecord

#: Error types after which the next attempt continues the conversation.
CONTINUABLE = frozenset(
    {
        "Crashed",
        "Interrupted",
        "ProviderRateLimited",
        "ProviderOverloaded",
        "ProviderServerError",
        "ProviderTimeout",
        "ProviderConnectionError",
    }
)


@dataclass
class Recovered:
    #: The earlier attempts continued, newest first (empty: a new conversation).
    lineage: list[AttemptRecord] = field(default_factory=list)
    #: Completed turns 1..k, in order.
    turns: list[AgentTurnRecord] = field(default_factory=list)
    #: Calls of turn k+1 that an earlier attempt started: the turn in flight at the crash.
    in_flight: list[ToolCallRecord] = field(default_factory=list)

    @property
    def snapshot(self) -> str | None:
        """The files as the last completed turn left them: its snapshot, or the newest
        before it, or (no turn changed anything) the state the first attempt began from."""
        for turn in reversed(self.turns):
            if turn.snapshot:
                return turn.snapshot
        return self.lineage[-1].snapshot if self.lineage else None

    @property
    def first_attempt(self) -> int | None:
        return self.lineage[-1].attempt if self.lineage else None


def continuable(attempt: AttemptRecord) -> bool:
    if attempt.superseded or attempt.reused_from is not None:
        return False
    error = attempt.error or {}
    return str(error.get("type", "")) in CONTINUABLE


def recover(
    store: Store,
    run_id: str,
    step_id: str,
    attempt_id: int,
    attempts: list[AttemptRecord] | None = None,
) -> Recovered:
    """What attempt ``attempt_id`` continues (``attempts``: the run's, if already read)."""
    every = store.attempts(run_id) if attempts is None else attempts
    earlier = [a for a in every if a.step_id == step_id and a.id < attempt_id]
    lineage: list[AttemptRecord] = []
    for attempt in reversed(earlier):
        if not continuable(attempt):
            break
        lineage.append(attempt)
    if not lineage:
        return Recovered()
    ids = {a.id for a in lineage}
    turns: list[AgentTurnRecord] = []
    for turn in sorted(
        (t for t in store.agent_turns(run_id, step_id) if t.attempt_id in ids),
        key=lambda t: (t.turn, t.id),
    ):
        if turn.turn == len(turns) + 1:
            turns.append(turn)
    next_turn = len(turns) + 1
    started = [
        c for c in store.tool_calls(run_id, step_id) if c.attempt_id in ids and c.turn == next_turn
    ]
    # The newest attempt that reached the turn is the one whose calls were in flight.
    newest = max((c.attempt_id for c in started), default=None)
    in_flight = [c for c in started if c.attempt_id == newest]
    return Recovered(lineage, turns, in_flight)


def continued_tokens(store: Store, attempts: list[AttemptRecord], attempt: AttemptRecord) -> int:
    """The tokens of the completed turns ``attempt`` continued from earlier attempts: paid
    by them, part of this attempt's result, and what restarting the step would pay again
    (0 for an attempt that continued nothing, and for every step that is not an agent)."""
    if attempt.attempt == 1 or attempt.reused_from is not None:
        return 0
    earlier = [a for a in attempts if a.step_id == attempt.step_id and a.id < attempt.id]
    if not earlier or not continuable(earlier[-1]):
        return 0
    from agentsaga.providers.base import Usage

    rec = recover(store, attempt.run_id, attempt.step_id, attempt.id, attempts)
    return sum(Usage.from_json(t.reply.get("usage") or {}).total for t in rec.turns)
