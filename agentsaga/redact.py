"""Secrets out of everything we store or print.

A secret is the value of any environment variable whose name looks like one (``*KEY*``,
``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``) — provider keys included. A
command that echoes one has it replaced by ``***`` in its stored tail and in its log file.
Short values are left alone: replacing "1" everywhere would destroy the output and protect
nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_MIN_LENGTH = 6
MASK = "***"


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    values = {
        v
        for k, v in env.items()
        if _SECRET_NAME.search(k) and len(v) >= _MIN_LENGTH and k != "AGENTSAGA_IDEMPOTENCY_KEY"
    }
    # Longest first: a secret containing another is masked whole.
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_file(path: Path, secrets: list[str]) -> None:
    """Mask secrets in a log file in place (after its command has ended)."""
    if not secrets:
        return
    try:
        data = path.read_bytes()
    except OSError:
        return
    encoded = [s.encode() for s in secrets]
    if not any(s in data for s in encoded):
        return
    for secret in encoded:
        data = data.replace(secret, MASK.encode())
    path.write_bytes(data)


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
