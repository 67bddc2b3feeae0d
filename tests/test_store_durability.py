"""Store durability (issue 6, part 2): kill -9 in the middle of a burst of checkpoints never
damages the database, and a read-only or full disk fails with a clear message and leaves a
run that resumes once the disk is fixed.

The read-only and full disks are real: a 1 MB tmpfs mounted for the test (we run as root,
so ``chmod`` would stop nothing), remounted read-only or filled by the pipeline's own step
at the moment the next checkpoint is due. Where mounting is not permitted the test is
skipped and says why.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Env, Spawned, agentsaga_argv, run_agentsaga, wait_until
from tests.gitstate import git, make_repo
from tests.pipelines_util import pipeline, step

pytestmark = pytest.mark.slow

# Enough steps that ten kills land before the burst ends even at ~2 ms a step (a no-op
# step's cost since the engine stopped re-reading the run and waits on a pidfd).
BURST_STEPS = 1200
KILLS = 10


def burst_pipeline(n: int) -> str:
    return pipeline(
        *(step(f"s{i}", "echo $AGENTSAGA_STEP_ID >> ledger", undo=False) for i in range(n)),
        name="burst",
    )


def integrity(db: Path) -> tuple[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(db)
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        fks = list(conn.execute("PRAGMA foreign_key_check"))
        return ok, fks
    finally:
        conn.close()


def completed_counts(db: Path, run_id: str) -> Counter[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT step_id FROM step_attempts WHERE run_id = ? AND status = 'completed'",
            (run_id,),
        )
        return Counter(r[0] for r in rows)
    finally:
        conn.close()


@pytest.mark.timeout(180)
def test_sigkill_during_a_checkpoint_burst_never_corrupts_the_store(env: Env) -> None:
    path = env.write("p.yml", burst_pipeline(BURST_STEPS))
    db = env.path / "state.db"
    rng = random.Random(20240606)  # fixed: a failure can be replayed
    kills = 0
    run_id: str | None = None
    for round_no in range(KILLS):
        start = len(env.ledger.lines())
        proc: Spawned = env.spawn("run", path) if run_id is None else env.spawn("resume", run_id)
        # Kill somewhere inside the burst: once it is stepping, at a random moment.
        wait_until(
            lambda p=proc, n=start: len(env.ledger.lines()) > n or p.proc.poll() is not None,
            what="the burst to start",
        )
        time.sleep(rng.uniform(0.0, 0.1))  # ~2-10 ms a step: at most ~50 steps a round
        if proc.proc.poll() is None:
            proc.kill()
            kills += 1
        else:
            proc.wait()
        ok, fks = integrity(db)
        assert ok == "ok", f"round {round_no}: {ok}"
        assert fks == [], f"round {round_no}: foreign keys {fks}"
        run_id = run_id or env.newest_run_id()
        if env.run_status(run_id) == "succeeded":
            break
    assert run_id is not None
    assert kills >= KILLS - 1, "the run finished before it could be killed; shorten the delay"
    final = run_agentsaga("resume", run_id, timeout=120)
    assert final.exit_code == 0, final
    assert "Traceback" not in final.stderr

    # Every step ran at least once; a kill re-runs at most the one step it interrupted;
    # and every step has exactly one completed checkpoint.
    ran = Counter(env.ledger.lines())
    assert set(ran) == {f"s{i}" for i in range(BURST_STEPS)}
    assert sum(ran.values()) - BURST_STEPS <= kills, ran.most_common(5)
    assert completed_counts(db, run_id) == Counter({f"s{i}": 1 for i in range(BURST_STEPS)})
    assert integrity(db) == ("ok", [])


# --- a disk that stops taking writes ---------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs of our own, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(
            ["mount", "-o", "remount,rw", str(mount_point)], check=False, capture_output=True
        )
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)


def _status(db: Path) -> tuple[str, str]:
    conn = sqlite3.connect(db)
    try:
        ((run_id, status),) = list(conn.execute("SELECT id, status FROM runs"))
        return run_id, status
    finally:
        conn.close()


def test_a_disk_filling_up_mid_run_gives_a_clear_error_and_a_resumable_run(
    env: Env, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """s1, then a step that fills the disk holding the store (once: its marker lives off
    that disk), so its own checkpoint cannot be written; then s3."""
    db = small_disk / "state.db"
    monkeypatch.setenv("AGENTSAGA_STORE", str(db))
    fill = f"dd if=/dev/zero of={small_disk}/fill bs=4k 2>/dev/null; true"
    path = env.write(
        "p.yml",
        pipeline(
            step("s1", undo=False),
            step(
                "filler",
                f"echo filler >> ledger; [ -f once ] || {{ touch once; {fill}; }}",
                undo=False,
            ),
            step("s3", undo=False),
            name="disk",
        ),
    )

    first = run_agentsaga("run", path, timeout=60)
    assert first.exit_code != 0, first
    assert "Traceback" not in first.stderr, first
    assert "full" in first.stderr.lower(), first  # says what is wrong with the disk
    assert "resume" in first.stderr.lower(), first  # and what to do once it is fixed

    (small_disk / "fill").unlink()
    assert integrity(db) == ("ok", [])
    run_id, _ = _status(db)
    second = run_agentsaga("resume", run_id, timeout=60)
    assert second.exit_code == 0, second
    assert _status(db) == (run_id, "succeeded")
    assert env.ledger.lines() == ["s1", "filler", "filler", "s3"]  # s1's checkpoint held


def test_a_read_only_store_refuses_clearly_and_the_run_resumes_once_writable(
    env: Env, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run fails at s2; the disk then turns read-only (a remount: root ignores chmod,
    and a filesystem busy with an open database cannot be remounted mid-run). Resume must
    refuse with a clear message and change nothing; once writable, resume finishes."""
    db = small_disk / "state.db"
    monkeypatch.setenv("AGENTSAGA_STORE", str(db))
    path = env.write(
        "p.yml",
        pipeline(
            step("s1", undo=False),
            step("s2", "echo s2 >> ledger; test -f flag", undo=False),
            step("s3", undo=False),
            name="ro",
        ),
    )
    assert run_agentsaga("run", path).exit_code == 1
    run_id, status = _status(db)
    assert status == "failed"
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    (env.path / "flag").touch()

    refused = run_agentsaga("resume", run_id)
    assert refused.exit_code != 0, refused
    assert "Traceback" not in refused.stderr, refused
    assert refused.stderr.startswith("error:"), refused
    assert env.ledger.lines() == ["s1", "s2"]  # nothing ran without a store to record it

    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    done = run_agentsaga("resume", run_id)
    assert done.exit_code == 0, done
    assert _status(db) == (run_id, "succeeded")
    assert env.ledger.lines() == ["s1", "s2", "s2", "s3"]
    # Last, so the resumability above is proven either way: the message must say what is
    # wrong ("unable to open database file" does not) and what to do.
    assert "read-only" in refused.stderr and "resume" in refused.stderr, refused


