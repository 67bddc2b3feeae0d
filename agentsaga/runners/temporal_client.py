"""Submitting a run to Temporal and following it: the client side of the Temporal runner.

The workflow id is the run id, so a run is driven by at most one workflow at a time: a
second start while one runs is refused by Temporal itself (``RunLocked``, exit 4), and a
``resume`` or ``rollback`` of a closed run starts a new execution under the same id.

Following reads the store (temporal_follow.py), never the workflow: ``show``, ``runs`` and
the live display work with no worker running.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from agentsaga.errors import AgentsagaError, RunLocked
from agentsaga.runners.temporal_follow import Follower
from agentsaga.runners.temporal_io import WORKFLOW_NAME, RunInput, TemporalTarget
from agentsaga.store import Store


class RemoteError(AgentsagaError):
    """One of our errors raised in a worker, as Temporal carried it back (its class name
    and message): the CLI shows the message with that class's exit code."""

    def __init__(self, type_name: str, message: str) -> None:
        from agentsaga import errors

        cls = getattr(errors, type_name, None)
        if isinstance(cls, type) and issubclass(cls, AgentsagaError):
            self.exit_code = cls.exit_code
        self.type_name = type_name
        super().__init__(message)


class TemporalUnavailable(AgentsagaError):
    """The Temporal frontend cannot be reached (exit 1: nothing was started)."""

    retryable = False

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        super().__init__(
            f"cannot reach Temporal at {address} ({reason}); start a server (e.g. 'temporal "
            "server start-dev') or fix --temporal / AGENTSAGA_TEMPORAL"
        )


