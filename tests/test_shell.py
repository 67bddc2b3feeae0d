"""A value never becomes part of a bash script's source (issue 10, item 1).

Each attack below once ran the model's text as code: the renderer pasted a quoted value
into the script, and its lexer misread where the value landed (an unquoted heredoc, where
the inserted quotes are literal and ``$( )`` runs; a quoted heredoc whose terminator the
reply supplies; a comment that a newline in the value ends; ``"${T:-...}"``). Now every
``${{ }}`` becomes a variable reference and the value travels in the environment, so each
attack must leave the canary absent and, where bash gives text, the value verbatim.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agentsaga.shell import problem, render_bash
from tests.conftest import Env, cli


def hostile(canary: Path) -> str:
    c = str(canary)
    return (
        f"x'\"$(touch {c})`touch {c}`\nEOF\ntouch {c}\n'EOF'\n# \n; touch {c} }} ) \\\n"
        f"$'\\x27'; touch {c}; ${{IFS}}touch${{IFS}}{c}"
    )


#: (script, whether the value arrives verbatim on stdout)
ATTACKS = {
    "bare": ("printf %s ${{ vars.v }}", True),
    "double quotes": ('printf %s "${{ vars.v }}"', True),
    "single quotes": ("printf %s '${{ vars.v }}'", True),
    "ansi quotes": ("printf %s $'<${{ vars.v }}>'", False),
    "unquoted heredoc": ("cat <<EOF\n${{ vars.v }}\nEOF", True),
    "tab heredoc": ("cat <<-EOF\n\t${{ vars.v }}\n\tEOF", True),
    # The reply supplies the quoted heredoc's terminator: text after it would be code.
    "after a quoted heredoc": ("cat <<'EOF'\nfixed\nEOF\nprintf %s ${{ vars.v }}", False),
    "comment then newline": ("true # it's ${{ vars.v }}\nprintf %s ${{ vars.v }}", False),
    "default of a parameter": ('printf %s "${T:-${{ vars.v }}}"', True),
    "command substitution": ('printf %s "$(printf %s ${{ vars.v }})"', True),
    "subshell in a substitution": ('printf %s "$( (printf %s ${{ vars.v }}) )"', True),
    "backticks": ('printf %s "`printf %s ${{ vars.v }}`"', False),
    "inside a brace group": ("{ printf %s ${{ vars.v }}; }", True),
}


@pytest.mark.parametrize("script,verbatim", ATTACKS.values(), ids=list(ATTACKS))
def test_a_value_is_never_script_source(tmp_path: Path, script: str, verbatim: bool) -> None:
    canary = tmp_path / "CANARY"
    value = hostile(canary)
    rendered, values = render_bash(script, {"vars": {"v": value}})
    proc = subprocess.run(
        ["bash", "-c", rendered],
        env={**os.environ, **values},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert not canary.exists(), "a value was executed by bash"
    if verbatim:
        assert proc.returncode == 0, proc.stderr
        assert value in proc.stdout, proc.stdout
    assert value not in rendered and "touch" not in rendered, rendered
    assert list(values.values()) == [value]


def test_single_quotes_are_closed_and_reopened_around_the_value() -> None:
    rendered, values = render_bash("printf %s 'a${{ vars.v }}b'", {"vars": {"v": "it's"}})
    assert rendered == "printf %s 'a'\"${AGENTSAGA_V1}\"'b'"
    out = subprocess.run(
        ["bash", "-c", rendered], env=values, capture_output=True, text=True, check=True
    )
    assert out.stdout == "ait'sb"


def test_argv_lists_are_unchanged(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "argv"
    writer = json.dumps("import sys; open(sys.argv[1], 'w').write(sys.argv[2])")
    path = env.write(
        "p.yml",
        f"""
        name: argv
        workspace: {{isolation: none}}
        vars: {{v: "a b $(c)"}}
        steps:
          - id: a
            kind: shell
            run: ["python3", "-c", {writer}, "{out}", "<${{{{ vars.v }}}}>"]
        """,
    )
    assert cli("run", path).exit_code == 0
    assert out.read_text() == "<a b $(c)>"


REFUSED = {
    "quoted heredoc": ("cat <<'EOF'\n${{ vars.v }}\nEOF", "quoted heredoc"),
    "escaped heredoc word": ("cat <<\\EOF\n${{ vars.v }}\nEOF", "quoted heredoc"),
    "arithmetic expansion": ("echo $(( ${{ vars.v }} + 1 ))", "arithmetic"),
    "arithmetic command": ("(( ${{ vars.v }} > 1 )) && echo big", "arithmetic"),
    "old arithmetic": ("echo $[ ${{ vars.v }} + 1 ]", "arithmetic"),
    "heredoc terminator": ("cat <<${{ vars.v }}\nx\n", "terminator"),
}


@pytest.mark.parametrize("script,why", REFUSED.values(), ids=list(REFUSED))
def test_where_bash_would_not_take_a_value_as_text_the_loader_refuses(
    env: Env, script: str, why: str
) -> None:
    found = problem(script)
    assert found is not None and why in found[1]
    assert script[found[0] :].startswith("vars.v")
    block = "".join(f"\n      {line}" for line in script.splitlines())
    path = env.write(
        "p.yml",
        "name: refused\nworkspace: {isolation: none}\nvars: {v: '1'}\nsteps:\n"
        f"  - id: a\n    kind: shell\n    run: |{block}\n",
    )
    before = script[: found[0]]
    line, col = 8 + before.count("\n"), 7 + len(before.rsplit("\n", 1)[-1])
    result = cli("validate", path)
    assert result.exit_code == 2, result
    assert f"{path}:{line}:{col}: " in result.stderr and why in result.stderr, result


def pipeline(canary: Path, out: Path, reply: str) -> str:
    steps = []
    for n, (script, _verbatim) in enumerate(ATTACKS.values()):
        script = script.replace("vars.v", "steps.plan.output.text")
        grouped = "{ " + script + "\n} > " + f"{out}/{n}"
        steps.append(f"  - {{id: s{n}, kind: shell, run: {json.dumps(grouped)}}}")
    body = "\n".join(steps)
    undo = f"cat <<EOF > {out}/comp\n${{{{ steps.plan.output.text }}}}\nEOF"
    return f"""\
