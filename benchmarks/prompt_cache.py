"""The prompt cache's dollars, measured from what the providers actually send.

The seed's workload (plan 5K, read 15K, write 8K, test 3K, deploy 2K; the test fails 20 %
of the time and the saga rewinds to the write) runs through the real engine with the
real ``anthropic`` and ``openai`` SDK clients against the loopback server of the tests
(``tests/llm_server.py``), whose prompt cache follows each API's rules
(``tests/prompt_cache.py``: Anthropic's ``cache_control`` breakpoints and OpenAI's
automatic prefixes, minimum lengths, a 5-minute TTL). Nothing is declared: the prompts
are really that long (4 characters a token), the write and test steps put their stable
context before ``${{ rewind.error }}`` (so the step sends it as the cacheable prefix), and
the usage each call reports is what the server computed from the request. Dollars are
agentsaga's own (genai-prices), read back from the store. Each provider runs the same
tasks twice: the server caching, and not caching (every token full price), side by side.

Policy: saga (``on_failure: {rewind_to: write}``) with the call memo on, ``isolation:
none`` (as in ``tax.py``: the steps are ``plan`` calls of the seed's sizes).

Run from the repository root: python benchmarks/prompt_cache.py [--tasks 40]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests/llm_server.py

from _common import machine  # noqa: E402
from tax import GATE, SEED, Call, draw_outcomes  # noqa: E402

MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4o"}
CHARS = 4  # characters per token on the loopback server


def filler(name: str, tokens: int) -> str:
    """``tokens`` tokens of text unique to ``name``."""
    line = f"[{name}] context line that a real step would send as part of its prompt.\n"
    text = "".join(f"{i:05d} {line}" for i in range(tokens * CHARS // (len(line) + 6) + 1))
    return text[: tokens * CHARS]


def pipeline_text(provider: str) -> str:
    steps, variables = [], {"outcomes": "none", "task": "0"}

    def llm_step(call: Call) -> None:
        stable = call.cacheable or call.input
        variables[f"{call.name}_ctx"] = filler(call.name, stable - 60)
        # The task's own id first: tasks are independent (no prefix shared across them).
        prompt = f"task ${{{{ vars.task }}}}: ${{{{ vars.{call.name}_ctx }}}}"
        if call.cacheable:
            variables[f"{call.name}_tail"] = filler(call.name + "-tail", call.input - stable)
            prompt += f"${{{{ rewind.error }}}}${{{{ vars.{call.name}_tail }}}}"
        steps.append(
            f"  - id: {call.name}\n    kind: plan\n    max_tokens: 4096\n"
            f"    prompt: {json.dumps(prompt)}\n"
        )

    for call in SEED.before_gate:
        llm_step(call)
    steps.append(
        '  - id: test_gate\n    kind: test\n    env: {OUTCOMES: "${{ vars.outcomes }}"}\n'
        f"    run: '{GATE}'\n    on_failure: {{rewind_to: write, max_rewinds: 20}}\n"
    )
    for call in SEED.after_gate:
        llm_step(call)
    head = [
        f"name: cache-{provider}",
        f"vars: {json.dumps(variables)}",
        "workspace: {isolation: none}",
        f"defaults: {{provider: {provider}, model: {MODELS[provider]}}}",
        "steps:",
    ]
    return "\n".join(head) + "\n" + "".join(steps)


def reply_for(request: Any) -> Any:
    """A reply of the seed's output size for the step that asked (named in its prompt)."""
    from tests.llm_server import Behaviour

    body = json.dumps(request.body)
    call = next(c for c in SEED.calls if f"[{c.name}]" in body)
    return Behaviour("reply", text=filler("reply", call.output))


def run_tasks(provider: str, cache: bool, outcomes: list[list[str]], root: Path) -> dict[str, Any]:
    from agentsaga.engine import Engine, EngineOptions
    from agentsaga.pipeline import load_text
    from agentsaga.store.sqlite import SqliteStore
    from tests.llm_server import FakeLLMServer

    root.mkdir(parents=True)
    totals = {"tokens": 0, "cache_read": 0, "cache_write": 0, "usd": 0.0, "calls": 0}
    text = pipeline_text(provider)
    with FakeLLMServer() as server:
        server.script(reply_for).prompt_cache(enabled=cache)
        os.environ["ANTHROPIC_BASE_URL"] = server.anthropic_base_url
        os.environ["OPENAI_BASE_URL"] = server.openai_base_url
        store = SqliteStore(root / "state.db")
        engine = Engine(store, root / ".agentsaga", EngineOptions(config={"memo": "run"}))
        start = time.perf_counter()
        for task, lines in enumerate(outcomes):
            outcome = root / f"outcomes-{task}"
            outcome.write_text("\n".join(lines) + "\n")
            given = {"outcomes": str(outcome), "task": str(task)}
            pipeline = load_text(text, f"cache-{provider}.yml", given)
            result = engine.run(pipeline, None)
            assert result.status == "succeeded", result.status
            for c in store.llm_calls(result.run_id):
                if c.status != "ok":
                    continue
                totals["calls"] += 1
                totals["tokens"] += c.usage.total
                totals["cache_read"] += c.usage.cache_read
                totals["cache_write"] += c.usage.cache_write
                totals["usd"] += c.usage.cost_usd or 0.0
        totals["seconds"] = time.perf_counter() - start
        store.close()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--providers", nargs="+", default=["anthropic", "openai"])
    args = parser.parse_args()
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-loopback")
    os.environ.setdefault("OPENAI_API_KEY", "sk-loopback")
    outcomes = draw_outcomes(random.Random(args.seed), args.tasks, 0.2, "stratified")
    failures = sum(len(o) - 1 for o in outcomes)
    print(
        f"prompt cache, real SDK clients, loopback server ({machine()}); {args.tasks} tasks, "
        f"{failures} test failures (saga rewinds to write, memo on)"
    )
    print(
        f"   {'provider':10} {'model':18} {'cache':6} {'tokens/task':>11} {'read/task':>10} "
        f"{'write/task':>10} {'$/task':>8} {'vs no cache':>11} {'time':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="agentsaga-cache-") as tmp:
        for provider in args.providers:
            rows = {}
            for cache in (False, True):
                rows[cache] = run_tasks(
                    provider, cache, outcomes, Path(tmp) / f"{provider}-{cache}"
                )
            for cache, t in rows.items():
                n = args.tasks
                change = t["usd"] / rows[False]["usd"] - 1
                print(
                    f"   {provider:10} {MODELS[provider]:18} {'on' if cache else 'off':6} "
                    f"{t['tokens'] / n:11,.0f} {t['cache_read'] / n:10,.0f} "
                    f"{t['cache_write'] / n:10,.0f} {t['usd'] / n:8.4f} {change:11.1%} "
                    f"{t['seconds']:5.0f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
