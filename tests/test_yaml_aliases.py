"""A YAML alias bomb is refused at load, wherever it sits (issue 10, item 10).

Composing shares aliased nodes, so a "billion laughs" once passed ``validate`` and
exhausted memory at ``run``, when ``schema:`` or ``replies:`` became Python values. Now
the alias expansion is bounded before composing: exit 2 with file:line:col at the alias
that crossed the bound, before a store or a run exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentsaga.pipeline import load_text
from tests.conftest import Env, cli


def laughs(indent: str, levels: int = 8) -> str:
    lines = [f'{indent}l0: &l0 ["x","x","x","x","x","x","x","x","x","x"]']
    for n in range(1, levels):
        refs = ",".join([f"*l{n - 1}"] * 10)
        lines.append(f"{indent}l{n}: &l{n} [{refs}]")
    return "\n".join(lines)


HEAD = "name: bomb\nworkspace: {isolation: none}\n"
PLAN = "  - id: plan\n    kind: plan\n    provider: scripted\n    prompt: hi\n"
PLACES = {
    "schema": HEAD + "steps:\n" + PLAN + "    schema:\n" + laughs("      ") + "\n",
    "replies": HEAD
    + "steps:\n"
    + PLAN
    + "    replies:\n      - text: ok\n        usage:\n"
    + laughs("          ")
    + "\n",
    "vars": HEAD + "vars:\n" + laughs("  ") + "\nsteps:\n  - {id: a, kind: shell, run: 'true'}\n",
    "an unknown key": HEAD
    + "x-shared:\n"
    + laughs("  ")
    + "\nsteps:\n  - {id: a, kind: shell, run: 'true'}\n",
}


@pytest.mark.parametrize("text", PLACES.values(), ids=list(PLACES))
def test_an_alias_bomb_anywhere_is_refused_at_load(env: Env, tmp_path: Path, text: str) -> None:
    path = env.write("p.yml", text)
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip().startswith("l4:"))
    for command in ("validate", "run"):
        result = cli(command, path)
        assert result.exit_code == 2, result
        assert f"{path}:{line}:" in result.stderr, result
        assert "aliases expand" in result.stderr
    assert not (tmp_path / "state.db").exists(), "the store was created before the check"


def test_anchors_that_share_settings_still_load() -> None:
    text = (
        "name: shared\nworkspace: {isolation: none}\n"
        "steps:\n"
        "  - {id: a, kind: shell, run: 'true', retry: &retry {attempts: 3, backoff: 0}}\n"
        "  - {id: b, kind: shell, run: 'true', retry: *retry}\n"
    )
    pipeline = load_text(text)
    assert [s.retry.attempts for s in pipeline.steps] == [3, 3]
