"""What the Temporal client, workflow and activities exchange: names and small values.

Nothing here imports ``temporalio``: the CLI reads these names to submit a run, and only
the commands that talk to Temporal pay for the SDK (~0.5 s of imports, measured here).

Everything the workflow receives is JSON-able and small. The pipeline's text, the run's
outputs, prompts and replies live in the store; the history carries ids, statuses and
short messages, so a run stays far below Temporal's payload (~2 MB) and history limits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from agentsaga.errors import ConfigError

WORKFLOW_NAME = "agentsaga-run"
DEFAULT_TASK_QUEUE = "agentsaga"
DEFAULT_NAMESPACE = "default"
#: The env var naming the Temporal frontend (``HOST:PORT``), like ``--temporal``.
ADDRESS_ENV = "AGENTSAGA_TEMPORAL"
#: The env var naming the task queue, like ``--task-queue`` (worker) or temporal.task_queue.
QUEUE_ENV = "AGENTSAGA_TEMPORAL_QUEUE"

_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass
class TemporalTarget:
    """Where runs are submitted: the frontend address, namespace and task queue."""

    address: str
    task_queue: str = DEFAULT_TASK_QUEUE
    namespace: str = DEFAULT_NAMESPACE
    #: How long a step waits for the worker of the host holding its worktree.
    host_timeout_s: float = 30.0
    #: A workflow history past this many events continues as a new run of the workflow.
    history_events: int = 8_000

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "task_queue": self.task_queue,
            "namespace": self.namespace,
            "host_timeout_s": self.host_timeout_s,
            "history_events": self.history_events,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TemporalTarget:
        return cls(
            str(data["address"]),
            str(data.get("task_queue") or DEFAULT_TASK_QUEUE),
            str(data.get("namespace") or DEFAULT_NAMESPACE),
            float(data.get("host_timeout_s") or 30.0),
            int(data.get("history_events") or 8_000),
        )


def check_address(address: str, source: str) -> str:
    address = address.strip()
    if not _ADDRESS.match(address):
        raise ConfigError(f"{source} {address!r}: expected HOST:PORT (e.g. 127.0.0.1:7233)")
    return address


def resolve_target(
    flag: str | None, config: dict[str, Any], task_queue: str | None = None
) -> TemporalTarget | None:
    """``--temporal``, else ``AGENTSAGA_TEMPORAL``, else ``temporal:`` in .agentsaga.yml;
    None runs locally."""
    section = config.get("temporal") or {}
    if flag:
        address = check_address(flag, "--temporal")
    elif os.environ.get(ADDRESS_ENV):
        address = check_address(os.environ[ADDRESS_ENV], ADDRESS_ENV)
    elif section.get("address"):
        address = check_address(str(section["address"]), "temporal.address in .agentsaga.yml")
    else:
        return None
    return TemporalTarget(
        address,
        task_queue
        or os.environ.get(QUEUE_ENV)
        or str(section.get("task_queue") or DEFAULT_TASK_QUEUE),
        str(section.get("namespace") or DEFAULT_NAMESPACE),
        float(section.get("host_timeout") or 30.0),
        int(section.get("history_events") or 8_000),
    )


def host_queue(task_queue: str, host_id: str) -> str:
    """The task queue of one host's worker: steps that need its worktree go there."""
    return f"{task_queue}@{host_id}"


def default_host_id() -> str:
    import socket  # only the worker needs it; the CLI imports this module at start-up

    return socket.gethostname()


@dataclass
class RunInput:
    """The workflow's input. ``mode`` is run, resume or rollback; the run record (with
    its pipeline text and vars) was written to the store at submission."""

    run_id: str
    mode: str
    task_queue: str
    from_step: str | None = None
    force: bool = False
    keep_refs: bool = False
    #: A resume with a changed pipeline: the old text is kept in the store by the
    #: submission; the workflow only needs to know that it happened.
    changed_pipeline: bool = False
    budget: dict[str, float] = field(default_factory=dict)
    #: Seconds a step may wait for a worker of the host holding its worktree before the
    #: host counts as lost and the run moves on from the pushed state.
    host_timeout_s: float = 30.0
    #: The host holding the run's worktree (workspace.remote), if one does.
    host_id: str | None = None
    #: Continue as a new workflow run past this many history events.
    history_events: int = 8_000
