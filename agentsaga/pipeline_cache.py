"""Parsed pipelines kept on disk, so resuming a long run does not parse its YAML again.

A run stores its pipeline as text; every ``resume``, ``rollback`` or ``show`` of it parses
that text (0.45 s of CPU for 10,000 steps, most of a resume). When a run of a long
pipeline (``MIN_STEPS`` steps or more) starts, the parsed ``Pipeline`` is pickled into
``<repo>/.agentsaga/cache/pipelines/`` (private, like the store beside it: whoever can
write there can already change the commands a run executes); loading it back takes
~40 ms. The file name is a hash of the text, its path, the run's vars and this
installation's parsing code (``pipeline.py``, ``pipeline_model.py``, this module,
``schema.py``, ``yaml_nodes.py``, the step kinds, the version): a changed text or a
changed agentsaga never reads an old entry. A missing, unreadable or stale entry means
parsing the text, as before.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import os
import pickle
import sys
from pathlib import Path
from typing import BinaryIO

from agentsaga.pipeline import Pipeline, Step

MIN_STEPS = 500
#: Steps per pickle in an entry (each pickle's memo is freed when it is written).
CHUNK = 500
_CODE = (
    "pipeline.py",
    "pipeline_model.py",
    "pipeline_cache.py",
    "schema.py",
    "step_stream.py",
    "yaml_nodes.py",
    "steps/__init__.py",
)

VarsKey = tuple[tuple[str, str], ...]


@functools.lru_cache(maxsize=1)
def _code_key() -> str:
    import agentsaga

    digest = hashlib.sha256(f"{agentsaga.__version__} {sys.version}".encode())
    package = Path(agentsaga.__file__).parent
    for name in _CODE:
        try:
            digest.update((package / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()


def entry(home: Path, text: str, path: str, key: VarsKey) -> Path:
    digest = hashlib.sha256(_code_key().encode())
    for part in (text, path, repr(key)):
        digest.update(b"\0" + part.encode())
    return home / "cache" / "pipelines" / f"{digest.hexdigest()[:40]}.pickle"


def save(home: Path, pipeline: Pipeline, key: VarsKey) -> None:
    """Keep a long pipeline's parsed form (best effort: a failure only costs a parse).

    Written as the pipeline without its steps, then its steps ``CHUNK`` at a time, each
    chunk a pickle of its own: one pickle of the whole pipeline memoised every object it
    wrote (~5 MB for 10,000 steps, held while the run's first steps ran)."""
    if len(pipeline.steps) < MIN_STEPS:
        return
    target = entry(home, pipeline.text, pipeline.path, key)
    if target.exists():
        return
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            head = dataclasses.replace(pipeline, steps=())
            pickle.dump((len(pipeline.steps), head), out, protocol=pickle.HIGHEST_PROTOCOL)
            for start in range(0, len(pipeline.steps), CHUNK):
                chunk = pipeline.steps[start : start + CHUNK]
                pickle.dump(chunk, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)


def load(home: Path, text: str, path: str, key: VarsKey) -> Pipeline | None:
    collecting = gc.isenabled()
    gc.disable()  # tens of thousands of objects, no cycle (as in pipeline.load_text)
    try:
        with entry(home, text, path, key).open("rb") as stream:
            pipeline = _unpickle(stream)
    except OSError:
        return None
    except Exception:  # noqa: BLE001 - a damaged entry is a cache miss
        return None
    finally:
        if collecting:
            gc.enable()
    if pipeline is None or pipeline.text != text or pipeline.path != path:
        return None
    return pipeline


def _unpickle(stream: BinaryIO) -> Pipeline | None:
    count, head = pickle.load(stream)
    if not isinstance(head, Pipeline) or not isinstance(count, int):
        return None
    steps: list[Step] = []
    while len(steps) < count:
        chunk = pickle.load(stream)
        if not isinstance(chunk, tuple) or not all(isinstance(s, Step) for s in chunk):
            return None
        steps.extend(chunk)
    return dataclasses.replace(head, steps=tuple(steps))
