"""Everything knowable before a run, checked before it creates anything.

``validate``, ``run`` and ``fork`` refuse on an error (exit 2: no run record, no branch, no
worktree, nothing to roll back), each error listed; ``validate --offline`` checks the file
alone (providers named, models and prices), not the keys or the repository of this
machine. Checked: each LLM step's provider is built in or declared in ``.agentsaga.yml``;
its key is in the environment (a provider with a base URL, as a local Ollama or vLLM,
needs none); the model it will use and whether its price is known; the workspace is a git
repository with a commit when the pipeline needs git. A model's existence cannot be known
offline: the first call says.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agentsaga.pipeline import Pipeline

_BUILTIN = ("anthropic", "openai", "scripted")
_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
_BASE_URL_ENV = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL"}
#: Step kinds that call a model (their fields include provider and model).
LLM_KINDS = ("plan", "write", "agent")


@dataclass
class Finding:
    level: str  # error | warning
    step_id: str | None
    message: str
    #: provider | key | price | model | workspace. A run submitted to Temporal reports key and
    #: workspace errors as warnings (they are the workers'); ``validate --offline`` skips
    #: them (they are about this machine, not the file).
    about: str = "provider"

    def text(self) -> str:
        where = f"step {self.step_id}: " if self.step_id else ""
        return f"{self.level}: {where}{self.message}"


@dataclass
class ModelChoice:
    step_id: str
    provider: str
    kind: str  # anthropic | openai | scripted: who answers
    model: str


def model_choices(pipeline: Pipeline, config: Mapping[str, Any]) -> list[ModelChoice]:
    """The provider and model each LLM step will use: the step's, else the pipeline's
    defaults, else the provider's own ``model`` in ``.agentsaga.yml``, else the built-in
    default (the same order as ``llm.LLMGateway.settings``)."""
    choices = []
    providers = config.get("providers") or {}
    for step in pipeline.steps:
        if step.kind not in LLM_KINDS:
            continue
        # Imported for a model step only: ``llm`` brings the store (6 ms of validate).
        from agentsaga.llm import DEFAULT_MODELS

        provider = str(
            step.fields.get("provider") or pipeline.defaults.get("provider") or "scripted"
        )
        declared = providers.get(provider) or {}
        kind = str(declared.get("type") or provider)
        model = str(
            step.fields.get("model")
            or pipeline.defaults.get("model")
            or declared.get("model")
            or DEFAULT_MODELS.get(kind, provider)
        )
        choices.append(ModelChoice(step.id, provider, kind, model))
    return choices


def check(
    pipeline: Pipeline,
    config: Mapping[str, Any],
    repo_root: Path | None,
    environ: Mapping[str, str] | None = None,
    prices: bool = True,
    machine: bool = True,
) -> list[Finding]:
    """``prices=False`` skips the price lookup. The lookup answers from a cache of earlier
    answers (:mod:`agentsaga.price_index`), so ``validate`` stays fast after its first
    sight of a model.
    ``machine=False`` (``validate --offline``) checks the file alone: no API key, no
    repository (CI validates pipelines without either)."""
    env = os.environ if environ is None else environ
    findings = _check_workspace(pipeline, config, repo_root) if machine else []
    providers = config.get("providers") or {}
    seen: set[tuple[str, str]] = set()
    for choice in model_choices(pipeline, config):
        if "${{" in choice.provider or "${{" in choice.model:
            continue  # chosen at run time from an expression
        if choice.provider not in _BUILTIN and choice.provider not in providers:
            declared = ", ".join(sorted({*_BUILTIN, *providers}))
            findings.append(
                Finding(
                    "error",
                    choice.step_id,
                    f"unknown provider {choice.provider!r} (known: {declared}); declare it in "
                    f".agentsaga.yml under providers.{choice.provider} with type: openai and "
                    "a base_url for an OpenAI-compatible server",
                )
            )
            continue
        if choice.kind not in _BUILTIN:
            continue  # .agentsaga.yml's own check names a bad type
        key = (choice.provider, choice.model)
        if key in seen:
            continue
        seen.add(key)
        if machine:
            findings += _check_key(choice, providers.get(choice.provider) or {}, env)
        if prices:
            findings += _check_price(choice, config)
        findings += _check_retiring(choice)
    return findings


def _check_retiring(choice: ModelChoice) -> list[Finding]:
    """A model its provider's SDK lists as deprecated: it stops answering on that date."""
    if choice.kind != "anthropic" or choice.model not in (ends := _anthropic_retirements()):
        return []
    return [
        Finding(
            "warning",
            choice.step_id,
            f"model {choice.model} is deprecated: it reaches end of life on "
            f"{ends[choice.model]} (the anthropic SDK's list); name a newer one (the step's "
            "model:, the pipeline's defaults, or the provider's model in .agentsaga.yml)",
            "model",
        )
    ]


