"""The prompt caches of Anthropic and OpenAI, as the loopback server (tests/llm_server.py)
implements them: usage is computed from what the request actually sent, not declared.

Tokens: one token per 4 characters of a block's canonical JSON (rounded up), so a test or
a benchmark sizes a prompt by its length. What each API does, per its documentation:

* **Anthropic** (explicit caching). A prompt is a sequence of blocks in the API's order:
  tools, system blocks, then each message's content blocks (a string content is one
  block). A block carrying ``cache_control`` is a breakpoint (at most 4). A request reads
  the longest prefix, ending at a block boundary no later than its last breakpoint, that
  an earlier request wrote and whose entry has not expired (a hit refreshes the TTL); it
  writes the prefix up to each of its breakpoints that is not cached yet. A prefix below
  the model's minimum cacheable length (1,024 tokens; 2,048 for Haiku 3 / 3.5; 4,096 for
  Opus 4.5 and Haiku 4.5) is neither written nor read: it is plain input. Reported as
  ``cache_read_input_tokens`` (the prefix read), ``cache_creation_input_tokens`` (from
  there to the last cacheable breakpoint) and ``input_tokens`` (the rest). Entries are per
  model. Not modelled: the 20-block lookback limit, the 1-hour TTL option.
* **OpenAI** (automatic). Every prompt of 1,024 tokens or more is cached; a request reads
  the longest prefix it shares with a live earlier prompt of the same model, counted in
  128-token steps from 1,024 (a shared prefix of 1,500 tokens reads 1,408). Reported as
  ``usage.prompt_tokens_details.cached_tokens``, inside ``prompt_tokens``.

TTL: 5 minutes by default, on an injectable clock so tests never sleep.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CHARS_PER_TOKEN = 4
OPENAI_MIN_TOKENS = 1024
OPENAI_STEP_TOKENS = 128
ANTHROPIC_MAX_BREAKPOINTS = 4


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def anthropic_min_tokens(model: str) -> int:
    if "opus-4-5" in model or "haiku-4-5" in model:
        return 4096
    if "haiku" in model:
        return 2048
    return 1024


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def anthropic_blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """``(canonical text, is a breakpoint)`` of each block of a Messages API body, in the
    order the cache sees them. The marker itself is not part of the cached content."""
    blocks: list[tuple[str, bool]] = []

    def add(block: dict[str, Any], role: str = "") -> None:
        marked = "cache_control" in block
        content = {k: v for k, v in block.items() if k != "cache_control"}
        blocks.append((role + _canon(content), marked))

    for tool in body.get("tools") or []:
        add(tool, "tool:")
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    for block in system:
        add(block, "system:")
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            add({"type": "text", "text": content}, message.get("role", "") + ":")
            continue
        for block in content or []:
            add(block, message.get("role", "") + ":")
    return blocks


def openai_prompt(body: dict[str, Any]) -> str:
    """The text an OpenAI prompt cache compares: tools, then the messages, in order."""
    parts = [_canon(t) for t in body.get("tools") or []]
    parts += [_canon(m) for m in body.get("messages") or []]
    return "".join(parts)


@dataclass
class PromptCache:
    """The server's cache. ``clock`` returns seconds (monotonic); tests pass their own."""

    ttl_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    #: False: count the tokens of what was sent, cache nothing (every token full price).
    enabled: bool = True
    _anthropic: dict[str, float] = field(default_factory=dict)
    _openai: list[tuple[str, str, list[float]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def anthropic_usage(self, body: dict[str, Any]) -> dict[str, int]:
        """``{input, cache_read, cache_write}`` of a Messages API request, caching it."""
        model = str(body.get("model", ""))
        minimum = anthropic_min_tokens(model)
        blocks = anthropic_blocks(body)
        marks = [i for i, (_, marked) in enumerate(blocks) if marked]
        if len(marks) > ANTHROPIC_MAX_BREAKPOINTS:
            raise ValueError(f"{len(marks)} cache_control blocks; the API allows 4")
        sizes, keys = [], []
        total, chain = 0, hashlib.sha256(model.encode())
        for text, _ in blocks:
            total += tokens(text)
            chain.update(text.encode() + b"\0")
            sizes.append(total)
            keys.append(chain.hexdigest())
        read, hit = 0, -1
        if not self.enabled:
            return {"input": total, "cache_read": 0, "cache_write": 0}
        with self._lock:
            now = self.clock()
            if marks:
                for i in range(marks[-1], -1, -1):
                    if self._anthropic.get(keys[i], -math.inf) > now:
                        read, hit = sizes[i], i
                        self._anthropic[keys[i]] = now + self.ttl_s
                        break
            cacheable = [b for b in marks if sizes[b] >= minimum]
            for b in cacheable:
                if b > hit:
                    self._anthropic[keys[b]] = now + self.ttl_s
        write = sizes[cacheable[-1]] - read if cacheable and cacheable[-1] > hit else 0
        return {"input": total - read - write, "cache_read": read, "cache_write": write}

    def openai_usage(self, body: dict[str, Any]) -> dict[str, int]:
        """``{input, cache_read}`` of a Chat Completions request (input excludes the
        cached part, agentsaga's convention), caching its prompt."""
        model = str(body.get("model", ""))
        prompt = openai_prompt(body)
        total = tokens(prompt)
        shared = 0
        if not self.enabled:
            return {"input": total, "cache_read": 0}
        with self._lock:
            now = self.clock()
            live = [entry for entry in self._openai if entry[2][0] > now]
            for seen_model, text, expiry in live:
                if seen_model == model:
                    common = len(os.path.commonprefix([text, prompt])) // CHARS_PER_TOKEN
                    if common >= OPENAI_MIN_TOKENS:
                        expiry[0] = now + self.ttl_s
                    shared = max(shared, common)
            if total >= OPENAI_MIN_TOKENS:
                live.append((model, prompt, [now + self.ttl_s]))
            self._openai = live
        cached = 0
        if shared >= OPENAI_MIN_TOKENS:
            steps = (min(shared, total) - OPENAI_MIN_TOKENS) // OPENAI_STEP_TOKENS
            cached = OPENAI_MIN_TOKENS + steps * OPENAI_STEP_TOKENS
        return {"input": total - cached, "cache_read": cached}
