"""``agentsaga demo``: a throwaway repository with a failing test, and the demo pipeline.

Everything is offline: the scripted provider plays the model with the replies written in
the pipeline, so the demo shows a real run — real git worktree, real tests, real
rewind and compensation — without a key or a network.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

from agentsaga.errors import UserInputError


def template(name: str) -> str:
    return resources.files("agentsaga.templates").joinpath(name).read_text("utf-8")


def demo_pipeline(agent: bool, review: bool) -> str:
    """The demo pipeline (``agent``: the agent variant); ``review``: a human gate before
    the deploy."""
    text = template("demo_agent.yml" if agent else "demo.yml")
    if not review:
        return text
    marker = "  - id: deploy\n"
    if marker not in text:
        from agentsaga.errors import ConfigError

        raise ConfigError("--review puts a gate before the demo's deploy: not with --agent")
    return text.replace(marker, template("demo_gate.yml") + marker, 1)


def setup_demo_repo(
    target: Path | None = None, *, agent: bool = False, review: bool = False
) -> Path:
    """Copy the demo project into ``target`` (a new temporary folder by default) and make
    it a git repository with one commit. Returns the repository's path. ``agent``: the
    pipeline is the agent variant (one agent step, turn by turn); ``review`` adds a human
    gate before the deploy."""
    from agentsaga import gitops

    root = Path(target) if target else Path(tempfile.mkdtemp(prefix="agentsaga-demo-"))
    if (root / "repo").exists():
        raise UserInputError(
            f"{root / 'repo'} already exists (a demo ran there before): give another --dir, "
            f"or remove it (rm -rf {root})"
        )
    source = resources.files("agentsaga.templates").joinpath("demo_repo")
    with resources.as_file(source) as folder:
        shutil.copytree(folder, root / "repo", dirs_exist_ok=True)
    repo = root / "repo"
    (repo / "deploy.sh").chmod(0o755)
    (repo / "pipeline.yml").write_text(demo_pipeline(agent, review), encoding="utf-8")
    gitops.init_repo(repo, "demo project with a failing test")
    return repo
