"""Views of a run built from the store: the token report, diffs, logs, and the steps a
run knows. The documents of ``runs`` and ``show`` are in :mod:`agentsaga.documents`, the
step detail in :mod:`agentsaga.step_detail`; the web view serves them all unchanged."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from agentsaga.agent.record import continued_tokens
from agentsaga.errors import UserInputError
from agentsaga.store import AttemptRecord, Store


def stored_steps(store: Store, run_id: str) -> Iterator[dict[str, Any]]:
    """The step definitions of a run's stored pipeline, as YAML gives them, one at a time
    (the stored text of a 10,000-step run made a 40 MB tree when loaded whole)."""
    from agentsaga.schema import AnyValue, SchemaViolation

    for node in _step_nodes(store, run_id):
        try:
            step = AnyValue().check(node)
        except SchemaViolation:
            continue
        if isinstance(step, dict) and "id" in step:
            yield step


def step_kinds(store: Store, run_id: str) -> dict[str, str]:
    return {step_id: kind for step_id, kind in _step_heads(store, run_id)}


def step_ids(
    store: Store,
    run_id: str,
    attempted: Iterable[str] | None = None,
    pipeline_ids: Iterable[str] | None = None,
) -> list[str]:
    """The steps a run knows: its pipeline's, in order, then any that only its attempts
    name (a step a resume with a changed pipeline dropped). ``attempted``: the steps the
    attempts name, when the caller has them (else they are read); ``pipeline_ids``: the
    pipeline's, when the caller has them (else the stored text is parsed again: 44 ms at
    the end of a 1,000-step run)."""
    if pipeline_ids is None:
        pipeline_ids = (step_id for step_id, _ in _step_heads(store, run_id))
    ids = list(pipeline_ids)
    known = set(ids)
    if attempted is None:
        attempted = (a.step_id for a in store.iter_attempts(run_id))
    for step_id in attempted:
        if step_id not in known:
            known.add(step_id)
            ids.append(step_id)
    return ids


def _step_heads(store: Store, run_id: str) -> Iterator[tuple[str, str]]:
    """Each stored step's id and kind, read off its node (nothing constructed)."""
    from agentsaga.yaml_nodes import MappingNode, ScalarNode

    for node in _step_nodes(store, run_id):
        if not isinstance(node, MappingNode):
            continue
        heads = {
            str(k.value): str(v.value)
            for k, v in node.value
            if isinstance(k, ScalarNode) and k.value in ("id", "kind") and isinstance(v, ScalarNode)
        }
        if "id" in heads:
            yield heads["id"], heads.get("kind", "None")


def _step_nodes(store: Store, run_id: str) -> Iterator[Any]:
    """The stored pipeline's step nodes, composed one at a time: a stored pipeline always
    loaded once, so a text that no longer parses yields none (the attempts still name
    its steps)."""
    import yaml

    from agentsaga.yaml_nodes import iter_list

    try:
        yield from iter_list(store.get_run(run_id).pipeline_text, "steps")
    except yaml.YAMLError:
        return


def require_step(store: Store, run_id: str, step: str) -> None:
    """A step id given on the command line must name a step of the run: a typo is bad
    input (exit 2, with a did-you-mean), not an empty answer."""
    ids = step_ids(store, run_id)
    if step not in ids:
        from agentsaga.schema import did_you_mean

        raise UserInputError(
            f"run {run_id} has no step {step!r}{did_you_mean(step, ids)} (steps: {', '.join(ids)})"
        )


def gate_commands(run_id: str) -> dict[str, str]:
    """The two commands a waiting run's gate offers."""
    return {
        "approve": f"agentsaga approve {run_id} [--comment TEXT]",
        "reject": f"agentsaga reject {run_id} --comment TEXT",
    }


def waiting_at(run_id: str, status: str, records: list[AttemptRecord]) -> dict[str, Any] | None:
    """For a run ``waiting``: the gate's visit, what to review and the two commands."""
    if status != "waiting":
        return None
    visit = next((a for a in reversed(records) if a.status == "waiting" and not a.superseded), None)
    if visit is None:
        return None
    output = visit.output or {}
    return {
        "step_id": visit.step_id,
        "visit": visit.attempt,
        "message": output.get("message", ""),
        "show": output.get("show", ""),
        "arrived_at": visit.started_at,
        **gate_commands(run_id),
    }


