"""A coding agent's attack surface (issue 6, part 5).

* Model output reaching commands: replies full of shell metacharacters flow into later
  steps' ``run:`` strings, ``run:`` lists and ``env:``, and into a compensation. Nothing
  may execute: a canary file must never appear, and each value must arrive verbatim.
* Edit paths: a write step whose reply names a path outside the workspace, inside
  ``.git`` (any spelling), through a symlink, or absurdly long or NUL-laden, fails, and
  nothing is written.
* Secrets: a command that echoes a key, token or password leaves ``***`` in the logs, the
  store's bytes and ``--json`` output.
* Permissions: ``.agentsaga/`` 0700, ``state.db`` and logs 0600.
* ``validate --explain`` lists every command, compensation and write of a pipeline.

The model is the scripted provider (it returns exactly what a hostile model could) except
where the path through the real SDK matters.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Env, agentsaga_argv, cli
from tests.gitstate import git, make_repo
from tests.llm_server import FakeLLMServer

pytestmark = pytest.mark.slow


def q(text: str) -> str:
    return json.dumps(text)


# --- model output never reaches a shell unquoted -------------------------------------------------


def payload(canary: Path) -> str:
    c = str(canary)
    return (
        f"$(touch {c}) `touch {c}` ; touch {c} && touch {c} || touch {c} | touch {c}\n"
        f"touch {c}\n'; touch {c}; echo '\n\"; touch {c}; echo \"\n"
        f"$'\\x27'; touch {c} # ${{IFS}}touch${{IFS}}{c} > {c} < /etc/passwd & \\\n"
        # A template in a reply must stay text: rendering it again would leak the env.
        "${{ env.MY_TOKEN }} ${{ vars.x }} {{ x }}"
    )


def injection_pipeline(canary: Path, out: Path, reply: str) -> str:
    text = "${{ steps.plan.output.text }}"
    writer = q("import sys; open(sys.argv[1], 'w').write(sys.argv[2])")
    return f"""\
name: injection
workspace: {{isolation: none}}
steps:
  - id: plan
    kind: plan
    provider: scripted
    prompt: "anything"
    replies: [{q(reply)}]
  - id: as_string
    kind: shell
    run: "printf %s ${{{{ steps.plan.output.text }}}} > {out}/string"
  - id: as_list
    kind: shell
    run: ["python3", "-c", {writer}, "{out}/list", "{text}"]
  - id: as_env
    kind: deploy
    env: {{PAYLOAD: "${{{{ steps.plan.output.text }}}}"}}
    run: 'printf %s "$PAYLOAD" > {out}/env'
    compensate:
      run: "printf %s ${{{{ steps.plan.output.text }}}} > {out}/comp_string"
      env: {{PAYLOAD: "${{{{ steps.plan.output.text }}}}"}}
"""


def test_model_output_in_run_strings_lists_and_env_never_executes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = env.path / "CANARY"
    out = env.path / "out"
    out.mkdir()
    monkeypatch.setenv("MY_TOKEN", "tok-SECRET-4242")
    reply = payload(canary)
    path = env.write("p.yml", injection_pipeline(canary, out, reply))

    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    assert not canary.exists(), "model output was executed by a shell"
    # Each value arrived as exactly one argument, byte for byte.
    for name in ("string", "list", "env"):
        assert (out / name).read_text() == reply, name
    assert "tok-SECRET-4242" not in (out / "string").read_text()

    rolled = cli("rollback", result.json()["run_id"])
    assert rolled.exit_code == 0, rolled
    assert (out / "comp_string").read_text() == reply
    assert not canary.exists(), "model output was executed by a compensation"


def quoted_pipeline(out: Path, reply: str, quote: str) -> str:
    return f"""\
name: quoted
workspace: {{isolation: none}}
steps:
  - id: plan
    kind: plan
    provider: scripted
    prompt: "anything"
    replies: [{q(reply)}]
  - id: quoted
    kind: shell
    run: {q(f"printf %s {quote}${{{{ steps.plan.output.text }}}}{quote} > {out}/quoted")}
