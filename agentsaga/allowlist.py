"""What an agent step's ``commands:`` allow-list lets the model run.

``run_command`` runs an argv only when an entry of ``commands:`` is a prefix of it,
compared element by element and exactly (``agent/tools.Toolbox.allows``): an entry
``python3`` allows neither ``./python3`` (a file in the workspace), ``/tmp/x/python3``,
``python3.11`` nor ``PYTHON3``; the program is found on the step's ``PATH`` as for any
command. What the model chooses is everything *after* the prefix, so an entry whose
program takes code, or another program, from its own arguments allows any command:
``python3`` allows ``python3 -c CODE``, ``bash`` allows ``bash -c SCRIPT``, ``env``
allows ``env rm -rf ~``, ``find`` allows ``find . -exec CMD ;``, ``git`` allows
``git -c alias.x='!CMD' x``, ``make`` allows ``make SHELL=... --eval=...``.
:func:`permits_anything` names such entries, with the way through; ``validate`` warns
with the entry's file:line:col and ``validate --explain`` says it beside the entry.

A narrower entry closes that door: ``[python3, -m, pytest]`` runs pytest whatever the
model appends. It does not make the command harmless: a command that runs the project's
code (tests, build scripts) runs what the agent wrote there, since the agent edits the
workspace. The allow-list decides which programs start, not what they do.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

#: Interpreters: the code they run can be given on their own command line.
_INTERPRETERS = {
    "python": "-c CODE",
    "pypy": "-c CODE",
    "node": "-e CODE",
    "nodejs": "-e CODE",
    "deno": "eval CODE",
    "bun": "-e CODE",
    "perl": "-e CODE",
    "ruby": "-e CODE",
    "php": "-r CODE",
    "lua": "-e CODE",
    "luajit": "-e CODE",
    "rscript": "-e CODE",
    "r": "-e CODE",
    "julia": "-e CODE",
    "pwsh": "-c CODE",
    "powershell": "-c CODE",
    "osascript": "-e CODE",
    "groovy": "-e CODE",
    "elixir": "-e CODE",
    "erl": "-eval CODE",
    "tclsh": "a script on its command line",
}
_SHELLS = frozenset(
    {"sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh", "busybox"}
)
#: Programs that run the program named after them; the number of operands they take
#: before it (``timeout 60 CMD``, ``flock FILE CMD``).
_WRAPPERS = {
    "env": 0,
    "nice": 0,
    "nohup": 0,
    "time": 0,
    "stdbuf": 0,
    "setsid": 0,
    "sudo": 0,
    "doas": 0,
    "strace": 0,
    "ltrace": 0,
    "valgrind": 0,
    "watch": 0,
    "unbuffer": 0,
    "ionice": 0,
    "parallel": 0,
    "exec": 0,
    "command": 0,
    "faketime": 1,
    "timeout": 1,
    "flock": 1,
    "chroot": 1,
    "taskset": 1,
    "chrt": 1,
}
#: Tools whose subcommand runs a program given after it; the tool alone allows it too.
_RUNNERS = {
    "npx": None,
    "bunx": None,
    "pnpx": None,
    "uvx": None,
    "uv": ("run", "tool"),
    "pipx": ("run",),
    "poetry": ("run",),
    "pdm": ("run",),
    "hatch": ("run",),
    "rye": ("run",),
    "pixi": ("run", "exec"),
    "conda": ("run",),
    "mamba": ("run",),
    "npm": ("exec", "x"),
    "pnpm": ("exec", "dlx"),
    "yarn": ("exec", "dlx"),
    "nix": ("run", "shell", "develop"),
    "docker": ("run", "exec"),
    "podman": ("run", "exec"),
    "kubectl": ("exec",),
}
#: Tools that run a command through one of their options or their input, whatever the
#: entry pins after them.
_EXEC_OPTIONS = {
    "find": "find . -exec CMD ;",
    "xargs": "xargs CMD",
    "make": "make VAR=... overriding a recipe's command, or --eval=RULES",
    "gmake": "gmake VAR=... overriding a recipe's command, or --eval=RULES",
    "awk": "awk 'BEGIN{system(CMD)}'",
    "gawk": "gawk 'BEGIN{system(CMD)}'",
    "mawk": "mawk 'BEGIN{system(CMD)}'",
    "nawk": "nawk 'BEGIN{system(CMD)}'",
    "sed": "GNU sed's e command",
    "gsed": "GNU sed's e command",
    "tar": "tar --to-command=CMD or --checkpoint-action=exec=CMD",
    "rsync": "rsync -e CMD",
    "ssh": "a remote command, or -o ProxyCommand=CMD",
    "scp": "scp -S CMD",
    "zip": "zip -TT CMD",
    "vim": "vim -c '!CMD'",
    "vi": "vi -c '!CMD'",
    "nvim": "nvim -c '!CMD'",
    "ex": "ex -c '!CMD'",
    "emacs": "emacs --eval CODE",
    "go": "go run FILE, go test -exec CMD or go build -toolexec CMD",
    "cargo": "cargo run, or --config target.<triple>.runner=CMD on any subcommand",
}
#: git: before the subcommand, ``-c`` sets any configuration (an alias ``!CMD``, a
#: pager); ``git config`` makes every later git command run what it sets.
_GIT_OPEN = frozenset({"config", "-c", "--config-env", "--exec-path", "-C", "submodule"})
#: Options of an interpreter whose value is not code: ``python -W ignore`` still lets the
#: model add ``-c CODE``.
_VALUE_OPTIONS = frozenset({"-W", "-X", "-r", "--require", "--import", "--loader", "-I", "-M"})
_VERSION = re.compile(r"(?:\d+(?:\.\d+)*)(?:\.exe)?$")


def prefix_of(entry: Any, variables: Mapping[str, Any]) -> list[str]:
    """One ``commands:`` entry as an argv prefix: a list as it is; a string naming a
    pipeline var, that var's value; any other string, the command itself, split as a
    shell would (no shell ever runs it). An empty result allows nothing."""
    value = variables[entry] if isinstance(entry, str) and entry in variables else entry
    if isinstance(value, list):
        return [str(part) for part in value]
    try:
        return shlex.split(str(value))
    except ValueError:
        return [str(value)]


def program_name(arg0: str) -> str:
    """The program's name for classing it: the basename, case-folded, without a version
    suffix (``/usr/bin/python3.11`` → ``python``)."""
    name = os.path.basename(arg0).casefold()
    stripped = _VERSION.sub("", name).rstrip("-.")
    return stripped or name


def _operands(args: Sequence[str]) -> list[str]:
    """The arguments that are not options, nor the values of value-taking options."""
    found: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in _VALUE_OPTIONS:
            skip = True
            continue
        if not arg.startswith("-"):
            found.append(arg)
    return found


def permits_anything(entry: Sequence[str]) -> str | None:
    """How the model can run any command through the allow-list entry ``entry`` (an argv
    prefix), or None when the entry pins what runs."""
    if not entry:
        return None
    name, args = program_name(entry[0]), list(entry[1:])
    shown = entry[0]
    if name in _INTERPRETERS and not _operands(args):
        return f"{shown} {_INTERPRETERS[name]} runs any code"
    if name in _SHELLS and not _operands(args):
        return f"{shown} -c SCRIPT runs any shell script"
    if name == "git":
        if not args or args[0] in _GIT_OPEN or args[0].startswith(("-c", "--config")):
            return (
                f"{shown} -c alias.x='!CMD' x runs any command (and git config makes later "
                "git commands run one)"
            )
        return None
    if name in _EXEC_OPTIONS:
        return f"{_EXEC_OPTIONS[name]} runs any command"
    if name in _WRAPPERS:
        rest = [a for a in args if not a.startswith("-") and "=" not in a]
        rest = rest[_WRAPPERS[name] :]
        if not rest:
            return f"{shown} CMD runs any program"
        inner = permits_anything(rest)
        return f"{shown} {inner}" if inner else None
    if name in _RUNNERS:
        subcommands = _RUNNERS[name]
        operands = [a for a in args if not a.startswith("-")]
        if subcommands is None:
            if not operands:
                return f"{shown} PACKAGE runs any package's program"
            inner = permits_anything(operands)
            return f"{shown} {inner}" if inner else None
        if not operands:
            return f"{shown} {subcommands[0]} CMD runs any program"
        if operands[0] in subcommands:
            if name in ("docker", "podman", "kubectl") or len(operands) < 2:
                return f"{shown} {operands[0]} ... CMD runs any program"
            inner = permits_anything(operands[1:])
            return f"{shown} {operands[0]} {inner}" if inner else None
    return None