def gate_decisions(
    store: Store, run_id: str, attempt_no: dict[int, int] | None = None
) -> list[dict[str, Any]]:
    """Who decided at each gate visit, when, and why."""
    if attempt_no is None:
        attempt_no = {a.id: a.attempt for a in store.attempts(run_id)}
    return [
        {
            "step_id": d.step_id,
            "visit": attempt_no.get(d.attempt_id),
            "decision": d.decision,
            "decided_by": d.decided_by,
            "comment": d.comment,
            "decided_at": d.decided_at,
        }
        for d in store.gate_decisions(run_id)
    ]


def token_report(store: Store, run_id: str) -> dict[str, Any]:
    """Tokens and cost per step and attempt, what was reused, and the failed-run tax.

    Every figure is a sum of the rows, so the report adds up:

    * ``spent``: the tokens of this run's own model calls (usage as the API reported it);
      the ``usage`` of each attempt.
    * ``reused``: tokens in this run's result it did not pay for — a fork's copies of its
      parent's checkpoints (once each) and replies served from the call log. Never more
      than one clean pass.
    * ``saved``: at each point the run went back (a retry, a rewind, a resume, resume
      --from), the checkpoints of the earlier steps it kept — what a restart from scratch
      would have paid again there. A fork's copies are not counted: a restarted fork
      reuses its parent's checkpoints too.
    * ``clean pass``: each step's final attempt (reused ones included): one run with no
      failure.
    * ``restart``: the counterfactual, spent + reused + saved.
    * tax = (spent + checkpoints reused) / clean pass − 1; restart tax = restart / clean
      pass − 1.
    """
    from agentsaga import documents

    attempts = store.attempts(run_id)
    calls = store.llm_calls(run_id)
    by_id = {c.id: c for c in calls}
    memo_reused: dict[int, int] = {}
    for call in calls:
        if call.status == "reused" and call.served_from in by_id and call.attempt_id:
            source = by_id[call.served_from]
            memo_reused[call.attempt_id] = memo_reused.get(call.attempt_id, 0) + source.usage.total
    rows, kept = _attempt_rows(
        store, attempts, memo_reused, documents.model_calls_by_attempt(calls)
    )
    paid = [c for c in calls if c.status == "ok"]
    spent = sum(c.usage.total for c in paid)
    usage = {
        field: sum(getattr(c.usage, field) for c in paid)
        for field in ("input", "output", "cache_read", "cache_write")
    }
    costs = [c.usage.cost_usd for c in paid]
    cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
    clean = _clean_pass(store, attempts, memo_reused)
    steps = documents.group_by_step(
        step_ids(store, run_id), rows, documents.current_statuses(attempts)
    )
    _step_totals(steps, paid, kept)
    copied = sum(s["reused_checkpoint_tokens"] for s in steps)
    from_log = sum(s["reused_from_log_tokens"] for s in steps)
    saved = sum(s["saved_tokens"] for s in steps)
    restart = spent + copied + from_log + saved
    return {
        "run_id": run_id,
        "steps": steps,
        "decisions": gate_decisions(store, run_id),
        "spent_tokens": spent,
        "usage": usage,
        "cost_usd": documents.cost(cost),
        "reused_tokens": copied + from_log,
        "reused_checkpoint_tokens": copied,
        "reused_from_log_tokens": from_log,
        "saved_tokens": saved,
        "clean_pass_tokens": clean,
        "restart_counterfactual_tokens": restart,
        "tax_saga": round((spent + copied) / clean - 1, 6) if clean else 0.0,
        "tax_restart": round(restart / clean - 1, 6) if clean else 0.0,
    }