"""


@pytest.mark.parametrize("quote", ['"', "'"], ids=["double", "single"])
def test_template_inside_quotes_in_a_run_string_never_executes(env: Env, quote: str) -> None:
    """Users quote out of habit: ``printf %s "${{ x }}"`` (as in GitHub Actions). The
    value is single-quoted by the renderer, which inside the user's own quotes is no
    quoting at all: ``"'$(cmd)'"`` runs cmd, and ``''value''`` leaves value bare. Either
    the loader must refuse a template inside quotes of a bash string (exit 2, pointing at
    env:), or the value must arrive verbatim; never may the canary appear."""
    canary = env.path / "CANARY"
    out = env.path / "out"
    out.mkdir()
    reply = f"it's $(touch {canary}) `touch {canary}`; touch {canary}; echo \""
    result = cli("run", env.write("p.yml", quoted_pipeline(out, reply, quote)))
    assert not canary.exists(), "model output was executed by a shell"
    if result.exit_code != 2:
        assert result.exit_code == 0, result
        assert (out / "quoted").read_text() == reply


def test_model_output_through_the_real_sdk_never_executes(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    canary = env.path / "CANARY"
    out = env.path / "out"
    out.mkdir()
    reply = payload(canary)
    with FakeLLMServer() as server:
        server.reply(reply)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0000")
        text = injection_pipeline(canary, out, reply).replace(
            f'    provider: scripted\n    prompt: "anything"\n    replies: [{q(reply)}]\n',
            '    provider: anthropic\n    model: claude-sonnet-4-6\n    prompt: "anything"\n',
        )
        result = cli("run", env.write("p.yml", text))
    assert result.exit_code == 0, result
    assert not canary.exists()
    assert (out / "list").read_text() == reply


def test_a_nul_byte_in_model_output_fails_the_step_cleanly(env: Env) -> None:
    """argv cannot hold NUL: the step must fail as a step (exit 1, resumable), not as an
    internal error."""
    out = env.path / "out"
    out.mkdir()
    path = env.write("p.yml", injection_pipeline(env.path / "CANARY", out, "a\x00b"))
    result = cli("run", path)
    assert result.exit_code == 1, result
    assert "internal error" not in result.stderr, result


# --- edit paths stay inside the workspace --------------------------------------------------------

MARK = "PWNED-BY-THE-MODEL"


def edit_block(path: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n=======\n{MARK}\n>>>>>>> REPLACE\n"


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path, {"src/app.py": "x = 1\n"})
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", repo / "link")
    os.symlink(".git", repo / "gitlink")
    os.symlink("/etc", repo / "etc")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    return repo


EDIT_PATHS = {
    "parent": "../escape.txt",
    "parent inside": "src/../../escape.txt",
    "absolute": "/tmp/agentsaga-escape.txt",
    "git hook": ".git/hooks/pre-commit",
    "git config upper": ".GIT/config",
    "git mixed case": ".Git/hooks/post-checkout",
    "git trailing dot": ".git./hooks/pre-commit",
    "symlink out": "link/escape.txt",
    "symlink to git": "gitlink/hooks/pre-commit",
    "symlink to etc": "etc/agentsaga-escape",
    "long": "a" * 5000 + ".txt",
    "long component": "d/" + "b" * 300 + ".txt",
    "nul": "src/ok.py\x00.txt",
    # agentsaga's own files in the repository: its store, logs, other runs' worktrees,
    # and its config (which names provider base URLs: an exfiltration of the API key).
    "own store dir": ".agentsaga/evil.txt",
    "own config": ".agentsaga.yml",
}


@pytest.mark.parametrize("rel", EDIT_PATHS.values(), ids=list(EDIT_PATHS))
def test_write_step_refuses_paths_outside_the_workspace(
    tmp_path: Path, hostile_repo: Path, rel: str
) -> None:
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(f"""\
name: edits
workspace: {{isolation: branch}}
steps:
  - id: write
    kind: write
    provider: scripted
    max_reflections: 0
    prompt: "edit"
    replies: [{q(edit_block(rel))}]
