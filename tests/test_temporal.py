"""The Temporal runner end to end: a real dev server (one per session, tests/temporal_server.py),
real ``agentsaga worker`` processes, the real CLI in subprocesses, real git repositories, the
real Anthropic client against the loopback LLM server.

Each test has its own task queue, so workers of one test never take another's runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agentsaga.store import open_store
from tests.conftest import Result, agentsaga_argv, process_running, wait_until
from tests.gitstate import capture, git, make_repo
from tests.llm_server import FakeLLMServer

pytestmark = [pytest.mark.slow, pytest.mark.temporal]

MODEL = "claude-sonnet-4-6"


class Worker:
    """``agentsaga worker`` in the background, ready once it says so."""

    def __init__(self, cwd: Path, address: str, queue: str, *extra: str, env: Any = None) -> None:
        self.cwd = cwd
        n = len(list(cwd.parent.glob("worker-*.err")))
        self.err = cwd.parent / f"worker-{n}.err"
        argv = agentsaga_argv("worker", "--temporal", address, "--task-queue", queue, *extra)
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, stdout=err, stderr=err, env={**os.environ, **(env or {})}
            )
        wait_until(
            lambda: "worker ready" in self.err.read_text() or self.proc.poll() is not None,
            timeout=60,
            what="the worker to be ready",
        )
        assert self.proc.poll() is None, self.err.read_text()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Temporal:
    """What a test on Temporal works with: the session's server, the test's own task queue
    (also in ``AGENTSAGA_TEMPORAL_QUEUE``, so every command the test runs submits there),
    and the workers it started, stopped after the test."""

    address: str
    queue: str
    workers: list[Worker] = field(default_factory=list)

    def worker(self, cwd: Path, *extra: str, env: Any = None) -> Worker:
        started = Worker(cwd, self.address, self.queue, *extra, env=env)
        self.workers.append(started)
        return started

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()


@pytest.fixture
def temporal(
    temporal_address: str, temporal_queue: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Temporal]:
    monkeypatch.setenv("AGENTSAGA_TEMPORAL_QUEUE", temporal_queue)
    cluster = Temporal(temporal_address, temporal_queue)
    yield cluster
    cluster.stop_workers()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one committed README."""
    return make_repo(tmp_path, {"README.md": "hello\n"})