def _attempt_rows(
    store: Store,
    attempts: list[AttemptRecord],
    memo_reused: dict[int, int],
    model_calls: dict[int, list[dict[str, Any]]],
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, int]]:
    """The report's row of each attempt, and per step the tokens of its checkpoints kept
    where the run went back (a step's ``saved_tokens``; a row's is what it did not pay
    again at that point)."""
    from agentsaga import documents

    rows: list[tuple[str, dict[str, Any]]] = []
    kept: dict[str, int] = {}
    latest: dict[str, int] = {}  # tokens of each step's newest attempt this run paid for
    index_of: dict[str, int] = {}
    previous_index = -1
    for a in attempts:
        copy = store.get_attempt(a.reused_from).usage.total if a.reused_from else 0
        saved = 0
        if a.reused_from is None and a.step_index <= previous_index:
            # The run went back: a restart from scratch would have paid every earlier
            # step again; the saga kept their checkpoints.
            for step_id, tokens in latest.items():
                if index_of[step_id] < a.step_index and tokens:
                    kept[step_id] = kept.get(step_id, 0) + tokens
                    saved += tokens
            # An agent that continued its conversation kept its completed turns too.
            turns = continued_tokens(store, attempts, a)
            if turns:
                kept[a.step_id] = kept.get(a.step_id, 0) + turns
                saved += turns
        if a.reused_from is None:
            previous_index = a.step_index
        row = {
            "attempt": a.attempt,
            "seq": a.seq,
            "status": documents.status(a),
            "superseded": a.superseded,
            "failed": a.error is not None,
            "usage": documents.usage(a.usage),
            "reused_tokens": {"checkpoint": copy, "call_log": memo_reused.get(a.id, 0)},
            "saved_tokens": saved,
            "model_calls": model_calls.get(a.id, []),
        }
        rows.append((a.step_id, row))
        index_of[a.step_id] = a.step_index
        latest[a.step_id] = 0 if a.reused_from is not None else a.usage.total
    return rows, kept


def _step_totals(steps: list[dict[str, Any]], paid: list[Any], kept: dict[str, int]) -> None:
    """Each step's own totals (the web view's per-step chart); every column adds up to the
    run's figure. ``saved_tokens`` of a step: its checkpoints kept where the run went back."""
    from agentsaga import documents

    for step in steps:
        mine = [c for c in paid if c.step_id == step["step_id"]]
        spent = sum(c.usage.total for c in mine)
        costs = [c.usage.cost_usd for c in mine]
        copied = sum(a["reused_tokens"]["checkpoint"] for a in step["attempts"])
        from_log = sum(a["reused_tokens"]["call_log"] for a in step["attempts"])
        saved = kept.get(step["step_id"], 0)
        step.update(
            {
                "spent_tokens": spent,
                "cost_usd": None if None in costs else documents.cost(sum(c or 0 for c in costs)),
                "reused_checkpoint_tokens": copied,
                "reused_from_log_tokens": from_log,
                "saved_tokens": saved,
                "restart_counterfactual_tokens": spent + copied + from_log + saved,
            }
        )


def _clean_pass(store: Store, attempts: list[Any], memo_reused: dict[int, int]) -> int:
    """Each step's last successful attempt (its last attempt if none was); a reply the
    memo served and a fork's copy are part of what one clean pass costs."""
    final: dict[str, int] = {}
    succeeded: set[str] = set()
    for a in attempts:
        # A reply the memo served is part of what one clean pass costs, and so are the
        # turns an agent attempt continued (paid by the attempts before it).
        tokens = a.usage.total + memo_reused.get(a.id, 0)
        if a.error is None:
            tokens += continued_tokens(store, attempts, a)
        if a.reused_from is not None:
            tokens = store.get_attempt(a.reused_from).usage.total
        if a.error is None:
            final[a.step_id] = tokens
            succeeded.add(a.step_id)
        elif a.step_id not in succeeded:
            final[a.step_id] = tokens
    return sum(final.values())


_LOG_TAIL_BYTES = 64 * 1024


def _diff_or_none(
    ws: dict[str, Any], attempt: AttemptRecord, attempts: list[AttemptRecord]
) -> str | None:
    from agentsaga.errors import GitError

    if not (attempt.output or {}).get("commit") and attempt.status != "completed":
        # A failed attempt's snapshot is followed by its compensation: against the next
        # snapshot the diff would show the undo, not what the attempt did.
        return None
    try:
        return _attempt_diff(ws, attempt, attempts, stat=False)
    except GitError:
        # The repository or the commits are gone (a deleted worktree, a gc'd branch):
        # the rest of the step's detail is still worth showing.
        return None