async def connect(target: TemporalTarget) -> Any:
    from temporalio.client import Client
    from temporalio.service import RPCError

    try:
        return await Client.connect(
            target.address, namespace=target.namespace, connect_timeout=timedelta(seconds=10)
        )
    except (RPCError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TemporalUnavailable(target.address, reason) from exc


async def start(client: Any, target: TemporalTarget, run_input: RunInput) -> Any:
    """Start the run's workflow; refused while another execution of it runs."""
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    try:
        return await client.start_workflow(
            WORKFLOW_NAME,
            asdict(run_input),
            id=run_input.run_id,
            task_queue=target.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError:
        raise _locked(target, run_input.run_id) from None


def _locked(target: TemporalTarget, run_id: str) -> RunLocked:
    return RunLocked(run_id, f"temporal:{run_id}", f"Temporal at {target.address}", 0, "its end")


async def _running(client: Any, run_id: str) -> bool:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    try:
        desc = await client.get_workflow_handle(run_id).describe()
    except RPCError:
        return False  # never started on this server
    return bool(desc.status == WorkflowExecutionStatus.RUNNING)


#: How long a followed run may show no start before the display asks about workers.
WORKER_HINT_S = 15.0


def _interrupts() -> asyncio.Event:
    """Ctrl-C while following: the first cancels the run's workflow (the step in flight
    is stopped and recorded, the run ends interrupted and resumable, as a local Ctrl-C
    leaves it); a second leaves at once (the run goes on on Temporal)."""
    asked = asyncio.Event()

    def on_sigint() -> None:
        if asked.is_set():
            os._exit(130)
        asked.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_sigint)
    return asked


async def follow(
    client: Any, follower: Follower, task_queue: str, poll_s: float = 0.1
) -> dict[str, Any]:
    """Emit the run's events from the store until its workflow ends; returns the
    workflow's (small) result. The runner's notes come from a query, asked at most
    every half second and never waited for: a query needs a live worker."""
    handle = client.get_workflow_handle(follower.run_id)
    result_task = asyncio.ensure_future(handle.result())
    notes: asyncio.Future[Any] | None = None
    seen, asked = 0, 0.0
    loop = asyncio.get_running_loop()
    started, hinted = loop.time(), False
    interrupt, cancelled = _interrupts(), False
    try:
        while not result_task.done() and not follower.waiting:
            follower.poll()
            if interrupt.is_set() and not cancelled:
                cancelled = True
                follower.note(
                    None, "interrupting: the step in flight stops, the run stays resumable"
                )
                await handle.cancel()
            if not hinted and not follower.emitted and loop.time() - started > WORKER_HINT_S:
                # Not even the first step has started: most often no worker polls the queue.
                hinted = True
                follower.note(
                    None,
                    f"nothing has started after {WORKER_HINT_S:.0f} s: is a worker running on "
                    f"task queue {task_queue!r}? (agentsaga worker --temporal ADDRESS)",
                )
            if notes is not None and notes.done():
                seen += _emit_notes(follower, notes)
                notes = None
            if notes is None and loop.time() - asked > 0.5:
                asked = loop.time()
                notes = asyncio.ensure_future(_ask_notes(handle, seen))
            await asyncio.wait({result_task}, timeout=poll_s)
        if notes is not None:
            await asyncio.wait({notes}, timeout=2)
            if notes.done():
                seen += _emit_notes(follower, notes)
        last = await asyncio.wait_for(_ask_notes(handle, seen), timeout=3)
        seen += _emit_notes(follower, last)
    except TimeoutError:
        pass  # no worker to answer: the notes are a convenience, the store is the record
    finally:
        for task in (result_task, notes):
            if task is not None and not task.done():
                task.cancel()
    follower.poll()
    if not result_task.done():
        return {"status": "waiting"}  # at a gate: the workflow waits for a decision
    if result_task.cancelled() or result_task.exception() is not None:
        # Terminated or cancelled from outside (temporal workflow terminate): the store
        # says where the run stands.
        return {}
    result: dict[str, Any] = result_task.result()
    return result


async def _ask_notes(handle: Any, since: int) -> list[Any]:
    try:
        found: list[Any] = await handle.query("notes", since, rpc_timeout=timedelta(seconds=2))
    except Exception:  # noqa: BLE001 - a worker busy or gone: try at the next poll
        return []
    return found


def _emit_notes(follower: Follower, source: Any) -> int:
    found = source.result() if isinstance(source, asyncio.Future) else source
    for step_id, message in found:
        follower.note(step_id, message)
    return len(found)


def submit_and_follow(
    target: TemporalTarget,
    run_input: RunInput,
    store: Store,
    on_event: Callable[[Any], None] | None,
    make_event: Callable[..., Any],
    before_start: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Connect (before anything is created: an unreachable server changes nothing), run
    ``before_start`` (it writes the run record), start the workflow, and follow it unless
    ``on_event`` is None (``--detach``)."""

    async def main() -> dict[str, Any] | None:
        client = await connect(target)
        if run_input.mode != "run" and await _running(client, run_input.run_id):
            if store.get_run(run_input.run_id).status == "waiting":
                return {"status": "waiting"}  # its workflow waits at a gate: say so, exit 5
            # Refused before the submission writes anything (a resume's restart point).
            raise _locked(target, run_input.run_id)
        follower = None
        if on_event is not None:
            follower = Follower(store, run_input.run_id, on_event, make_event)
            if run_input.mode != "run":
                follower.prime()
        if before_start is not None:
            before_start()
        await start(client, target, run_input)
        if follower is None:
            return None
        return await follow(client, follower, target.task_queue)

    return asyncio.run(main())


def decide_and_follow(
    target: TemporalTarget,
    run_id: str,
    verdict: dict[str, str],
    store: Store,
    on_event: Callable[[Any], None] | None,
    make_event: Callable[..., Any],
    announce: Callable[[dict[str, Any]], None],
) -> dict[str, Any] | None:
    """Send a gate decision to the run's workflow (its ``decide`` update records it and
    wakes the workflow), then follow the run unless ``on_event`` is None. Returns None
    when no workflow of the run is open (the caller records the decision and resumes)."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.exceptions import ApplicationError

    async def main() -> dict[str, Any] | None:
        client = await connect(target)
        if not await _running(client, run_id):
            return None
        follower = Follower(store, run_id, on_event or (lambda event: None), make_event)
        follower.prime()
        handle = client.get_workflow_handle(run_id)
        try:
            record: dict[str, Any] = await handle.execute_update("decide", verdict)
        except WorkflowUpdateFailedError as exc:
            cause: Any = exc.cause
            while cause is not None and not isinstance(cause, ApplicationError):
                cause = getattr(cause, "cause", None)
            if cause is None:
                raise
            raise RemoteError(cause.type or "AgentsagaError", cause.message) from None
        announce(record)
        if on_event is None:
            return record
        await follow(client, follower, target.task_queue)
        return record

    return asyncio.run(main())
