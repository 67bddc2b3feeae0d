"""``agentsaga worker``: a Temporal worker that runs agentsaga's workflow and activities.

One process polls two task queues: the shared one (``--task-queue``, default ``agentsaga``)
for workflow tasks and any activity, and its host's own (``<queue>@<host id>``) for the
steps of runs whose worktree it holds (``workspace.remote``: temporal_git.py).

Activities do blocking work (git, subprocesses, LLM calls, the store), so they run in a
thread pool; the workflow runs in Temporal's sandbox. A worker stopped with SIGTERM or
Ctrl-C stops polling and lets Temporal hand its unfinished activities to another worker
once their heartbeats stop (a SIGKILL does the same, only without the goodbye).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from agentsaga.runners.temporal_io import TemporalTarget, host_queue

#: A killed worker's workflows are cached on its sticky queue; Temporal waits this long
#: before giving their next task to another worker (its default, 10 s, stalls a run).
STICKY_TIMEOUT = timedelta(seconds=2)


async def serve(
    target: TemporalTarget,
    store_location: str | None,
    config: dict[str, Any],
    host_id: str,
    home: Path,
    max_concurrent: int = 8,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT."""
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import (
        SandboxedWorkflowRunner,
        SandboxRestrictions,
    )

    from agentsaga.runners.temporal_activities import Activities
    from agentsaga.runners.temporal_client import connect
    from agentsaga.runners.temporal_workflow import SagaWorkflow

    client = await connect(target)
    activities = Activities(store_location, config, host_id, home)
    # Our modules are pure where the workflow uses them (the saga core, pipeline parsing)
    # and are imported once, not per workflow run: that is most of a workflow's cost.
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "agentsaga", "yaml", "jsonschema"
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=max_concurrent) as pool:
        shared = Worker(
            client,
            task_queue=target.task_queue,
            workflows=[SagaWorkflow],
            activities=activities.all(),
            activity_executor=pool,
            workflow_runner=runner,
            max_concurrent_activities=max_concurrent,
            sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        )
        own = Worker(
            client,
            task_queue=host_queue(target.task_queue, host_id),
            activities=activities.all(),
            activity_executor=pool,
            max_concurrent_activities=max_concurrent,
        )
        async with shared, own:
            if on_ready is not None:
                on_ready(
                    f"worker ready: {target.address} queue {target.task_queue} "
                    f"(host {host_id}), store {_shown(store_location)}"
                )
            await stop.wait()


def _shown(location: str | None) -> str:
    """The store's location without a password."""
    if not location:
        return "(default)"
    if "@" in location and "://" in location:
        scheme, rest = location.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return location


def run_worker(
    target: TemporalTarget,
    store_location: str | None,
    config: dict[str, Any],
    host_id: str,
    home: Path,
    max_concurrent: int = 8,
) -> None:
    def ready(message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    asyncio.run(serve(target, store_location, config, host_id, home, max_concurrent, ready))
