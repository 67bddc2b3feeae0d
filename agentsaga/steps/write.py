"""``write``: the model replies with SEARCH/REPLACE blocks; they are applied inside the
workspace and committed on the run branch.

Blocks that do not parse or apply are sent back to the model with the precise failure,
up to ``max_reflections`` times; then the step fails (kind ``edit``: the replies are
judged, so a retry asks anew). Prompt caching: everything in the prompt before its first
``${{ rewind.* }}`` is the same on every pass, so it is sent as the cacheable prefix and a
rewound write pays the cache-read price for its context.
"""

from __future__ import annotations

from typing import Any

from agentsaga import expressions
from agentsaga.context import StepContext
from agentsaga.errors import EditError
from agentsaga.steps.llm_common import gateway, system_prompt

DEFAULT_MAX_REFLECTIONS = 2


def split_prompt(ctx: StepContext) -> tuple[str | None, str]:
    """(stable prefix, the rest) of the rendered prompt; the cut is at the first
    expression that reads ``rewind``."""
    raw = str(ctx.step.fields["prompt"])
    rendered = str(ctx.params["prompt"])
    if not expressions.has_expressions(raw):
        return None, rendered
    template = expressions.parse_template(raw)
    prefix_parts: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            prefix_parts.append(part)
            continue
        if any(ref.path[0] == "rewind" for ref in expressions.expression_references(part)):
            prefix = "".join(prefix_parts)
            if rendered.startswith(prefix) and prefix.strip():
                return prefix, rendered[len(prefix) :] or "(continue)"
            return None, rendered
        prefix_parts.append(expressions.to_text(expressions.evaluate(part, ctx.namespace)))
    return None, rendered


def execute(ctx: StepContext) -> dict[str, Any]:
    from agentsaga.edits import apply_plan, describe_failures, parse_edit_blocks, plan_edits

    llm = gateway(ctx)
    settings = llm.settings(ctx.params, ctx.pipeline.defaults)
    system = system_prompt(ctx, "write")
    prefix, prompt = split_prompt(ctx)
    max_reflections = int(ctx.params.get("max_reflections", DEFAULT_MAX_REFLECTIONS))
    history: list[dict[str, str]] = []
    root = ctx.cwd
    base = ctx.workspace.head()
    for reflection in range(max_reflections + 1):
        reply = llm.ask(
            settings, system=system, prompt=prompt, cache_prefix=prefix, history=history
        )
        problem: str
        try:
            blocks = parse_edit_blocks(reply.text)
        except EditError as exc:
            problem = f"Your reply could not be parsed: {exc.message}"
        else:
            if not blocks:
                problem = "Your reply held no SEARCH/REPLACE blocks; reply with blocks only."
            else:
                plan = plan_edits(root, blocks)
                if not plan.failures:
                    changed = apply_plan(root, plan)
                    commit = ctx.workspace.commit(
                        f"agentsaga {ctx.run_id}: step {ctx.step.id} (attempt {ctx.attempt})"
                    )
                    return {
                        "commit": commit or base,
                        "base": base,
                        "changed": changed,
                        "diffstat": _diffstat(ctx, base, commit),
                        "blocks_applied": len(blocks),
                        "reflections": reflection,
                        "text": reply.text,
                    }
                problem = describe_failures(plan)
        if reflection == max_reflections:
            raise EditError(
                f"the edits did not apply after {max_reflections} reflection(s): {problem}",
                output={"reflections": reflection, "text": reply.text},
            )
        # Keep the prefix in the history's first message so the conversation stays whole.
        first = (prefix or "") + prompt if not history else prompt
        history += [
            {"role": "user", "content": first},
            {"role": "assistant", "content": reply.text},
        ]
        prompt, prefix = problem, None
    raise AssertionError("unreachable")  # pragma: no cover


def _diffstat(ctx: StepContext, base: str | None, commit: str | None) -> dict[str, int] | None:
    if not base or not commit or not ctx.workspace.uses_git:
        return None
    from agentsaga import gitops

    ws = getattr(ctx.workspace, "ws", None)
    return gitops.diffstat(ws, base, commit) if ws is not None else None