@functools.cache
def _anthropic_retirements() -> dict[str, str]:
    """Model -> end-of-life date, as the installed anthropic SDK lists them (it warns at
    each call). Read from the SDK's file, not imported: importing the SDK takes seconds,
    and validate a tenth of one. Nothing when the SDK or its list is not there."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("anthropic")
        if spec is None or spec.origin is None:
            return {}
        text = (Path(spec.origin).parent / "_data" / "deprecated_models.py").read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
                found = ast.literal_eval(node.value)
                return {str(k): str(v) for k, v in found.items()}
    except (OSError, ValueError, SyntaxError):
        pass
    return {}


def _check_key(
    choice: ModelChoice, declared: Mapping[str, Any], env: Mapping[str, str]
) -> list[Finding]:
    if choice.kind == "scripted":
        return []
    key_env = str(declared.get("api_key_env") or _KEY_ENV[choice.kind])
    if env.get(key_env):
        return []
    if choice.kind == "openai" and (declared.get("base_url") or env.get(_BASE_URL_ENV["openai"])):
        return []  # a local OpenAI-compatible server (Ollama, vLLM) takes no key
    return [
        Finding(
            "error",
            choice.step_id,
            f"provider {choice.provider!r} needs an API key: set {key_env} (or name another "
            f"variable in .agentsaga.yml: providers.{choice.provider}.api_key_env)",
            "key",
        )
    ]


def _check_price(choice: ModelChoice, config: Mapping[str, Any]) -> list[Finding]:
    from agentsaga.price_index import price_known

    overrides = config.get("prices") or {}
    price_provider = choice.kind
    if choice.kind == "scripted":
        if choice.model.lower().startswith("claude"):
            price_provider = "anthropic"
        elif choice.model.lower().startswith(("gpt", "o1", "o3", "o4")):
            price_provider = "openai"
        else:
            return []  # canned replies cost nothing
    if choice.model in overrides or price_known(price_provider, choice.model):
        return []
    return [
        Finding(
            "warning",
            choice.step_id,
            f"no price known for {choice.provider}/{choice.model}: its cost will show as "
            f"unknown (add it to .agentsaga.yml: prices: {{{choice.model}: {{input: USD per "
            "million, output: USD per million}})",
            "price",
        )
    ]


def _check_workspace(
    pipeline: Pipeline, config: Mapping[str, Any], repo_root: Path | None
) -> list[Finding]:
    isolation = str(pipeline.workspace.get("isolation") or config.get("isolation") or "worktree")
    if isolation == "none" or "${{" in isolation:
        return []
    if repo_root is None:
        return [
            Finding(
                "error",
                None,
                f"not inside a git repository, and workspace.isolation {isolation} needs one: "
                "run inside one (or 'git init' and commit), set workspace.repo, or use "
                "isolation: none",
                "workspace",
            )
        ]
    head = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    if head.returncode != 0:
        if not (repo_root / ".git").exists():
            return []  # a bare repository: the workspace refuses it with its own message
        return [
            Finding(
                "error",
                None,
                f"{repo_root} has no commits yet: a run starts from one (git add -A && "
                "git commit -m 'initial')",
                "workspace",
            )
        ]
    return []


def before_resume(
    pipeline: Pipeline,
    finished: Callable[[], set[str]],
    config: Mapping[str, Any],
    *,
    from_step: str | None = None,
    was: Pipeline | None = None,
    machine_errors: bool = True,
) -> list[Finding]:
    """``before_start`` for a resume, about the steps it will run: raise
    :class:`PreflightError` before any of them runs, as ``run`` does before it creates
    anything. A step is checked unless it finished (``finished()``: read only when an LLM
    step is in the pipeline) and is neither at or after ``from_step`` nor changed from
    ``was`` (the run's pipeline, when ``--pipeline`` gives another). The workspace is not
    checked: the run has its own. A step that a later failure rewinds to is not checked
    (it was not going to run), and fails at its call as before."""
    if not any(step.kind in LLM_KINDS for step in pipeline.steps):
        return []
    done = finished()
    after = pipeline.index_of(from_step) if from_step is not None else len(pipeline.steps)
    before = {step.id: step.definition_hash for step in was.steps} if was is not None else {}
    to_run = tuple(
        step
        for step in pipeline.steps
        if step.id not in done
        or step.index >= after
        or (was is not None and before.get(step.id) != step.definition_hash)
    )
    findings = [
        f for f in check(replace(pipeline, steps=to_run), config, None) if f.about != "workspace"
    ]
    if not machine_errors:
        for f in findings:
            if f.about == "key":
                f.level = "warning"
    refuse_on_errors(findings, "the resume")
    return findings


def refuse_on_errors(findings: list[Finding], what: str, hint: str = "") -> None:
    """Raise :class:`PreflightError` listing every error (not only the first); ``hint``
    is added when one of them is about this machine (a key, the workspace)."""
    from agentsaga.errors import PreflightError

    errors = [f.text() for f in findings if f.level == "error"]
    machine = any(f.about in ("key", "workspace") for f in findings if f.level == "error")
    if errors:
        raise PreflightError(what, errors, hint if machine else "")


def before_start(
    pipeline: Pipeline,
    repo_hint: Path | None,
    what: str,
    machine_errors: bool = True,
    prices: bool = True,
    machine: bool = True,
    hint: str = "",
) -> list[Finding]:
    """Check what a run would meet (providers, keys, prices, the workspace) with the
    configuration of the repository it would run in: raise :class:`PreflightError` on an
    error, before anything exists; return the warnings. ``machine_errors=False`` (a run
    on Temporal): a missing key or repository is a warning, being the workers' business.
    ``machine=False`` (``validate --offline``): neither is checked."""
    from agentsaga.config import find_repo_root, load_config

    root = find_repo_root(repo_hint or Path.cwd())
    findings = check(pipeline, load_config(root), root, prices=prices, machine=machine)
    if not machine_errors:
        for f in findings:
            if f.about in ("key", "workspace"):
                f.level = "warning"
    refuse_on_errors(findings, what, hint)
    return findings