name: attacks
workspace: {{isolation: none}}
steps:
  - id: plan
    kind: plan
    provider: scripted
    prompt: "anything"
    replies: [{json.dumps(reply)}]
{body}
  - id: undo
    kind: deploy
    run: "true"
    compensate:
      run: {json.dumps(undo)}
"""


def test_a_hostile_reply_through_every_attack_end_to_end(env: Env) -> None:
    """The same attacks through a real run and its rollback: the plan step's reply is
    the hostile text, every later step and a compensation read it."""
    canary = env.path / "CANARY"
    out = env.path / "out"
    out.mkdir()
    reply = hostile(canary)
    result = cli("run", env.write("p.yml", pipeline(canary, out, reply)), "--json")
    assert result.exit_code == 0, result
    assert not canary.exists(), "model output was executed by a shell"
    for n, (_script, verbatim) in enumerate(ATTACKS.values()):
        if verbatim:
            assert reply in (out / str(n)).read_text(), list(ATTACKS)[n]
    rolled = cli("rollback", result.json()["run_id"])
    assert rolled.exit_code == 0, rolled
    assert (out / "comp").read_text() == reply + "\n"
    assert not canary.exists(), "model output was executed by a compensation"


def test_a_reply_too_large_for_a_command_fails_the_step_not_the_process(env: Env) -> None:
    """A 300 KB reply reaching a `run:` (as one environment value or one argument) is more
    than execve takes: the step fails with the reason, the run is failed and resumable,
    no traceback (found in review: "internal error: OSError: Argument list too long")."""
    big = "A" * 300_000
    for run in (
        '"echo ${{ steps.plan.output.text }} | wc -c"',
        '[echo, "${{ steps.plan.output.text }}"]',
    ):
        path = env.write(
            "p.yml",
            f"""
            name: big
            workspace: {{isolation: none}}
            steps:
              - id: plan
                kind: plan
                provider: scripted
                prompt: anything
                replies: [{big}]
              - id: use
                kind: shell
                run: {run}
            """,
        )
        result = cli("run", path)
        assert result.exit_code == 1, result
        assert "internal error" not in result.stderr
        assert "too large" in result.stdout + result.stderr
        assert env.run_status(env.newest_run_id()) == "failed"
