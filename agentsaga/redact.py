"""Secrets out of everything we store or print.

A secret is the value of any environment variable whose name looks like one (``*KEY*``,
``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``) — provider keys included. A
command that echoes one has it replaced by ``***`` in its log file as the output streams
(MaskingWriter), the store masks every output, error and state it writes, and the CLI
masks everything it prints (MaskedStream).
Short values are left alone: replacing "1" everywhere would destroy the output and protect
nothing.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from agentsaga import environ

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_MIN_LENGTH = 6
MASK = "***"


@functools.lru_cache(maxsize=4096)
def _secret_name(name: str) -> bool:
    # Cached per name: the engine asks about the same few dozen variables several times
    # per step, and a case-insensitive regex search per name was a tenth of a step's CPU.
    return bool(_SECRET_NAME.search(name)) and name not in _NOT_SECRET


#: agentsaga's own variables, named like secrets and not: masking the attempt's token
#: would also put every command's output through a masking thread.
_NOT_SECRET = frozenset({"AGENTSAGA_IDEMPOTENCY_KEY", "AGENTSAGA_ATTEMPT_TOKEN"})


#: The secrets of the last environment snapshot asked about, with that snapshot.
_of_environ: tuple[dict[str, str], list[str]] | None = None


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in ``env`` (default: this process's environment)."""
    global _of_environ
    if env is None:
        snap = environ.snapshot()
        memo = _of_environ
        if memo is not None and memo[0] is snap:
            return list(memo[1])
        found = secret_values(snap)
        _of_environ = (snap, found)
        return list(found)
    values = {v for k, v in env.items() if len(v) >= _MIN_LENGTH and _secret_name(k)}
    # Longest first: a secret containing another is masked whole.
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_json(value: Any, secrets: list[str]) -> Any:
    """``value`` (JSON-able) with every secret masked wherever it appears."""
    if not secrets or value is None:
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    if not any(json.dumps(secret)[1:-1] in text for secret in secrets):
        return value
    for secret in secrets:
        text = text.replace(json.dumps(secret)[1:-1], MASK)
    return json.loads(text)


def redact_for_store(value: Any) -> Any:
    """What the store keeps of an output, an error or a run's state: secrets masked. The
    store masks every JSON it writes, so no caller can forget (an edit failure's
    "closest lines" may quote a file's secret; a failed step's output is a model reply)."""
    if value is None:
        return None  # a checkpoint's error: the environment need not be looked at
    return redact_json(value, secret_values())


class MaskingWriter:
    """Writes bytes to ``sink`` with every secret masked as it streams: the last
    ``len(longest secret) - 1`` bytes are held back until more arrive, so a secret split
    across two reads is masked whole, and a process killed mid-command leaves at most a
    secret's partial prefix unwritten, never the secret in the file."""

    def __init__(self, sink: Any, secrets: list[str]) -> None:
        self.sink = sink
        self.secrets = [s.encode() for s in secrets]
        self.keep = max((len(s) for s in self.secrets), default=1) - 1
        self.carry = b""

    def write(self, data: bytes) -> None:
        data = self.carry + data
        for secret in self.secrets:
            data = data.replace(secret, MASK.encode())
        cut = max(len(data) - self.keep, 0)
        self.carry = data[cut:]
        self.sink.write(data[:cut])
        self.sink.flush()

    def close(self) -> None:
        self.sink.write(self.carry)
        self.carry = b""
        self.sink.flush()


class MaskedStream:
    """A text stream (stdout, stderr) that masks secrets in what is written to it: the
    CLI's one place where every message, table and ``--json`` passes."""

    def __init__(self, stream: Any, secrets: list[str]) -> None:
        self._stream = stream
        self._secrets = secrets

    def write(self, text: str) -> int:
        self._stream.write(redact(text, self._secrets))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
