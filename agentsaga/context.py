"""What a step kind receives when it runs: its rendered fields and the run around it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentsaga.llm import LLMGateway
    from agentsaga.pipeline import Pipeline, Step
    from agentsaga.workspace import RunWorkspace


@dataclass
class StepContext:
    run_id: str
    step: Step
    attempt: int
    attempt_id: int
    pipeline: Pipeline
    #: The step's own fields with every ``${{ }}`` rendered (commands shell-quoted).
    params: dict[str, Any]
    #: The environment for commands: ours, the pipeline's and the step's env, and
    #: AGENTSAGA_IDEMPOTENCY_KEY.
    env: dict[str, str]
    workspace: RunWorkspace
    log_stem: Path
    timeout_s: float | None
    cancel: threading.Event
    namespace: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    #: The engine's LLM gateway: budget check, call log, memo, retries. Set by the engine.
    llm: LLMGateway | None = None

    @property
    def cwd(self) -> Path:
        return self.workspace.path

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step.id}:{self.attempt}"