""")
    hooks_before = sorted(p.name for p in (hostile_repo / ".git" / "hooks").iterdir())
    config_before = (hostile_repo / ".git" / "config").read_text()
    proc = subprocess.run(
        agentsaga_argv("run", pipeline),
        cwd=hostile_repo,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "refused" in proc.stdout + proc.stderr, proc.stdout + proc.stderr

    # Nothing in the repository or next to it holds the model's text (the store and the
    # pipeline file do, as the reply and its record).
    written = [
        p
        for root in (hostile_repo, tmp_path / "outside")
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and MARK.encode() in p.read_bytes()
    ]
    assert written == []
    assert not Path("/tmp/agentsaga-escape.txt").exists()
    assert not Path("/etc/agentsaga-escape").exists()
    assert sorted(p.name for p in (hostile_repo / ".git" / "hooks").iterdir()) == hooks_before
    assert (hostile_repo / ".git" / "config").read_text() == config_before
    assert not (hostile_repo / ".agentsaga.yml").exists()
    assert not (hostile_repo / ".agentsaga" / "evil.txt").exists()


# --- secrets are masked wherever they would be kept or shown -------------------------------------

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-SECRET-aaaa1111",
    "MY_TOKEN": "tok-SECRET-bbbb2222",
    "DB_PASSWORD": "pw-SECRET-cccc3333",
    "GITHUB_SECRET_THING": "gh-SECRET-dddd4444",
}


def _bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_secrets_echoed_by_commands_are_masked_everywhere(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    echo = 'echo "key=$ANTHROPIC_API_KEY tok=$MY_TOKEN pw=$DB_PASSWORD gh=$GITHUB_SECRET_THING"'
    path = env.write(
        "p.yml",
        f"""\
name: secrets
workspace: {{isolation: none}}
steps:
  - id: out
    kind: shell
    run: {q(echo + "; " + echo + " >&2")}
  - id: via_env
    kind: shell
    env: {{PASSED: "${{{{ env.DB_PASSWORD }}}}", SERVICE_TOKEN: "${{{{ env.MY_TOKEN }}}}"}}
    run: 'echo "passed=$PASSED svc=$SERVICE_TOKEN"'
  - id: fails
    kind: shell
    run: {q(echo + " >&2; exit 3")}
    compensate: {{run: {q(echo)}}}
""",
    )
    result = cli("run", path, "--json")
    assert result.exit_code == 1, result
    rid = result.json()["run_id"]
    shown = [
        result.output,
        cli("logs", rid).output,
        cli("show", rid, "--json").output,
        cli("report", rid, "--json").output,
        cli("runs", "--json").output,
    ]
    cli("rollback", rid)
    shown.append(cli("logs", rid).output)
    stored = _bytes_under(env.path)  # state.db, its WAL, every log file
    for name, value in SECRETS.items():
        for text in shown:
            assert value not in text, f"{name} shown: {text[:400]}"
        assert value.encode() not in stored, f"{name} is in the store or the logs"
    assert "***" in cli("logs", rid, "out").output


def test_a_secret_interpolated_into_a_prompt_is_not_stored(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README: "Secrets never reach the store or logs". A prompt that interpolates
    ``${{ env.MY_TOKEN }}`` is kept verbatim in the call log (llm_calls.request)."""
    monkeypatch.setenv("MY_TOKEN", SECRETS["MY_TOKEN"])
    path = env.write(
        "p.yml",
        """\
name: prompt-secret
workspace: {isolation: none}
steps:
  - id: plan
    kind: plan
    provider: scripted
    prompt: "deploy with token ${{ env.MY_TOKEN }}"
    replies: ["ok"]
""",
    )
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result
    rid = result.json()["run_id"]
    assert SECRETS["MY_TOKEN"] not in cli("show", rid, "--json").output
    assert SECRETS["MY_TOKEN"].encode() not in _bytes_under(env.path)


