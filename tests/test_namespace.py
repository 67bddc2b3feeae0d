"""A step's fingerprint (``namespace.fingerprint``): the runner hands it the fields and
env it just rendered, which it reuses only where they cannot depend on the namespace."""

from __future__ import annotations

from agentsaga import namespace
from agentsaga.pipeline import load_text
from agentsaga.store import RunRecord

TEXT = """\
name: t
vars: {who: a}
steps:
  - {id: plain, kind: shell, run: ["echo", "hi"], env: {X: "1"}}
  - {id: templated, kind: shell, run: "echo ${{ vars.who }} ${{ run.id }}"}
"""


def _run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "t", "p.yml", TEXT, "h", {"who": "a"}, "running", state={})


def test_the_rendering_handed_in_gives_the_same_fingerprint() -> None:
    pipeline = load_text(TEXT, "p.yml", {})
    run = _run("r1")
    ns = namespace.build(run, pipeline, {})
    for step in pipeline.steps:
        rendered = (namespace.render_fields(step, ns), namespace.step_env(step, ns))
        alone = namespace.fingerprint(step, pipeline, ns, run)
        assert namespace.fingerprint(step, pipeline, ns, run, rendered) == alone


def test_a_step_with_expressions_renders_for_its_fingerprint_again() -> None:
    """``run.id`` differs between a run and its fork, and a fingerprint must not: the
    fork reuses its parent's checkpoints. The run's own rendering names the id."""
    pipeline = load_text(TEXT, "p.yml", {})
    step = pipeline.steps[1]
    prints = set()
    for run_id in ("r1", "r2"):
        run = _run(run_id)
        ns = namespace.build(run, pipeline, {})
        rendered = (namespace.render_fields(step, ns), namespace.step_env(step, ns))
        assert run_id in str(rendered[0])
        prints.add(namespace.fingerprint(step, pipeline, ns, run, rendered))
    assert len(prints) == 1
