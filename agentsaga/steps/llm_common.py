"""What the LLM step kinds share: their system prompts and JSON extraction."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from agentsaga.context import StepContext
from agentsaga.errors import AgentsagaError

# Models vary the fence: ```json, ```JSON, a bare ```, CRLF, the closing fence on the
# JSON's last line. Any of them holds the plan.
_FENCED_JSON = re.compile(r"```[ \t]*(?:json)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)


def system_prompt(ctx: StepContext, kind: str) -> str:
    """The pipeline's ``system:`` if given, else the packaged prompt for the kind."""
    given = ctx.params.get("system")
    if given:
        return str(given)
    return resources.files("agentsaga.prompts").joinpath(f"{kind}.md").read_text("utf-8")


def gateway(ctx: StepContext) -> Any:
    if ctx.llm is None:
        raise AgentsagaError(f"step {ctx.step.id!r} needs an LLM but the engine gave none")
    return ctx.llm


def extract_json(text: str) -> Any:
    """The reply as JSON when it is a JSON document or holds a fenced JSON block."""
    stripped = text.strip()
    candidates = [stripped] + [m.group(1).strip() for m in _FENCED_JSON.finditer(text)]
    for candidate in candidates:
        if candidate[:1] in ("{", "["):
            try:
                return json.loads(candidate)
            except ValueError:
                continue
    return None