def test_every_durable_commit_fsyncs_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the README claims about power loss rests on this and nothing else: the store
    is in WAL mode and every durable commit is followed by an fsync of the WAL file
    (what ``synchronous=FULL`` does, before the commit returns), so a checkpoint that was
    committed survives a power cut (as far as the disk honours fsync). No test cuts
    power; the kill tests above prove SIGKILL."""
    from agentsaga.store import RunRecord, new_run_id
    from agentsaga.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "state.db")
    synced: list[str] = []
    from agentsaga.store import wal_sync

    real = wal_sync._datasync
    assert real is getattr(os, "fdatasync", os.fsync)  # what SQLite's FULL calls

    def datasync(fd: int) -> None:
        real(fd)
        if os.path.samestat(os.fstat(fd), os.stat(tmp_path / "state.db-wal")):
            synced.append("wal")

    monkeypatch.setattr(wal_sync, "_datasync", datasync)
    try:
        with store.reading() as cur:
            assert cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rid = new_run_id()
        store.create_run(
            RunRecord(id=rid, pipeline_name="p", pipeline_path="p.yml", pipeline_text="",
                      pipeline_hash="h", vars={}, status="running", workspace={}, state={})
        )  # fmt: skip
        assert synced == ["wal"]
        attempt = store.start_attempt(rid, "a", 0, fingerprint="f", base_commit=None, snapshot=None)
        assert synced == ["wal"]  # a running record: no fsync of its own
        store.finish_attempt(attempt.id, status="completed", output={})
        assert synced == ["wal", "wal"]
    finally:
        store.close()


def test_a_read_only_store_still_answers_runs_show_and_logs(
    env: Env, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10, item 11: on a read-only filesystem the commands that only read work;
    one that must write fails with a message naming the store, before running anything."""
    db = small_disk / "state.db"
    monkeypatch.setenv("AGENTSAGA_STORE", str(db))
    path = env.write("p.yml", pipeline(step("s1", "echo s1 >> ledger", undo=False)))
    first = run_agentsaga("run", path)
    assert first.exit_code == 0, first
    run_id, _ = _status(db)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for args in (("runs",), ("show", run_id), ("logs", run_id), ("report", run_id)):
        result = run_agentsaga(*args)
        assert result.exit_code == 0, (args, result)
    assert run_id in run_agentsaga("runs").stdout
    assert "succeeded" in run_agentsaga("show", run_id).stdout
    for args in (("run", str(path)), ("rollback", run_id)):
        result = run_agentsaga(*args)
        assert result.exit_code != 0, (args, result)
        assert "Traceback" not in result.stderr, (args, result)
        assert str(db) in result.stderr and "read-only" in result.stderr, (args, result)
        assert result.stderr.startswith("error:"), (args, result)
    assert env.ledger.lines() == ["s1"]