def _log_tails(stem: str | None) -> dict[str, str]:
    from pathlib import Path

    tails: dict[str, str] = {}
    for name in ("stdout", "stderr"):
        path = Path(f"{stem}.{name[3:]}") if stem else None
        if path is None or not path.is_file():
            continue
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - _LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
        if text:
            tails[name] = text
    return tails


def _attempt_diff(
    ws: dict[str, Any], attempt: AttemptRecord, attempts: list[AttemptRecord], stat: bool
) -> str | None:
    """What one attempt changed: its commit, else its snapshot against the next snapshot
    (or the workspace as it is now). None when it changed nothing."""
    from pathlib import Path

    from agentsaga import gitops

    repo = Path(ws.get("repo_root") or ws.get("path") or ".")
    output = attempt.output or {}
    if output.get("commit") and output.get("base") and output["commit"] != output["base"]:
        return gitops.diff(repo, output["base"], output["commit"], stat=stat)
    if not attempt.snapshot:
        return None
    later = [a.snapshot for a in attempts if a.seq > attempt.seq and a.snapshot]
    if later:
        return gitops.diff(repo, attempt.snapshot, later[0], stat=stat)
    return gitops.diff_worktree(Path(ws.get("path") or repo), attempt.snapshot, stat=stat)


def run_diff(store: Store, run_id: str, step: str | None, stat: bool) -> str:
    """What a step changed (its commit, else its snapshot against the next snapshot or the
    workspace as it is now), or the whole run (its base to the newest commit)."""
    from pathlib import Path

    from agentsaga import gitops

    run = store.get_run(run_id)
    ws = run.workspace or {}
    repo = Path(ws.get("repo_root") or ws.get("path") or ".")
    attempts = store.attempts(run_id)
    if step is None:
        live = [a for a in attempts if not a.superseded and (a.output or {}).get("commit")]
        if not live:
            return f"run {run_id} made no commit\n"
        base, head = ws.get("base_commit"), (live[-1].output or {}).get("commit")
        return gitops.diff(repo, base, head, stat=stat) if base and head else "nothing to show\n"
    mine = [a for a in attempts if a.step_id == step and not a.superseded]
    if not mine:
        return f"step {step!r} has not run in run {run_id}\n"
    diff = _attempt_diff(ws, mine[-1], attempts, stat)
    if diff is None:
        return f"step {step!r} changed nothing in the workspace\n"
    return diff


def run_logs(store: Store, run_id: str, step: str | None) -> list[dict[str, Any]]:
    """The whole captured output of the run's commands (``.agentsaga/logs``), per attempt
    and stream, in start order; empty streams left out."""
    from pathlib import Path

    entries: list[dict[str, Any]] = []
    for attempt in store.attempts(run_id):
        if (step is not None and attempt.step_id != step) or not attempt.log_path:
            continue
        for stream, suffix in (("stdout", ".out"), ("stderr", ".err")):
            path = Path(attempt.log_path + suffix)
            if path.is_file() and path.stat().st_size:
                entries.append(
                    {
                        "step_id": attempt.step_id,
                        "attempt": attempt.attempt,
                        "stream": stream,
                        "path": str(path),
                        "text": path.read_text(encoding="utf-8", errors="replace"),
                    }
                )
    return entries


def mark_merged(store: Store, doc: dict[str, Any]) -> None:
    """After a rollback: note on each attempt whose commit another branch holds (the user
    merged the run's branch) which branches, in ``merged_into``: a rollback resets the
    run's own branch and cannot undo a merge it did not make."""
    from pathlib import Path

    from agentsaga import gitops
    from agentsaga.errors import GitError

    ws = store.get_run(doc["run_id"]).workspace or {}
    root = ws.get("repo_root")
    if not root or not Path(root).is_dir():
        return
    for step in doc["steps"]:
        for attempt in step["attempts"]:
            commit = attempt.get("commit")
            if not commit or commit == attempt.get("base"):
                continue
            try:
                branches = [
                    b
                    for b in gitops.branches_containing(Path(root), commit)
                    if b != doc.get("branch")
                ]
            except GitError:
                continue
            if branches:
                attempt["merged_into"] = ", ".join(branches)
