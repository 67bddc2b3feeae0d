"""``plan``: one LLM call. Output ``text``, and ``json`` when the reply is (or holds) JSON,
checked against the step's optional ``schema:``. A prompt that reads ``${{ rewind.* }}``
sends what comes before that as the cacheable prefix, as the write step does: a plan
re-run after a rewind pays the cache-read price for its unchanged part."""

from __future__ import annotations

from typing import Any

from agentsaga.context import StepContext
from agentsaga.errors import StepFailed
from agentsaga.steps.llm_common import extract_json, gateway, system_prompt


def execute(ctx: StepContext) -> dict[str, Any]:
    llm = gateway(ctx)
    settings = llm.settings(ctx.params, ctx.pipeline.defaults)
    from agentsaga.steps.write import split_prompt

    prefix, prompt = split_prompt(ctx)
    reply = llm.ask(settings, system=system_prompt(ctx, "plan"), prompt=prompt, cache_prefix=prefix)
    data = extract_json(reply.text)
    schema = ctx.params.get("schema")
    if schema is not None:
        check_schema(data, schema, reply.text)
    return {"text": reply.text, "json": data}


def check_schema(data: Any, schema: Any, text: str) -> None:
    """A reply that breaks the schema fails the step, and the reply is judged (kind
    ``schema``): a retry asks the model again instead of reusing it."""
    import jsonschema

    if data is None:
        raise StepFailed(
            "the plan must be JSON matching the step's schema, but the reply holds no JSON: "
            + text[:300],
            kind="schema",
        )
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise StepFailed(
            f"the plan's JSON breaks the schema at {where}: {first.message}", kind="schema"
        )
