"""What the imperative shell shares while it drives a run: the store, the options, the
cancel event, the events it emits, and an in-memory view of each step's current attempt.

The local runner (``engine.py``), attempt execution (``attempts.py``) and compensation
execution (``undo.py``) all take a :class:`Runtime`; none imports another runner module,
which keeps them free of cycles. The decisions live in ``agentsaga.saga`` (pure).
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agentsaga import environ, namespace, pipeline_cache, pyenv
from agentsaga.checkpoints import CurrentAttempts, StepsNamespace
from agentsaga.errors import AgentsagaError
from agentsaga.pipeline import Pipeline, Step, load_text
from agentsaga.saga.view import AttemptFact, RunView, current_of
from agentsaga.states import CompensationStatus
from agentsaga.store import AttemptRecord, RunRecord, Store
from agentsaga.workspace import PlainWorkspace, RunWorkspace
from agentsaga.workspace import from_json as workspace_from_json


@dataclass
class Event:
    kind: str  # run, step, compensate, reuse, note
    run_id: str
    step_id: str | None = None
    status: str | None = None
    attempt: int | None = None
    message: str = ""


@dataclass
class EngineOptions:
    rollback_on_failure: bool | None = None  # None: the pipeline's top-level on_failure
    force: bool = False
    keep_refs: bool = False
    #: Reset a waiting run's worktree even where a person changed files (saved first).
    discard_edits: bool = False
    allow_dirty: bool = False
    #: A new worktree run over a checkout with uncommitted changes: "head" or "worktree"
    #: (None: the pipeline's workspace.start, else HEAD with a note naming the files).
    start_from: str | None = None
    lease_ttl_s: float = 30.0
    budget: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    on_event: Callable[[Event], None] | None = None


@dataclass(slots=True)
class StepView:
    id: str
    status: str
    attempts: int


@dataclass
class RunResult:
    run_id: str
    status: str
    steps: list[StepView]
    error: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: For a run ``waiting``: the gate, what to review and the two commands.
    gate: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = {
            "run_id": self.run_id,
            "status": self.status,
            "steps": [{"id": s.id, "status": s.status, "attempts": s.attempts} for s in self.steps],
            "error": self.error,
            "notes": self.notes,
        }
        if self.gate is not None:
            data["gate"] = self.gate
        return data


def current_attempts(attempts: list[AttemptRecord]) -> dict[str, AttemptRecord]:
    """Each step's latest attempt that a rewind or a pipeline change has not superseded."""
    return current_of(attempts)