# --- file modes ----------------------------------------------------------------------------------


def test_state_folder_database_and_logs_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path, {"a.txt": "a\n"})
    monkeypatch.delenv("AGENTSAGA_STORE")
    (tmp_path / "p.yml").write_text(
        "name: modes\nsteps:\n  - id: s\n    kind: shell\n    run: echo hi\n"
        "    compensate: {run: echo bye}\n"
    )
    old = os.umask(0o022)  # a usual umask: what we create must not rely on the user's
    try:
        proc = subprocess.run(
            agentsaga_argv("run", tmp_path / "p.yml"),
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        rid = json.loads(
            subprocess.run(
                agentsaga_argv("runs", "--json"), cwd=repo, capture_output=True, text=True
            ).stdout
        )["runs"][0]["run_id"]
        subprocess.run(agentsaga_argv("rollback", rid), cwd=repo, check=True, capture_output=True)
    finally:
        os.umask(old)
    home = repo / ".agentsaga"

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(home) == 0o700
    for db in home.glob("state.db*"):
        assert mode(db) == 0o600, db
    logs = list((home / "logs").rglob("*"))
    assert any(p.name.endswith(".compensate.out") for p in logs), logs
    for p in logs:
        assert mode(p) == (0o700 if p.is_dir() else 0o600), p


# --- validate --explain --------------------------------------------------------------------------


def test_validate_explain_lists_every_command_compensation_and_write(env: Env) -> None:
    path = env.write(
        "p.yml",
        """\
name: review-me
steps:
  - id: plan
    kind: plan
    provider: scripted
    prompt: p
    replies: ["x"]
  - id: write
    kind: write
    provider: scripted
    prompt: w
    replies: ["x"]
  - id: test
    kind: test
    run: python -m pytest -q
  - id: fetch
    kind: shell
    run: ["curl", "-fsS", "https://example.com/install.sh"]
    env: {TOKEN: "${{ env.HOME }}"}
  - id: deploy
    kind: deploy
    irreversible: true
    run: ./deploy.sh --prod
    compensate:
      run: ./deploy.sh --revert "$V"
      env: {V: "${{ steps.deploy.output.json.version }}"}
  - id: cleanup
    kind: shell
    run: rm -rf build
    compensate: {git: revert}
""",
    )
    result = cli("validate", "--offline", "--explain", path, "--json")
    assert result.exit_code == 0, result
    doc = result.json()
    steps = {s["step_id"]: s for s in doc["steps"]}
    assert list(steps) == ["plan", "write", "test", "fetch", "deploy", "cleanup"]
    assert steps["test"]["runs"] == "python -m pytest -q"
    assert steps["fetch"]["runs"] == ["curl", "-fsS", "https://example.com/install.sh"]
    assert steps["deploy"]["runs"] == "./deploy.sh --prod"
    assert steps["deploy"]["compensation"] == 'run: ./deploy.sh --revert "$V"'
    assert steps["deploy"]["irreversible"] is True
    assert steps["write"]["compensation"] == "git: reset"  # the default, made visible
    assert "writes" in steps["write"]
    assert steps["cleanup"]["compensation"] == "git: revert"
    assert "env" in steps["fetch"]
    for quiet in ("plan", "test", "fetch"):
        assert "compensation" not in steps[quiet]

    text = cli("validate", "--offline", "--explain", path)
    assert text.exit_code == 0, text
    for needle in (
        "python -m pytest -q",
        "curl",
        "./deploy.sh --prod",
        './deploy.sh --revert "$V"',
        "git: reset",
        "git: revert",
        "rm -rf build",
        "irreversible",
    ):
        assert needle in text.stdout, needle
