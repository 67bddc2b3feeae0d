"""The user's Python environment, found as their shell would, and pointed at the run's code.

A run works in a git worktree (``.agentsaga/worktrees/<run>``), but a project installed
``pip install -e .`` imports from the user's checkout: the editable install put a path
(``__editable__.*.pth``, ``.pth`` files of hatch, flit, pdm) or a meta-path finder
(setuptools' ``__editable___*_finder``) into the venv, and both name the checkout. A test
step would then judge the checkout's code, not the run's.

:func:`detect` runs once per run, when its workspace is created:

* the venv: ``VIRTUAL_ENV`` if set (an activated venv), else ``.venv/`` or ``venv/`` at the
  repository root (what ``uv``, ``poetry`` and most editors use and activate), else none,
  and then ``python`` is whatever is first on ``PATH``;
* the import roots that point into the checkout, asked of that interpreter itself
  (``sys.path`` after its ``.pth`` files ran, and the editable finders' mappings), each
  translated to the same place in the worktree.

:func:`step_env` turns the record into each command's environment: the venv's ``bin``
first on ``PATH`` and ``VIRTUAL_ENV`` set (as ``activate`` does), and the translated roots
first on ``PYTHONPATH``, which Python puts ahead of site-packages and of any finder
appended to ``sys.meta_path``. The user's own ``PYTHONPATH`` entries into the checkout are
translated too. Nothing is written to the venv.

:func:`checkout_paths` is the check that it worked: a failing command whose tracebacks
still point into the checkout imported the wrong code, and the step fails as
``infrastructure`` saying so (see ``steps/command.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

# Printed by the user's interpreter: its sys.path (after site and .pth processing) and the
# paths setuptools' editable finders map top-level names to.
_PROBE = r"""
import json, sys
mapped = []
for name, module in list(sys.modules.items()):
    if name.startswith("__editable__") and name.endswith("_finder"):
        mapped += [str(p) for p in getattr(module, "MAPPING", {}).values()]
print(json.dumps({"path": sys.path[1:], "mapped": mapped, "executable": sys.executable}))
"""
_PROBE_TIMEOUT_S = 20.0


def find_venv(repo_root: Path, environ: dict[str, str]) -> tuple[str | None, Path | None]:
    """Where the venv comes from (``VIRTUAL_ENV``, ``.venv``, ``venv``) and its folder."""
    active = environ.get("VIRTUAL_ENV")
    if active and (Path(active) / "bin" / "python").exists():
        return "VIRTUAL_ENV", Path(active)
    for name in (".venv", "venv"):
        folder = repo_root / name
        if (folder / "pyvenv.cfg").is_file() and (folder / "bin" / "python").exists():
            return name, folder
    return None, None


def detect(repo_root: Path, worktree: Path, environ: dict[str, str]) -> dict[str, Any]:
    """The record ``show`` prints and :func:`step_env` applies (JSON-ready)."""
    source, venv = find_venv(repo_root, environ)
    env = activated(environ, venv)
    python = shutil.which("python", path=env.get("PATH")) or shutil.which(
        "python3", path=env.get("PATH")
    )
    record: dict[str, Any] = {
        "venv": str(venv) if venv else None,
        "venv_from": source or "none (python from PATH)",
        "python": python,
        "import_roots": [],
    }
    if python is None:
        record["note"] = "no python on PATH"
        return record
    probe = _probe(python, env)
    if probe is None:
        record["note"] = f"could not ask {python} for its import paths"
        return record
    record["python"] = probe.get("executable") or python
    if worktree.resolve() != repo_root.resolve():
        record["import_roots"] = translate_roots(probe, repo_root, worktree, venv)
    return record


def _probe(python: str, env: dict[str, str]) -> dict[str, Any] | None:
    # From an empty folder: the probe must see the environment's paths, not a cwd's.
    with tempfile.TemporaryDirectory(prefix="agentsaga-probe-") as cwd:
        try:
            proc = subprocess.run(
                [python, "-c", _PROBE],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
    if proc.returncode != 0:
        return None
    try:
        data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return data


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def translate_roots(
    probe: dict[str, Any], repo_root: Path, worktree: Path, venv: Path | None
) -> list[dict[str, str]]:
    """Each import root into the checkout (not into its venv or agentsaga's own folder),
    as ``{"checkout": ..., "worktree": ...}``, in the interpreter's order."""
    root = repo_root.resolve()
    skip = [root / ".agentsaga", *([venv.resolve()] if venv else [])]
    # Only real folders: sys.path also holds path-hook markers such as setuptools'
    # "__editable__.x.finder.__path_hook__", which are not places on disk.
    candidates = [Path(p) for p in probe.get("path", []) if p and os.path.isabs(p)]
    # A finder maps a top-level name to its package folder (or module file): the import
    # root is the folder that holds it.
    candidates += [Path(p).parent for p in probe.get("mapped", [])]
    found: dict[str, str] = {}
    for entry in candidates:
        try:
            resolved = entry.resolve()
        except OSError:
            continue
        if not resolved.is_dir():
            continue
        if not _inside(resolved, root) or any(_inside(resolved, s) for s in skip):
            continue
        found.setdefault(str(resolved), str(worktree / resolved.relative_to(root)))
    return [{"checkout": k, "worktree": v} for k, v in found.items()]


def activated(environ: dict[str, str], venv: Path | None) -> dict[str, str]:
    """``environ`` as the venv's ``activate`` script leaves it."""
    env = dict(environ)
    if venv is None:
        return env
    bin_dir = str(venv / "bin")
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    env["PATH"] = os.pathsep.join([bin_dir, *parts])
    env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONHOME", None)
    return env


def step_env(record: dict[str, Any] | None, environ: dict[str, str]) -> dict[str, str]:
    """The variables to set for a command of the run (an empty dict when nothing to do)."""
    if not record:
        return {}
    changes: dict[str, str] = {}
    venv = Path(record["venv"]) if record.get("venv") else None
    if venv is not None:
        env = activated(environ, venv)
        changes["PATH"], changes["VIRTUAL_ENV"] = env["PATH"], env["VIRTUAL_ENV"]
    roots = record.get("import_roots") or []
    if roots:
        mapping = {r["checkout"]: r["worktree"] for r in roots}
        existing = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        translated = [mapping.get(str(Path(p).resolve()), p) for p in existing]
        ordered = list(dict.fromkeys([r["worktree"] for r in roots] + translated))
        changes["PYTHONPATH"] = os.pathsep.join(ordered)
    return changes


def checkout_paths(
    paths: list[str], repo_root: Path, worktree: Path, venv: str | None
) -> list[str]:
    """The traceback paths that lie in the user's checkout rather than the run's worktree
    (the venv and agentsaga's own folder excepted)."""
    root, work = repo_root.resolve(), worktree.resolve()
    if root == work:
        return []
    skip = [root / ".agentsaga", *([Path(venv).resolve()] if venv else [])]
    found = []
    for raw in paths:
        # pytest prints paths outside its rootdir relative to it: "../../../src/x.py".
        path = Path(raw) if Path(raw).is_absolute() else Path(os.path.normpath(work / raw))
        if (
            _inside(path, root)
            and not _inside(path, work)
            and not any(_inside(path, s) for s in skip)
        ):
            found.append(str(path))
    return list(dict.fromkeys(found))
