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
    from agentsaga.cli import _exit_code

    code = _exit_code(result.status, "run")
    if json_mode:
        print(json.dumps({**doc, "report": data, "repo": str(repo)}, indent=2))
        return code
    from agentsaga.cli_render import print_report, print_result

    print_result(doc, "run", [])
    print()
    print_report(data)
    rid = result.run_id
    if result.status == "waiting":
        print(
            f"\ndeploy it: cd {repo} && agentsaga approve {rid}\n"
            f"send back: cd {repo} && agentsaga reject {rid} --comment 'add a docstring'"
        )
    print(
        f"\nsee it:   cd {repo} && agentsaga show {rid}\n"
        f"undo it:  cd {repo} && agentsaga rollback {rid}"
    )
    return code
