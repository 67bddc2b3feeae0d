"""Parsed pipelines kept on disk for long runs (agentsaga/pipeline_cache.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agentsaga import pipeline_cache, runtime
from agentsaga.engine import Engine
from agentsaga.pipeline import Pipeline, load_text
from agentsaga.store.sqlite import SqliteStore


def _text(n: int) -> str:
    steps = "".join(f'  - id: s{i}\n    kind: shell\n    run: ["true"]\n' for i in range(n))
    return f"name: long\nvars: {{who: me}}\nworkspace: {{isolation: none}}\nsteps:\n{steps}"


def _run(tmp_path: Path, n: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline_cache, "MIN_STEPS", 3)
    pipeline = load_text(_text(n), "long.yml", {"who": "you"})
    engine = Engine(SqliteStore(tmp_path / "state.db"), tmp_path / ".agentsaga")
    result = engine.run(pipeline, None)
    for thread in threading.enumerate():
        if thread.name == "agentsaga-pipeline-cache":
            thread.join(60)
    assert result.status == "succeeded"
    return engine, result.run_id


def _fresh() -> None:
    runtime.stored_pipeline.cache_clear()
    runtime.load_stored.cache_clear()


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> Pipeline:
        raise AssertionError("parsed the stored text")

    monkeypatch.setattr(runtime, "load_text", refuse)


def test_a_long_run_leaves_its_parsed_pipeline_and_resume_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, run_id = _run(tmp_path, 4, monkeypatch)
    entries = list((tmp_path / ".agentsaga" / "cache" / "pipelines").glob("*.pickle"))
    assert len(entries) == 1 and entries[0].stat().st_mode & 0o777 == 0o600
    _fresh()
    _no_parsing(monkeypatch)
    run = engine.store.get_run(run_id)
    pipeline = engine.rt.pipeline_of(run)
    assert [s.id for s in pipeline.steps] == ["s0", "s1", "s2", "s3"]
    assert pipeline.vars == {"who": "you"} and pipeline.text == run.pipeline_text


def test_a_stale_or_damaged_entry_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, run_id = _run(tmp_path, 4, monkeypatch)
    run = engine.store.get_run(run_id)
    (entry,) = (tmp_path / ".agentsaga" / "cache" / "pipelines").glob("*.pickle")
    # Another agentsaga (its parsing code changed): the entry is not even looked up.
    _fresh()
    monkeypatch.setattr(pipeline_cache, "_code_key", lambda: "another version")
    assert pipeline_cache.load(engine.home, run.pipeline_text, run.pipeline_path, ()) is None
    monkeypatch.undo()
    # A damaged entry: parsed from the text, the same pipeline.
    entry.write_bytes(b"not a pickle")
    _fresh()
    assert [s.id for s in engine.rt.pipeline_of(run).steps] == ["s0", "s1", "s2", "s3"]


def test_short_pipelines_are_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = Engine(SqliteStore(tmp_path / "state.db"), tmp_path / ".agentsaga")
    assert engine.run(load_text(_text(2), "short.yml"), None).status == "succeeded"
    assert not (tmp_path / ".agentsaga" / "cache").exists()


def test_an_entry_of_many_chunks_is_the_same_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps are written a chunk at a time (each its own pickle): read back, the
    pipeline equals the one parsed, whatever the count against the chunk size."""
    monkeypatch.setattr(pipeline_cache, "MIN_STEPS", 1)
    monkeypatch.setattr(pipeline_cache, "CHUNK", 3)
    for n in (1, 3, 7):
        text = _text(n) + "    env: {A: b}\n"
        parsed = load_text(text, "long.yml", {"who": "you"})
        home = tmp_path / str(n)
        pipeline_cache.save(home, parsed, (("who", "you"),))
        loaded = pipeline_cache.load(home, text, "long.yml", (("who", "you"),))
        assert loaded == parsed and loaded is not parsed
        assert [s.fields for s in loaded.steps] == [s.fields for s in parsed.steps]
        # The same text at another path, or another text, is not this entry.
        assert pipeline_cache.load(home, text, "other.yml", (("who", "you"),)) is None
        assert pipeline_cache.load(home, text + "# edited\n", "long.yml", (("who", "you"),)) is None


def test_an_entry_cut_short_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_cache, "MIN_STEPS", 1)
    monkeypatch.setattr(pipeline_cache, "CHUNK", 2)
    text = _text(5)
    pipeline_cache.save(tmp_path, load_text(text, "long.yml"), ())
    entry = pipeline_cache.entry(tmp_path, text, "long.yml", ())
    entry.write_bytes(entry.read_bytes()[:-40])  # the last chunk lost
    assert pipeline_cache.load(tmp_path, text, "long.yml", ()) is None