def agentsaga(cwd: Path, *args: str | Path, timeout: float = 120) -> Result:
    proc = subprocess.run(
        agentsaga_argv(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def store_of(tmp_path: Path) -> Any:
    """The store the CLI and the workers use (AGENTSAGA_STORE: the test's SQLite file, or
    a PostgreSQL schema of its own)."""
    return open_store(os.environ["AGENTSAGA_STORE"])


def status_of(tmp_path: Path, run_id: str) -> str:
    store = store_of(tmp_path)
    try:
        return str(store.get_run(run_id).status)
    finally:
        store.close()


def attempts_of(tmp_path: Path, run_id: str) -> list[Any]:
    store = store_of(tmp_path)
    try:
        return list(store.attempts(run_id))
    finally:
        store.close()


def wait_for_status(tmp_path: Path, run_id: str, *statuses: str, timeout: float = 120) -> None:
    wait_until(
        lambda: status_of(tmp_path, run_id) in statuses,
        timeout=timeout,
        what=f"run {run_id} to be {'/'.join(statuses)}",
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# --- the demo ------------------------------------------------------------------------------


def test_demo_pipeline_on_temporal_matches_a_local_run(tmp_path: Path, temporal: Temporal) -> None:
    from agentsaga.demo import setup_demo_repo

    results = {}
    for where in ("local", "temporal"):
        repo = setup_demo_repo(tmp_path / where)
        args: list[str | Path] = ["run", "pipeline.yml", "--json"]
        args += ["--var", f"deploy_dir={tmp_path / where / 'deployments'}"]
        if where == "temporal":
            temporal.worker(repo)
            # The address from .agentsaga.yml, as a team would configure it.
            (repo / ".agentsaga.yml").write_text(f"temporal: {{address: {temporal.address}}}\n")
        env_queue = {"AGENTSAGA_TEMPORAL_QUEUE": temporal.queue}
        proc = subprocess.run(
            agentsaga_argv(*args),
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, **env_queue},
        )
        assert proc.returncode == 0, proc.stderr
        results[where] = json.loads(proc.stdout)
    local, remote = results["local"], results["temporal"]
    assert remote["status"] == local["status"] == "succeeded"

    def shape(doc: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
        return [
            (s["step_id"], s["status"], [a["status"] for a in s["attempts"]]) for s in doc["steps"]
        ]

    assert shape(remote) == shape(local)  # statuses and attempts, step by step
    # The deploy the demo's last step made, on Temporal too.
    assert list((tmp_path / "temporal" / "deployments").iterdir())


# --- a worker killed mid-step --------------------------------------------------------------


def test_killed_worker_another_finishes_without_repeating_steps_or_paid_replies(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeLLMServer() as server:
        server.reply("a plan", usage={"input": 10, "output": 5})
        server.reply("a second thought", usage={"input": 12, "output": 7})
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        ledger = tmp_path / "ledger"
        pipeline = write(
            repo / "p.yml",
            f"""
            name: kill
            defaults: {{provider: anthropic, model: {MODEL}, max_tokens: 64}}
            steps:
              - id: plan
                kind: plan
                prompt: plan it
              - id: think
                kind: plan
                prompt: "think about: ${{{{ steps.plan.output.text }}}}"
              - id: record
                kind: shell
                run: ["bash", "-c", "echo record >> {ledger}"]
            """,
        )
        # Worker A dies (SIGKILL) right after the second reply reached the call log,
        # before its step is checkpointed: mid-step.
        first = temporal.worker(repo, env={"AGENTSAGA_FAULT": "llm.after_reply:2"})
        submitted = agentsaga(repo, "run", pipeline, "--temporal", temporal.address, "--detach")
        assert submitted.exit_code == 0, submitted
        run_id = submitted.stdout.strip()
        first.proc.wait(timeout=120)
        assert first.proc.returncode == -signal.SIGKILL
        assert status_of(tmp_path, run_id) == "running"
        assert server.count == 2

        temporal.worker(repo)
        wait_for_status(tmp_path, run_id, "succeeded", "failed")
        assert status_of(tmp_path, run_id) == "succeeded"
        assert server.count == 2  # the reply received before the kill was not paid again
    by_step: dict[str, list[str]] = {}
    for a in attempts_of(tmp_path, run_id):
        by_step.setdefault(a.step_id, []).append(a.status)
    assert by_step["plan"] == ["completed"]  # a completed step is not repeated
    assert by_step["think"] == ["failed", "completed"]  # the crashed attempt, recovered
    assert ledger.read_text() == "record\n"
    store = store_of(tmp_path)
    try:
        calls = [(c.step_id, c.status) for c in store.llm_calls(run_id)]
    finally:
        store.close()
    assert calls == [("plan", "ok"), ("think", "ok"), ("think", "reused")]


# --- rollback, resume, refusals --------------------------------------------------------------


EDITS = """
name: edits
steps:
  - id: add
    kind: shell
    run: ["bash", "-c", "echo added > new.txt && echo more >> README.md && echo did-add"]
    commit: true
    compensate: {git: reset}
  - id: gate
    kind: shell
    run: ["bash", "-c", "test -f {flag}"]
    retry: {attempts: 2, backoff: 0.1s}
  - id: edit
    kind: shell
    run: ["bash", "-c", "rm README.md && mkdir -p d && echo x > d/y"]
    commit: true
    compensate: {git: reset}
"""


def test_rollback_of_a_temporal_run_restores_the_repository_exactly(
    tmp_path: Path,
    temporal: Temporal,
) -> None:
    repo = make_repo(tmp_path, {"README.md": "hello\n", "src/a.py": "x = 1\n"})
    (repo / "untracked.txt").write_text("mine\n")
    flag = tmp_path / "flag"
    pipeline = write(tmp_path / "p.yml", EDITS.replace("{flag}", str(flag)))
    before = capture(repo)
    temporal.worker(repo)

    # The gate fails twice: the run fails on Temporal, resumable. The live display shows
    # what a local run shows, the runner's notes included.
    failed = agentsaga(repo, "run", pipeline, "--temporal", temporal.address)
    assert failed.exit_code == 1, failed
    for line in (
        "gate (attempt 1): failed - command exited with 1",
        "gate: retrying in 0.1s (1/2)",
        "gate (attempt 2): failed",
    ):
        assert line in failed.stderr, failed
    run_id = failed.stdout.split()[1]
    assert failed.stdout.startswith(f"run {run_id} failed: 1 of 3 steps done; stopped at gate")

    # Resume goes to Temporal by itself (the run records where it runs).
    flag.write_text("")
    resumed = agentsaga(repo, "resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed
    assert resumed.json()["status"] == "succeeded"
    assert [len(s["attempts"]) for s in resumed.json()["steps"]] == [1, 3, 1]
    branch = f"agentsaga/{run_id}"
    assert git(repo, "show", f"{branch}:d/y") == "x\n"

    # show and report read the store: no worker needed.
    temporal.stop_workers()
    shown = agentsaga(repo, "show", run_id, "--json")
    assert shown.exit_code == 0, shown
    detail = shown.json()
    assert detail["status"] == "succeeded"
    attempts = sorted(
        ((s["step_id"], a) for s in detail["steps"] for a in s["attempts"]),
        key=lambda pair: pair[1]["seq"],
    )
    assert [(step, a["status"]) for step, a in attempts] == [
        ("add", "completed"),
        ("gate", "failed"),
        ("gate", "failed"),
        ("gate", "completed"),
        ("edit", "completed"),
    ]
    assert agentsaga(repo, "report", run_id).exit_code == 0
    assert run_id in agentsaga(repo, "runs").stdout
    assert "did-add" in agentsaga(repo, "logs", run_id, "add").stdout
    assert "new.txt" in agentsaga(repo, "diff", run_id, "add", "--stat").stdout

    temporal.worker(repo)
    rolled = agentsaga(repo, "rollback", run_id)
    assert rolled.exit_code == 0, rolled
    # The live display, as for a local rollback, and no event of the run shown twice.
    assert "compensation of edit (attempt 1): compensating - git: reset" in rolled.stderr
    assert "compensation of edit (attempt 1): compensated" in rolled.stderr
    assert "gate (attempt" not in rolled.stderr
    assert status_of(tmp_path, run_id) == "rolled_back"
    assert capture(repo) == before


def test_a_second_start_of_a_running_run_is_refused(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = tmp_path / "go"
    pipeline = write(
        tmp_path / "p.yml",
        f"""
        name: slow
        steps:
          - id: wait
            kind: shell
            run: ["bash", "-c", "while [ ! -f {gate} ]; do sleep 0.05; done"]
        """,
    )
    monkeypatch.setenv("AGENTSAGA_TEMPORAL", temporal.address)
    temporal.worker(repo)
    submitted = agentsaga(repo, "run", pipeline, "--detach")
    assert submitted.exit_code == 0, submitted
    run_id = submitted.stdout.strip()
    wait_until(lambda: bool(attempts_of(tmp_path, run_id)), what="the step to start")

    again = agentsaga(repo, "resume", run_id)
    assert again.exit_code == 4, again
    assert "owned by" in again.stderr and "Temporal" in again.stderr
    refused = agentsaga(repo, "rollback", run_id)
    assert refused.exit_code == 4, refused

    gate.write_text("")
    wait_for_status(tmp_path, run_id, "succeeded")


def test_an_unreachable_server_changes_nothing(tmp_path: Path, repo: Path) -> None:
    pipeline = write(tmp_path / "p.yml", 'name: p\nsteps:\n  - {id: a, kind: shell, run: "true"}\n')
    before = capture(repo)
    result = agentsaga(repo, "run", pipeline, "--temporal", "127.0.0.1:9")
    assert result.exit_code == 1, result
    assert "cannot reach Temporal at 127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    assert capture(repo) == before
    store = store_of(tmp_path)
    try:
        assert store.list_runs() == []
    finally:
        store.close()


def test_a_bad_address_is_a_usage_error(tmp_path: Path) -> None:
    pipeline = write(tmp_path / "p.yml", 'name: p\nsteps:\n  - {id: a, kind: shell, run: "true"}\n')
    result = agentsaga(tmp_path, "run", pipeline, "--temporal", "not an address")
    assert result.exit_code == 2, result
    assert "expected HOST:PORT" in result.stderr


# --- two hosts, one remote ------------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_workers_on_two_clones_of_one_remote_continue_after_a_lost_host(
    tmp_path: Path,
    temporal: Temporal,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    store: str,
) -> None:
    if store == "postgres":  # what hosts that share no disk would use
        monkeypatch.setenv("AGENTSAGA_STORE", request.getfixturevalue("pg_fresh_url")())
    origin = make_repo(tmp_path, {"README.md": "hello\n"}, name="origin")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(origin), str(remote)], check=True)
    gate = tmp_path / "go"
    pipeline = write(
        tmp_path / "p.yml",
        f"""
        name: hosts
        workspace: {{remote: "{remote}"}}
        steps:
          - id: first
            kind: shell
            run: ["bash", "-c", "echo one > one.txt"]
            commit: true
            compensate: {{git: reset}}
          - id: second
            kind: shell
            run: ["bash", "-c", "echo two > two.txt; while [ ! -f {gate} ]; do sleep 0.05; done"]
            commit: true
            compensate: {{git: reset}}
        """,
    )
    # The submitting checkout: its config says how long a lost host is waited for.
    (origin / ".agentsaga.yml").write_text("temporal: {host_timeout: 3}\n")
    host_a = tmp_path / "host-a"
    host_b = tmp_path / "host-b"
    for home in (host_a, host_b):
        home.mkdir()
    a = temporal.worker(host_a, "--host-id", "a", "--home", str(host_a))
    submitted = agentsaga(origin, "run", pipeline, "--temporal", temporal.address, "--detach")
    assert submitted.exit_code == 0, submitted
    run_id = submitted.stdout.strip()
    branch = f"agentsaga/{run_id}"

    def second_started() -> bool:
        found = attempts_of(tmp_path, run_id)
        return [x.status for x in found] == ["completed", "running"] and bool(found[1].snapshot)

    wait_until(second_started, timeout=90, what="the second step to start on host a")
    # Host a holds the worktree; the first step's commit and the second's snapshot are
    # on the remote already.
    first_commit = attempts_of(tmp_path, run_id)[0].output["commit"]
    assert git(remote, "rev-parse", branch).strip() == first_commit
    assert git(remote, "for-each-ref", f"refs/agentsaga/{run_id}/second/")

    a.kill()  # the host is lost with its worktree
    temporal.worker(host_b, "--host-id", "b", "--home", str(host_b))
    gate.write_text("")
    wait_for_status(tmp_path, run_id, "succeeded", "failed", timeout=180)
    assert status_of(tmp_path, run_id) == "succeeded"
    statuses = [(x.step_id, x.status) for x in attempts_of(tmp_path, run_id)]
    assert statuses == [("first", "completed"), ("second", "compensated"), ("second", "completed")]
    assert git(remote, "show", f"{branch}:one.txt") == "one\n"
    assert git(remote, "show", f"{branch}:two.txt") == "two\n"
    assert git(remote, "rev-parse", f"{branch}~1").strip() == first_commit
    opened = store_of(tmp_path)
    try:
        assert (opened.get_run(run_id).workspace or {})["host"] == "b"
    finally:
        opened.close()

    # Rollback from host b (which never ran the first step) removes the run from the remote.
    rolled = agentsaga(origin, "rollback", run_id)
    assert rolled.exit_code == 0, rolled
    assert git(remote, "for-each-ref", "refs/heads/agentsaga", "refs/agentsaga") == ""
    assert not process_running(a.proc.pid)


def test_a_long_run_continues_as_new_workflow_runs_from_the_store(
    tmp_path: Path,
    temporal: Temporal,
) -> None:
    from tests.temporal_server import find_temporal

    # A small history limit: 14 steps need several executions of the workflow.
    repo = make_repo(tmp_path, {".agentsaga.yml": "temporal: {history_events: 40}\n"})
    steps = "".join(
        f'  - {{id: s{i}, kind: shell, run: ["bash", "-c", "echo {i} >> {tmp_path}/ledger"]}}\n'
        for i in range(14)
    )
    pipeline = write(
        tmp_path / "p.yml", "name: long\nworkspace: {isolation: none}\nsteps:\n" + steps
    )
    temporal.worker(repo)
    done = agentsaga(repo, "run", pipeline, "--temporal", temporal.address, "--json")
    assert done.exit_code == 0, done
    run_id = done.json()["run_id"]
    assert [len(s["attempts"]) for s in done.json()["steps"]] == [1] * 14
    assert (tmp_path / "ledger").read_text().split() == [str(i) for i in range(14)]
    binary = find_temporal()
    assert binary is not None
    listed = subprocess.run(
        [
            binary,
            "workflow",
            "list",
            "--address",
            temporal.address,
            "-o",
            "json",
            "--query",
            f"WorkflowId='{run_id}'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    executions = json.loads(listed.stdout)
    assert len(executions) >= 3, executions  # continued as new at least twice


def test_a_failed_attempt_is_compensated_before_its_retry(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
) -> None:
    ledger = tmp_path / "ledger"
    # Fails on its first attempt only; its compensation writes to the ledger too.
    pipeline = write(
        tmp_path / "p.yml",
        f"""
        name: retry
        workspace: {{isolation: none}}
        steps:
          - id: flaky
            kind: shell
            run: "echo try-$AGENTSAGA_ATTEMPT >> {ledger}; [ $AGENTSAGA_ATTEMPT = 2 ]"
            retry: {{attempts: 2, backoff: 0.1s}}
            compensate:
              run: ["bash", "-c", "echo undo-${{AGENTSAGA_IDEMPOTENCY_KEY##*:}} >> {ledger}"]
        """,
    )
    temporal.worker(repo)
    done = agentsaga(repo, "run", pipeline, "--temporal", temporal.address, "--json")
    assert done.exit_code == 0, done
    assert ledger.read_text().split() == ["try-1", "undo-1", "try-2"]


def test_a_refusal_in_an_activity_fails_the_run_with_its_reason(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
) -> None:
    flag = tmp_path / "flag"
    pipeline = write(tmp_path / "p.yml", EDITS.replace("{flag}", str(flag)))
    temporal.worker(repo)
    failed = agentsaga(repo, "run", pipeline, "--temporal", temporal.address, "--json")
    assert failed.exit_code == 1, failed
    run_id = failed.json()["run_id"]
    # Someone deletes the run branch: the resume is refused (not retried), with the reason.
    git(repo, "worktree", "remove", "--force", f".agentsaga/worktrees/{run_id}")
    git(repo, "branch", "-D", f"agentsaga/{run_id}")
    resumed = agentsaga(repo, "resume", run_id, "--json")
    assert resumed.exit_code == 1, resumed
    error = resumed.json()["error"]
    assert error["type"] == "GitUnsafe"
    assert f"the run branch agentsaga/{run_id} no longer exists" in error["message"]
    assert status_of(tmp_path, run_id) == "failed"


def test_a_run_submitted_before_any_worker_waits_for_one_and_says_so(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
) -> None:
    pipeline = write(tmp_path / "p.yml", 'name: p\nsteps:\n  - {id: a, kind: shell, run: "true"}\n')
    err = tmp_path / "follow.err"
    with err.open("wb") as sink:
        follower = subprocess.Popen(
            agentsaga_argv("run", pipeline, "--temporal", temporal.address),
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        wait_until(lambda: "is a worker running" in err.read_text(), timeout=90)
        assert f"'{temporal.queue}'" in err.read_text()
        temporal.worker(repo)
        assert follower.wait(timeout=120) == 0, err.read_text()
    finally:
        if follower.poll() is None:
            follower.kill()
    assert "a (attempt 1): completed" in err.read_text()


# --- human gates ------------------------------------------------------------------------------


def test_a_gate_waits_in_the_workflow_for_a_decision(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ledger = tmp_path / "ledger"
    pipeline = write(
        tmp_path / "p.yml",
        f"""
        name: gated
        workspace: {{isolation: none}}
        steps:
          - id: write
            kind: shell
            run: 'echo "write:${{{{ rewind.error }}}}" >> {ledger}'
          - id: review
            kind: approve
            message: Ship it?
            on_reject: {{rewind_to: write, max_rejects: 2}}
          - id: deploy
            kind: shell
            run: 'echo deploy >> {ledger}'
        """,
    )
    monkeypatch.setenv("AGENTSAGA_TEMPORAL", temporal.address)
    temporal.worker(repo)

    # The run reaches the gate: the command returns (exit 5), the workflow waits.
    started = agentsaga(repo, "run", pipeline, "--json")
    assert started.exit_code == 5, started
    run_id = started.json()["run_id"]
    assert started.json()["gate"]["message"] == "Ship it?"
    assert status_of(tmp_path, run_id) == "waiting"

    # resume never skips a gate: it says what the run waits for.
    waiting = agentsaga(repo, "resume", run_id, "--json")
    assert waiting.exit_code == 5, waiting
    assert waiting.json()["gate"]["step_id"] == "review"

    # A rejection goes to the waiting workflow (an update): it rewinds with the comment.
    rejected = agentsaga(repo, "reject", run_id, "--comment", "add tests", "--json")
    assert rejected.exit_code == 5, rejected
    assert ledger.read_text().splitlines() == ["write:", "write:add tests"]
    # Deciding twice on one visit is refused, with the reason, as locally.
    again = agentsaga(repo, "approve", run_id, "--detach")
    assert again.exit_code == 0, again
    late = agentsaga(repo, "approve", run_id)
    assert late.exit_code == 2, late
    assert "not waiting at a gate" in late.stderr

    wait_for_status(tmp_path, run_id, "succeeded")
    assert ledger.read_text().splitlines() == ["write:", "write:add tests", "deploy"]
    shown = agentsaga(repo, "show", run_id, "--json").json()
    assert [d["decision"] for d in shown["decisions"]] == ["rejected", "approved"]


def test_a_persons_edits_at_a_gate_on_temporal_refuse_a_reject_and_approve_commits_them(
    tmp_path: Path,
    temporal: Temporal,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's gate activity pins the worktree and applies the approval, as locally."""
    repo = make_repo(tmp_path, {"app.txt": "v1\n"})
    pipeline = write(
        tmp_path / "p.yml",
        """
        name: gated
        steps:
          - {id: write, kind: shell, run: "echo w >> app.txt", commit: true}
          - {id: review, kind: approve, on_reject: {rewind_to: write}}
          - {id: deploy, kind: shell, run: "cat app.txt > deployed"}
        """,
    )
    monkeypatch.setenv("AGENTSAGA_TEMPORAL", temporal.address)
    temporal.worker(repo)
    started = agentsaga(repo, "run", pipeline, "--json")
    assert started.exit_code == 5, started
    run_id = started.json()["run_id"]
    work = repo / ".agentsaga" / "worktrees" / run_id
    (work / "app.txt").write_text("v1\nw\nby hand\n")

    refused = agentsaga(repo, "reject", run_id, "--comment", "no")
    assert refused.exit_code == 2, refused
    assert "app.txt" in refused.stderr and "reviewer-edits-1-1" in refused.stderr

    approved = agentsaga(repo, "approve", run_id)
    assert approved.exit_code == 0, approved
    wait_for_status(tmp_path, run_id, "succeeded")
    assert (work / "deployed").read_text() == "v1\nw\nby hand\n"
    message = subprocess.run(
        ["git", "log", "-1", "--format=%B", f"agentsaga/{run_id}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Agentsaga-Reviewer-Edits: review (visit 1)" in message


def test_a_gate_deadline_is_a_workflow_timer(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
) -> None:
    """Locally a gate's timeout applies when the run is next driven; on Temporal the
    waiting workflow's timer applies it when it falls due, with no one running a command."""
    before = capture(repo)
    pipeline = write(
        tmp_path / "p.yml",
        """
        name: deadline
        steps:
          - id: change
            kind: shell
            run: "echo x > x.txt"
            commit: true
            compensate: {git: reset}
          - id: review
            kind: approve
            timeout: 1s
            on_timeout: rollback
        """,
    )
    temporal.worker(repo)
    started = agentsaga(repo, "run", pipeline, "--temporal", temporal.address, "--detach")
    assert started.exit_code == 0, started
    run_id = started.stdout.strip()
    wait_for_status(tmp_path, run_id, "rolled_back", "rollback_failed")
    assert status_of(tmp_path, run_id) == "rolled_back"
    assert capture(repo) == before
    shown = agentsaga(repo, "show", run_id, "--json").json()
    assert [d["decision"] for d in shown["decisions"]] == ["timed_out"]


def test_a_fork_of_a_temporal_run_runs_on_temporal_reusing_the_parents_checkpoints(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
) -> None:
    flag = tmp_path / "flag"
    flag.write_text("")
    pipeline = write(tmp_path / "p.yml", EDITS.replace("{flag}", str(flag)))
    before = capture(repo)
    temporal.worker(repo)
    parent = agentsaga(repo, "run", pipeline, "--temporal", temporal.address, "--json")
    assert parent.exit_code == 0, parent
    parent_id = parent.json()["run_id"]

    # No --temporal: a fork goes where its parent ran.
    forked = agentsaga(repo, "fork", parent_id, "--from", "edit", "--json")
    assert forked.exit_code == 0, forked
    fork_id = forked.json()["run_id"]
    assert fork_id != parent_id and forked.json()["status"] == "succeeded"
    opened = store_of(tmp_path)
    try:
        assert opened.get_run(fork_id).state["temporal"]["task_queue"] == temporal.queue
    finally:
        opened.close()
    fork_attempts = attempts_of(tmp_path, fork_id)
    assert [(a.step_id, a.reused_from is not None) for a in fork_attempts] == [
        ("add", True),
        ("gate", True),
        ("edit", False),
    ]
    assert git(repo, "show", f"agentsaga/{fork_id}:new.txt") == "added\n"

    for run_id in (fork_id, parent_id):
        assert agentsaga(repo, "rollback", run_id).exit_code == 0
    assert capture(repo) == before


def test_ctrl_c_interrupts_a_temporal_run_and_leaves_it_resumable(
    tmp_path: Path,
    temporal: Temporal,
    repo: Path,
) -> None:
    gate, ledger = tmp_path / "go", tmp_path / "ledger"
    pipeline = write(
        tmp_path / "p.yml",
        f"""
        name: interrupt
        workspace: {{isolation: none}}
        steps:
          - id: first
            kind: shell
            run: "echo first >> {ledger}"
          - id: wait
            kind: shell
            run: "echo wait >> {ledger}; while [ ! -f {gate} ]; do sleep 0.05; done"
        """,
    )
    temporal.worker(repo)
    err = tmp_path / "follow.err"
    with err.open("wb") as sink:
        follower = subprocess.Popen(
            agentsaga_argv("run", pipeline, "--temporal", temporal.address),
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        wait_until(lambda: "wait (attempt 1): running" in err.read_text(), timeout=90)
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=120) == 130, err.read_text()
    finally:
        if follower.poll() is None:
            follower.kill()
    assert "interrupted; resume with: agentsaga resume" in err.read_text()
    run_id = next(line.split()[1] for line in err.read_text().splitlines() if "started" in line)
    run_id = run_id.rstrip(":")
    assert status_of(tmp_path, run_id) == "interrupted"
    assert [(a.step_id, a.status) for a in attempts_of(tmp_path, run_id)] == [
        ("first", "completed"),
        ("wait", "interrupted"),  # stopped and recorded, as a local Ctrl-C records it
    ]

    gate.write_text("")
    resumed = agentsaga(repo, "resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed
    assert ledger.read_text().split() == ["first", "wait", "wait"]
