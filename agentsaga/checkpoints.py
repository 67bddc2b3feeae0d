"""A run's checkpoints as the runner reads them: facts in memory, records on demand.

While it drives a run, the runner needs each step's current attempt in two forms: the
small :class:`AttemptFact` every decision reads (kept in memory, one per step), and the
whole record (output, error, usage) that ``${{ steps.<id>.* }}``, a compensation or a
gate reads for the few steps it names. Keeping every record (and a namespace entry
built from it) made a run's memory grow by ~2.5 KB a step, and by the size of every
step's output: a 10,000-step run held ~25 MB of checkpoints it had already written.
:class:`CurrentAttempts` keeps the facts and reads a record back from the store (one
indexed query) when one is asked for; :class:`StepsNamespace` builds ``steps.<id>``
for the names an expression uses, not for every step before each step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from agentsaga import namespace
from agentsaga.saga.view import AttemptFact
from agentsaga.store import AttemptRecord, Store

#: Records kept after being set or read: the attempt in flight and the steps the next
#: ones usually read (``steps.<previous>.output``) are not read back each time.
RECENT = 16


class CurrentAttempts(Mapping[str, AttemptRecord]):
    """Each step's current attempt: ``facts`` (owned by the caller, kept up to date by
    it) say which attempt that is; its record comes from the store when asked."""

    def __init__(self, store: Store, facts: Mapping[str, AttemptFact]) -> None:
        self._store = store
        self._facts = facts
        self._recent: OrderedDict[int, AttemptRecord] = OrderedDict()

    def __getitem__(self, step_id: str) -> AttemptRecord:
        fact = self._facts[step_id]
        record = self._recent.get(fact.id)
        if record is None:
            record = self._store.get_attempt(fact.id)
            self.keep(record)
        return record

    def __iter__(self) -> Iterator[str]:
        return iter(self._facts)

    def __len__(self) -> int:
        return len(self._facts)

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._facts

    def get(self, step_id: str, default: Any = None) -> Any:
        # Without the KeyError Mapping.get catches: asked for every step before it runs.
        return self[step_id] if step_id in self._facts else default

    def keep(self, record: AttemptRecord) -> None:
        """``record`` is the attempt's latest state (just written or just read)."""
        self._recent[record.id] = record
        self._recent.move_to_end(record.id)
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    def drop(self, attempt_id: int) -> None:
        """The store changed this attempt: read it again when next asked."""
        self._recent.pop(attempt_id, None)


class StepsNamespace(Mapping[str, dict[str, Any]]):
    """``steps`` in an expression's namespace: ``steps.<id>`` built from the step's
    current attempt when an expression names it (once per namespace)."""

    def __init__(self, current: Mapping[str, AttemptRecord]) -> None:
        self._current = current
        self._built: dict[str, dict[str, Any]] = {}

    def __getitem__(self, step_id: str) -> dict[str, Any]:
        built = self._built.get(step_id)
        if built is None:
            built = self._built[step_id] = namespace.step_namespace(self._current[step_id])
        return built

    def __iter__(self) -> Iterator[str]:
        return iter(self._current)

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._current