def test_an_empty_store_file_is_damaged_not_silently_recreated(env: Env, tmp_path: Path) -> None:
    """Issue 10, item 11: a zero-byte state.db (truncated) must not become a new, empty
    store that forgets the runs whose branches and worktrees are still there."""
    path = env.write("p.yml", pipeline(step("s1", undo=False)))
    assert run_agentsaga("run", path).exit_code == 0
    db = tmp_path / "state.db"
    db.write_bytes(b"")
    for args in (("runs",), ("run", str(path))):
        result = run_agentsaga(*args)
        assert result.exit_code != 0, (args, result)
        assert "damaged" in result.stderr and "empty" in result.stderr, (args, result)
        assert result.stderr.startswith("error:"), (args, result)
    assert db.stat().st_size == 0, "the damaged store was overwritten"


# --- the store's folder stays out of the user's way ------------------------------------------


def test_opening_the_default_store_keeps_it_out_of_git_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README: `.agentsaga/` never shows in `git status`. Reading commands create no
    store; `run` creates it before it opens the workspace, so a run killed early (here:
    as its first step starts) must already have hidden it."""
    repo = make_repo(tmp_path, {"a.txt": "a\n"})
    monkeypatch.delenv("AGENTSAGA_STORE")
    listed = subprocess.run(
        agentsaga_argv("runs"), cwd=repo, capture_output=True, text=True, check=False
    )
    assert listed.returncode == 0, listed.stderr
    assert not (repo / ".agentsaga").exists()  # reading never writes
    (tmp_path / "p.yml").write_text(pipeline(step("s1", "echo hi", undo=False)))
    killed = subprocess.run(
        agentsaga_argv("run", tmp_path / "p.yml"),
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AGENTSAGA_FAULT": "step.before_record"},
    )
    assert killed.returncode == -9, killed.stderr
    assert (repo / ".agentsaga" / "state.db").exists()
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_isolation_none_run_keeps_the_store_out_of_git_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path, {"a.txt": "a\n"})
    monkeypatch.delenv("AGENTSAGA_STORE")
    (tmp_path / "p.yml").write_text(pipeline(step("s1", "echo hi", undo=False)))
    result = subprocess.run(
        agentsaga_argv("run", tmp_path / "p.yml"),
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
