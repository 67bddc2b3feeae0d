"""Pipeline text for the engine tests: command steps that leave a ledger behind.

Every step appends its own line to ``ledger`` (and every compensation an ``undo-`` line),
so what ran, how often and in which order is read from a file the commands wrote, not
from agentsaga's records.
"""

from __future__ import annotations

import json

HEADER = "name: {name}\nworkspace: {{isolation: none}}\n"


def q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text)


def block_until(flag: str, pidfile: str) -> str:
    """Shell that records its process group and waits (at most ~30 s) for ``flag``.

    Polling instead of one long sleep: the test releases it by creating the file, and a
    forgotten one ends on its own.
    """
    return f"echo $$ > {pidfile}; for i in $(seq 600); do [ -f {flag} ] && break; sleep 0.05; done"


def counter(name: str) -> str:
    """Shell that increments the counter file ``name`` and leaves the value in $n."""
    return f"n=$(cat {name} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {name}"


def step(
    step_id: str,
    run: str | None = None,
    *,
    undo: bool | str = True,
    kind: str = "shell",
    extra: str = "",
) -> str:
    """One step whose command appends ``step_id`` to the ledger (or runs ``run``); with
    ``undo`` its compensation appends ``undo-<id>`` (or runs the given command)."""
    command = run if run is not None else f"echo {step_id} >> ledger"
    text = f"  - id: {step_id}\n    kind: {kind}\n    run: {q(command)}\n"
    if undo:
        comp = undo if isinstance(undo, str) else f"echo undo-{step_id} >> ledger"
        text += f"    compensate: {{run: {q(comp)}}}\n"
    for line in extra.strip("\n").splitlines():
        text += f"    {line}\n"
    return text


def pipeline(*steps: str, name: str = "t", top: str = "") -> str:
    text = HEADER.format(name=name)
    if top:
        text += top.strip("\n") + "\n"
    return text + "steps:\n" + "".join(steps)


def chain(n: int, fail_at: int | None = None, flag: str = "flag") -> str:
    """``s1 .. sn``; step ``fail_at`` logs itself, then fails until ``flag`` exists."""
    steps = []
    for i in range(1, n + 1):
        run = f"echo s{i} >> ledger"
        if i == fail_at:
            run += f"; test -f {flag}"
        steps.append(step(f"s{i}", run))
    return pipeline(*steps, name=f"chain{n}")
