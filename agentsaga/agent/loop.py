"""``agent``: a tool-use loop, checkpointed turn by turn.

A turn is one model call and the tool calls its reply makes. Its durable record, in order:

1. the reply, in the call log the moment it arrives (the gateway's job, as for every call);
2. each tool call, recorded as started before it runs and with its result after;
3. a snapshot of the files (a ghost commit, as before a step) when the turn changed any;
4. the turn itself (reply, the answer sent back, the snapshot): from then on it is history.

A crash anywhere leaves an attempt the engine closes as failed and compensates (``git:
reset`` to the step's start). The next attempt (``record.recover``) rebuilds the
conversation from the completed turns, resets the files to the last completed turn's
snapshot, and asks the model the same question it was asked when the process died: if
that reply had arrived, the call log serves it (the memo) and it is not paid again. The
turn's tool calls then run again on the restored files, so an edit that was in flight is
applied exactly once; a command that was in flight runs again with the same idempotency
key, and its result tells the model so.

The loop stops on ``finish``, on ``max_turns`` (kind ``turns``), on the budget (the
gateway checks it before every call), or when the same call with the same result comes
back ``STUCK_REPEATS`` times (kind ``stuck``). The step then commits what the agent
changed on the run branch, as ``write`` does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from agentsaga import faults
from agentsaga.agent import tools as agent_tools
from agentsaga.agent.record import Recovered, recover
from agentsaga.context import StepContext
from agentsaga.errors import Interrupted, StepFailed
from agentsaga.providers.base import LLMResponse, Message, ToolResult
from agentsaga.redact import redact, redact_json, secret_values
from agentsaga.steps.llm_common import gateway, system_prompt
from agentsaga.steps.write import _diffstat, split_prompt

DEFAULT_MAX_TURNS = 30
#: The same call answered the same way this many times (with no file written in between):
#: another turn would change nothing.
STUCK_REPEATS = 3
WRITING_TOOLS = frozenset({"edit_file", "create_file"})
NUDGE = (
    "Your reply called no tool. Carry on with the tools, and call finish(summary) when the "
    "task is done."
)
RERUN_NOTE = (
    "(Note: the process running this step died while this call's turn was in flight. The "
    "files were reset to the last completed turn and the command was run again, with the "
    "same AGENTSAGA_IDEMPOTENCY_KEY={key}.)\n"
)


class AgentLoop:
    def __init__(self, ctx: StepContext, recovered: Recovered) -> None:
        self.ctx = ctx
        self.llm = gateway(ctx)
        self.store = self.llm.store
        self.settings = self.llm.settings(ctx.params, ctx.pipeline.defaults)
        self.system = system_prompt(ctx, "agent")
        self.prefix, prompt = split_prompt(ctx)
        self.max_turns = int(ctx.params.get("max_turns") or DEFAULT_MAX_TURNS)
        self.rec = recovered
        names = list(ctx.params.get("tools") or agent_tools.ALL_TOOLS)
        if "finish" not in names:
            names.append("finish")  # without it the loop could only end in failure
        self.specs = agent_tools.specs(names)
        variables = dict(ctx.namespace.get("vars") or {})
        self.toolbox = agent_tools.Toolbox(
            root=ctx.cwd,
            uses_git=ctx.workspace.uses_git,
            allowed=agent_tools.parse_allow_list(list(ctx.params.get("commands") or []), variables),
            env=ctx.env,
            log_dir=ctx.log_stem.parent,
            enabled=frozenset(names),
            timeout_s=ctx.timeout_s,
            cancel=ctx.cancel,
        )
        self.messages: list[Message] = [Message("user", prompt)]
        self.seen: Counter[str] = Counter()
        self.touched: set[str] = set()
        self.secrets = secret_values()
        first = recovered.first_attempt or ctx.attempt
        self.key_stem = f"{ctx.run_id}:{ctx.step.id}:{first}"
        #: finish's summary when the last recorded turn called it (the crash came after).
        self.finished: str | None = None
        for turn in recovered.turns:
            reply = LLMResponse.from_json(turn.reply)
            answer = Message.from_json(turn.answer)
            self._remember(_assistant(reply), answer)
            self.finished = _finish_summary(reply, answer)

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        ws = self.ctx.workspace
        if self.rec.lineage and self.rec.snapshot and ws.uses_git:
            # The engine's compensation put the files back to the step's start; the turns
            # kept since then are history, so their files come back too.
            ws.reset(self.rec.snapshot, ws.head(), False)
        base = ws.head()
        turn = len(self.rec.turns) + 1
        if self.finished is not None:
            return self._finish(self.finished, turn - 1, base)
        while True:
            if turn > self.max_turns:
                self._judge_all()
                raise StepFailed(
                    f"the agent did not finish within max_turns ({self.max_turns})",
                    kind="turns",
                    output={"turns": turn - 1, "summary": None},
                )
            if self.ctx.cancel.is_set():
                raise Interrupted()
            reply = self.llm.converse(
                self.settings,
                system=self.system,
                messages=self.messages,
                tools=self.specs,
                cache_prefix=self.prefix,
            )
            faults.point("agent.after_reply")
            # As the record will hold it, so that a conversation rebuilt from the record
            # is the one this process goes on with.
            reply = LLMResponse.from_json(redact_json(reply.to_json(), self.secrets))
            answer, summary, changed_files = self._act(turn, reply)
            snapshot = None
            if changed_files and ws.uses_git:
                snapshot = ws.snapshot(
                    f"refs/agentsaga/{self.ctx.run_id}/{self.ctx.step.id}/turns/"
                    f"{self.ctx.attempt}/{turn}"
                )
            faults.point("agent.before_turn")
            self.store.record_agent_turn(
                run_id=self.ctx.run_id,
                attempt_id=self.ctx.attempt_id,
                step_id=self.ctx.step.id,
                turn=turn,
                reply=reply.to_json(),
                answer=answer.to_json(),
                snapshot=snapshot,
            )
            faults.point("agent.after_turn")
            stuck = self._remember(_assistant(reply), answer)
            if summary is not None:
                return self._finish(summary, turn, base)
            if stuck:
                self._judge_all()
                raise StepFailed(
                    f"the agent is stuck: the same tool call got the same result "
                    f"{STUCK_REPEATS} times ({stuck[:120]})",
                    kind="stuck",
                    output={"turns": turn, "summary": None},
                )
            turn += 1

    def _act(self, turn: int, reply: LLMResponse) -> tuple[Message, str | None, bool]:
        """Run the reply's tool calls in order: (the answer, finish's summary, whether
        files may have changed)."""
        resumed = self.rec.in_flight if turn == len(self.rec.turns) + 1 else []
        earlier = {c.call_index: c for c in resumed}
        results: list[ToolResult] = []
        summary: str | None = None
        changed = False
        for index, call in enumerate(reply.tool_calls):
            if summary is not None:
                results.append(ToolResult(call.id, "not run: finish was called before it", True))
                continue
            key = f"{self.key_stem}:{turn}.{index + 1}"
            row = self.store.start_tool_call(
                run_id=self.ctx.run_id,
                attempt_id=self.ctx.attempt_id,
                step_id=self.ctx.step.id,
                turn=turn,
                call_index=index,
                call_id=call.id,
                tool=call.name,
                arguments=call.arguments,
                idempotency_key=key,
            )
            faults.point("agent.in_tool")
            log_name = f"{self.ctx.step.id}.{self.ctx.attempt}.turn{turn}.{index + 1}"
            outcome = self.toolbox.run(call, key, log_name)
            faults.point("agent.after_tool")
            content = outcome.content
            if outcome.ran_command and index in earlier:
                content = RERUN_NOTE.format(key=key) + content
            content = agent_tools.clip(redact(content, self.secrets))
            record = {**outcome.to_json(), "content": content, "chars": len(outcome.content)}
            self.store.finish_tool_call(row, record)
            results.append(ToolResult(call.id, content, outcome.is_error))
            self.touched.update(outcome.changed)
            changed = changed or bool(outcome.changed) or outcome.ran_command
            if outcome.finished is not None:
                summary = outcome.finished
        text = "" if reply.tool_calls else NUDGE
        return Message("user", text, tool_results=tuple(results)), summary, changed

    def _remember(self, assistant: Message, answer: Message) -> str | None:
        """Add a turn to the conversation; the call that is now stuck, if one is.

        Repeats count since the files last changed: reading a file again after editing
        another, or running the tests after an edit, is progress, not a loop."""
        self.messages += [assistant, answer]
        by_id = {r.call_id: r for r in answer.tool_results}
        stuck = None
        wrote = False
        for call in assistant.tool_calls:
            result = by_id.get(call.id)
            if result is None or call.name == "finish":
                continue
            if call.name in WRITING_TOOLS and not result.is_error:
                wrote = True
                continue
            signature = agent_tools.canonical(call.name, call.arguments) + "\0" + result.content
            self.seen[signature] += 1
            if self.seen[signature] >= STUCK_REPEATS:
                stuck = agent_tools.canonical(call.name, call.arguments)
        if wrote:
            self.seen.clear()
        return stuck

    def _finish(self, summary: str, turns: int, base: str | None) -> dict[str, Any]:
        ws = self.ctx.workspace
        commit = None
        if ws.uses_git:
            commit = ws.commit(
                f"agentsaga {self.ctx.run_id}: step {self.ctx.step.id} (attempt {self.ctx.attempt})"
            )
        changed = sorted(self.touched)
        if commit and base:
            from agentsaga import gitops

            changed = gitops.changed_files(ws.path, base, commit)
        self._judge_lineage()
        return {
            "summary": summary,
            "turns": turns,
            "changed": changed,
            "commit": commit or base,
            "base": base,
            "diffstat": _diffstat(self.ctx, base, commit),
            "resumed_at_turn": len(self.rec.turns) + 1 if self.rec.lineage else None,
        }

    def _judge_lineage(self) -> None:
        """The earlier attempts' replies are now part of this step's result: a later retry
        or rewind must ask anew rather than be served them from the log (the engine judges
        the current attempt's own replies when it records the outcome)."""
        for attempt in self.rec.lineage:
            self.store.judge_calls(attempt.id)

    def _judge_all(self) -> None:
        # A conversation that failed on its own account: a retry starts a new one.
        self._judge_lineage()
        self.store.judge_calls(self.ctx.attempt_id)


def _finish_summary(reply: LLMResponse, answer: Message) -> str | None:
    errors = {r.call_id for r in answer.tool_results if r.is_error}
    for call in reply.tool_calls:
        if call.name == "finish" and call.id not in errors:
            return str(call.arguments.get("summary", ""))
    return None


def _assistant(reply: LLMResponse) -> Message:
    # The API refuses an assistant message with no content at all.
    text = reply.text if (reply.text or reply.tool_calls) else "(no reply)"
    return Message("assistant", text, tool_calls=reply.tool_calls)


def execute(ctx: StepContext) -> dict[str, Any]:
    llm = gateway(ctx)
    recovered = recover(llm.store, ctx.run_id, ctx.step.id, ctx.attempt_id)
    return AgentLoop(ctx, recovered).run()