class Runtime:
    def __init__(
        self,
        store: Store,
        home: Path,
        options: EngineOptions,
        cancel: threading.Event,
        emit: Callable[[Event], None],
    ) -> None:
        self.store = store
        self.home = home  # <repo>/.agentsaga: logs and worktrees live here
        self.options = options
        self.cancel = cancel
        self.emit = emit
        self._facts: dict[str, AttemptFact] = {}
        self._current: CurrentAttempts | None = None
        self._cache_run: str | None = None
        self._steps_key: tuple[Any, ...] | None = None
        self._steps_value: dict[str, Step] = {}
        self._env_memo: (
            tuple[tuple[Any, ...], Any, dict[str, Any], dict[str, str], dict[str, str]] | None
        ) = None
        self._log_dir: tuple[str, Path] | None = None

    # --- each step's current attempt ------------------------------------------------

    def current(self, run_id: str) -> Mapping[str, AttemptRecord]:
        """Each step's current attempt while this process owns the run (the lease makes
        it the only writer): its fact kept in memory (reading every attempt back for
        every step would make a long run quadratic), its record read back when asked
        (``checkpoints.py``: keeping them all made memory grow with the run)."""
        if self._cache_run != run_id or self._current is None:
            facts = self.store.attempt_facts(run_id)
            self.seed_facts(run_id, current_of(facts))
        assert self._current is not None
        return self._current

    def seed(self, run_id: str, current: Mapping[str, AttemptRecord]) -> None:
        self.seed_facts(run_id, {k: AttemptFact.of(a) for k, a in current.items()})

    def seed_facts(self, run_id: str, facts: dict[str, AttemptFact]) -> None:
        """Each step's current attempt, as the facts already read (a resume)."""
        self._cache_run = run_id
        self._facts = facts
        self._current = CurrentAttempts(self.store, self._facts)

    def view(self, run: RunRecord) -> RunView:
        """The run as the decisions see it: a read-only window on the facts kept here,
        not a copy (a copy per step made each step cost more than the one before)."""
        self.current(run.id)
        return RunView(MappingProxyType(self._facts), run.state)

    def forget(self, run_id: str) -> None:
        if self._cache_run == run_id:
            self._current = None

    def set_current(self, run_id: str, attempt: AttemptRecord) -> None:
        current = self.current(run_id)
        assert isinstance(current, CurrentAttempts)
        self._facts[attempt.step_id] = AttemptFact.of(attempt)
        current.keep(attempt)

    def set_finished(
        self, run_id: str, attempt: AttemptRecord, status: str, output: dict[str, Any]
    ) -> None:
        """``attempt`` just ended without an error, recorded with ``status`` and
        ``output``: its fact is kept; its record, which the store completed (output
        masked, duration, tokens), is read back when asked."""
        current = self.current(run_id)
        assert isinstance(current, CurrentAttempts)
        self._facts[attempt.step_id] = AttemptFact.ended(attempt, status, output)
        current.drop(attempt.id)

    def mark(self, run_id: str, attempt_id: int, status: str) -> None:
        """Keep the in-memory view true after a compensation changed one attempt (its
        new status is in the store)."""
        if self._cache_run != run_id or self._current is None:
            return
        self._current.drop(attempt_id)
        record = self.store.get_attempt(attempt_id)
        fact = self._facts.get(record.step_id)
        if fact is not None and fact.id == attempt_id:
            self._facts[record.step_id] = AttemptFact.of(record)

    def namespace(
        self, run: RunRecord, pipeline: Pipeline, current: Mapping[str, AttemptRecord]
    ) -> dict[str, Any]:
        # A copy of ``env``: a step kind may hand the namespace on.
        env = dict(self._envs(run, pipeline)[1])
        return namespace.build(run, pipeline, StepsNamespace(current), env)

    # --- definitions and places -------------------------------------------------------

    def pipeline_of(self, run: RunRecord) -> Pipeline:
        return stored_pipeline(self.home, run.pipeline_text, run.pipeline_path, vars_key(run.vars))

    def keep_parsed(self, pipeline: Pipeline) -> None:
        """Pickle a long pipeline for the resumes to come (``pipeline_cache``), in a
        background thread: the run's first steps need not wait for it."""
        if len(pipeline.steps) < pipeline_cache.MIN_STEPS:
            return
        threading.Thread(
            target=pipeline_cache.save,
            args=(self.home, pipeline, vars_key(pipeline.vars)),
            name="agentsaga-pipeline-cache",
            daemon=True,
        ).start()

    def steps_by_id(self, run: RunRecord, pipeline: Pipeline | None = None) -> dict[str, Step]:
        """Step definitions by id: the run's pipeline, and the older texts a resume with
        --pipeline replaced, so a step since dropped can still be undone. Kept per
        pipeline: a rollback asks once per compensation."""
        key = (run.id, run.pipeline_hash, len(run.state.get("old_pipelines") or []), id(pipeline))
        if self._steps_key != key:
            self._steps_key, self._steps_value = key, self._load_steps_by_id(run, pipeline)
        return self._steps_value

    def _load_steps_by_id(self, run: RunRecord, pipeline: Pipeline | None) -> dict[str, Step]:
        steps: dict[str, Step] = {}
        for older in run.state.get("old_pipelines") or []:
            try:
                loaded = load_stored(older["text"], older["path"], vars_key(run.vars))
            except AgentsagaError:
                continue
            steps.update({s.id: s for s in loaded.steps})
        steps.update({s.id: s for s in self.pipeline_of(run).steps})
        if pipeline is not None:
            steps.update({s.id: s for s in pipeline.steps})
        return steps

    def no_compensation_ids(self, run_id: str) -> set[int]:
        """Attempts recorded as having no compensation: nothing to undo."""
        return {
            c.attempt_id
            for c in self.store.compensations(run_id)
            if c.status == CompensationStatus.SKIPPED
        }

    def workspace(self, run: RunRecord) -> RunWorkspace:
        if not run.workspace:
            return PlainWorkspace(Path.cwd())
        return workspace_from_json(run.workspace, run.id)

    def base_env(self, run: RunRecord, pipeline: Pipeline) -> dict[str, str]:
        """The run's environment for a command (a new dict the caller may change): ours,
        the venv's, the pipeline's ``env:``."""
        return dict(self._envs(run, pipeline)[0])

    def _envs(self, run: RunRecord, pipeline: Pipeline) -> tuple[dict[str, str], dict[str, str]]:
        """The command's base environment, and ``env`` as expressions see it (ours and
        the pipeline's ``env:``): the caller must not change them. Built again only when
        one of their inputs changed (the environment, the run's workspace or vars, the
        pipeline): building them was a sixth of a no-op step's Python."""
        snap = environ.snapshot()
        python = (run.workspace or {}).get("python")
        key = (snap, pipeline, run.id, run.pipeline_name, run.parent_run_id)
        memo = self._env_memo
        if (
            memo is not None
            and memo[0][0] is snap  # environ.snapshot: the same object until it changes
            and memo[0][1] is pipeline
            and memo[0][2:] == key[2:]
            and memo[1] == run.workspace
            and memo[2] == run.vars
            # PYTHONPATH entries are translated through the file system (resolve).
            and not (python or {}).get("import_roots")
        ):
            return memo[3], memo[4]
        env = dict(snap)
        # The store URL may hold a password, and a step has no business with our store.
        env.pop("AGENTSAGA_STORE", None)
        # The user's venv, and the run's worktree ahead of an editable install's checkout.
        env.update(pyenv.step_env(python, env))
        top = namespace.pipeline_env(run, pipeline)
        env.update(top)
        env["AGENTSAGA_RUN_ID"] = run.id
        seen = {**snap, **top}
        self._env_memo = (key, copy.deepcopy(run.workspace), dict(run.vars), env, seen)
        return env, seen

    def log_stem(self, run_id: str, step_id: str, attempt: int, suffix: str = "") -> Path:
        name = f"{step_id}-{attempt}" + (f".{suffix}" if suffix else "")
        if self._log_dir is None or self._log_dir[0] != run_id:
            self._log_dir = (run_id, self.home / "logs" / run_id)
        return self._log_dir[1] / name


def vars_key(values: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in values.items()))


@functools.lru_cache(maxsize=32)
def stored_pipeline(home: Path, text: str, path: str, key: tuple[tuple[str, str], ...]) -> Pipeline:
    """``load_stored``, from the parsed copy a long run left on disk when there is one."""
    return pipeline_cache.load(home, text, path, key) or load_stored(text, path, key)


@functools.lru_cache(maxsize=32)
def load_stored(text: str, path: str, key: tuple[tuple[str, str], ...]) -> Pipeline:
    """A run's stored pipeline, parsed once per process (it is read at every turn of a
    rollback or a rewind). Stored vars the text does not declare are ignored: a resume
    with a changed pipeline may have dropped one."""
    return load_text(text, path, dict(key), ignore_undeclared=True, checked=True)
