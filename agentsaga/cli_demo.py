"""``agentsaga demo``: set up the throwaway repository, run the demo pipeline, and tell
the story of the run from the store: what the first write changed, why the tests failed,
the rewind, the fix, and what the saga saved."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_demo(
    directory: Path | None,
    json_mode: bool,
    session_for: Callable[[Path], Any],
    agent: bool = False,
    review: bool = False,
) -> int:
    """Returns the exit code. ``agent``: the agent variant (one agent step); ``review``:
    the variant that waits for a person's approval before its deploy."""
    from agentsaga.demo import setup_demo_repo
    from agentsaga.documents import run_document
    from agentsaga.pipeline import load_file
    from agentsaga.report import token_report

    repo = setup_demo_repo(directory, agent=agent, review=review)
    os.chdir(repo)
    if not json_mode:
        print(f"demo repository: {repo}", flush=True)
    demo_vars = {} if agent else {"deploy_dir": str(repo.parent / "deployments")}
    loaded = load_file(repo / "pipeline.yml", demo_vars)
    session = session_for(repo)
    result = session.engine(json_mode).run(loaded, session.repo_root)
    doc = run_document(session.store, result.run_id, result.notes)
    data = token_report(session.store, result.run_id)
    from agentsaga.cli_errors import exit_code_of

    code = exit_code_of(result.status, "run")
    if json_mode:
        print(json.dumps({**doc, "report": data, "repo": str(repo)}, indent=2))
        return code
    from agentsaga.cli_render import print_report, print_result

    print_result(doc, "run", [])
    from agentsaga.cli_render import say

    print()
    say(story(session.store, doc))
    print()
    print_report(data)
    rid = result.run_id
    if result.status == "waiting":
        print(
            f"\ndeploy it: cd {repo} && agentsaga approve {rid}\n"
            f"send back: cd {repo} && agentsaga reject {rid} --comment 'add a docstring'"
        )
    turns = f"\nturns:    cd {repo} && agentsaga show {rid} fix" if agent else ""
    print(
        f"\nsee it:   cd {repo} && agentsaga show {rid}{turns}\n"
        f"undo it:  cd {repo} && agentsaga rollback {rid}"
    )
    return code


def story(store: Any, doc: dict[str, Any]) -> list[str]:
    """What happened, attempt by attempt, for someone who has never seen a saga: what each
    write changed, why a test failed, the rewind and what it kept, the fix."""
    from agentsaga.report import _attempt_diff

    ws = store.get_run(doc["run_id"]).workspace or {}
    records = store.attempts(doc["run_id"])
    by_seq = {a.seq: a for a in records}
    order = [s["step_id"] for s in doc["steps"]]
    rows = sorted(
        ((s["step_id"], a) for s in doc["steps"] for a in s["attempts"]), key=lambda r: r[1]["seq"]
    )
    lines = ["What happened:"]
    for number, (step_id, a) in enumerate(rows, start=1):
        record = by_seq[a["seq"]]
        lines.append(f"{number:>2}. {_what(step_id, a, record.output)}")
        if isinstance(record.output, dict) and "blocks_applied" in record.output:
            lines += _changed_lines(_attempt_diff(ws, record, records, stat=False) or "")
        later = rows[number] if number < len(rows) else None
        if a["error"] and later and order.index(later[0]) < order.index(step_id):
            undone = [
                f"{sid} #{b['attempt']}"
                for sid, b in rows
                if any(c["reason"] == "rewind" for c in b["compensations"])
                and b["seq"] < a["seq"]
                and order.index(sid) >= order.index(later[0])
            ]
            kept = [s for s in order[: order.index(later[0])]]
            lines.append(
                f"    So the saga undid {', '.join(undone) or 'nothing'} (its compensation) "
                f"and went back to {later[0]}, with this failure in ${{{{ rewind.error }}}}; "
                f"{', '.join(kept) or 'nothing'} kept their checkpoints: not run or paid again."
            )
    return lines


def _what(step_id: str, a: dict[str, Any], output: Any) -> str:
    label = f"{step_id} #{a['attempt']}"
    tokens = a["usage"]["total"]
    paid = f" ({tokens:,} tokens)" if tokens else ""
    out = output if isinstance(output, dict) else {}
    if a["error"]:
        return f"{label} failed: {a['error']['message'].strip().splitlines()[0]}"
    if "blocks_applied" in out:
        return f"{label} asked the model for edits{paid}; it changed:"
    if "turns" in out and "summary" in out:
        changed = ", ".join(out.get("changed") or []) or "nothing"
        return (
            f"{label} worked in {out['turns']} turns of tool calls{paid}, changed {changed}: "
            f"{out['summary']}"
        )
    if "paths" in out:
        return f"{label} put {len(out['paths'])} files in the model's context"
    if "text" in out:
        return f"{label} asked the model for a plan{paid}"
    if "passed" in out:
        return f"{label} ran the tests: they pass"
    return f"{label} ran its command ({a['status']})"


def _changed_lines(diff: str, shown: int = 8) -> list[str]:
    """The changed lines of a patch with one line of context around each change."""
    body = [ln for ln in diff.splitlines() if not ln.startswith(("diff ", "index ", "+++", "---"))]
    keep = set()
    for i, line in enumerate(body):
        if line[:1] in "+-":
            keep.update({i - 1, i, i + 1})
    picked = [
        body[i]
        for i in sorted(keep)
        if 0 <= i < len(body) and not body[i].startswith("@@") and body[i].strip()
    ]
    return [f"      {line}" for line in picked[:shown]]
