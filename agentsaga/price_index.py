"""Whether a model's price is known, answered without importing the price table each time.

``validate`` checks prices (a newcomer learns before a run that its cost would show as
unknown), but importing genai-prices costs 0.2-0.4 s, more than the rest of ``validate``
together. The answers are remembered in a small file in the user's cache folder, keyed by
the installed price table's data file (its size and modification time), so a new version
of genai-prices starts a fresh file and a stale answer is never given.

The file is a convenience: a missing, unreadable or damaged file is ignored and rewritten,
and a cache folder that cannot be written leaves the answer uncached, never wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_FORMAT = 1


def _table_stamp() -> str | None:
    """The installed price table's identity, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("genai_prices")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data.py"
    try:
        stat = data.stat()
    except OSError:
        return None
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def cache_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "agentsaga" / "price-index.json"


def _read(path: Path, stamp: str) -> dict[str, bool]:
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        return {}
    if document.get("table") != stamp or not isinstance(document.get("known"), dict):
        return {}
    return {str(k): bool(v) for k, v in document["known"].items()}


def _write(path: Path, stamp: str, known: Mapping[str, bool]) -> None:
    document = {"format": _FORMAT, "table": stamp, "known": dict(sorted(known.items()))}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(document), encoding="utf-8")
        os.replace(scratch, path)  # readers see the old file or the new one, never half
    except OSError:
        pass  # a read-only home: the answer is still right, only not remembered


def price_known(provider: str, model: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether genai-prices has a price for ``model`` at ``provider`` (overrides aside)."""
    from agentsaga.pricing import PRICED_PROVIDERS, cost_usd

    if provider not in PRICED_PROVIDERS:
        return False
    stamp = _table_stamp()
    key = f"{provider}/{model}"
    path = cache_path(environ)
    known = _read(path, stamp) if stamp else {}
    if key in known:
        return known[key]
    from agentsaga.providers.base import Usage

    answer = cost_usd(provider, model, Usage(1000, 1000)) is not None
    if stamp:
        known[key] = answer
        _write(path, stamp, known)
    return answer
