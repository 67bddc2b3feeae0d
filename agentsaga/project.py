"""What ``agentsaga init`` finds in a repository, and the starter pipeline it writes for it.

A generic pipeline (read ``**/*.py``, test with ``python -m pytest``) fails on much of what
users have: a src layout, a ``test/`` folder, unittest, a package.json or a go.mod, a
generated ``_version.py`` that a fresh worktree lacks. :func:`detect` looks, without
running anything: the layout (``src/`` or flat, and the packages), the test runner and
its command, the venv (as :mod:`agentsaga.pyenv` finds it), the folders whose globs match
files, and the gitignored generated files a worktree must be given
(``workspace.include``). :func:`starter_pipeline` turns that into a pipeline that runs on
the project as found.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

_TEST_DIRS = ("tests", "test", "testing")
# Generated at install or build time, ignored by git, imported by the package.
_GENERATED = ("_version.py", "version.py", "_build_info.py")


@dataclass
class Project:
    root: Path
    language: str = "python"  # python | node | go | unknown
    layout: str = "flat"  # src | flat (python)
    packages: list[str] = field(default_factory=list)
    test_dirs: list[str] = field(default_factory=list)
    runner: str = "pytest"
    test_command: str = "python -m pytest -q"
    venv: str | None = None
    sources: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"{self.language} project, {self.layout} layout" + _listed(self.packages)]
        lines.append(f"tests: {self.runner} ({self.test_command})")
        lines.append(f"venv: {self.venv or 'none found (python from PATH)'}")
        lines.append(f"read: {', '.join(self.sources + self.tests)}")
        if self.include:
            lines.append(f"workspace.include (gitignored, generated): {', '.join(self.include)}")
        return lines


def _listed(names: list[str]) -> str:
    return f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""


def detect(root: Path) -> Project:
    from agentsaga import pyenv

    project = Project(root)
    source, venv = pyenv.find_venv(root, dict(os.environ))
    if venv is not None:
        inside = venv.is_relative_to(root)
        project.venv = f"{venv.relative_to(root) if inside else venv} (from {source})"
    if (root / "go.mod").is_file() and not _has_python(root):
        project.language, project.runner, project.test_command = "go", "go test", "go test ./..."
        project.sources, project.tests = ["**/*.go"], []
        return project
    if (root / "package.json").is_file() and not _has_python(root):
        _detect_node(project)
        return project
    _detect_python(project)
    return project


def _has_python(root: Path) -> bool:
    return any((root / name).is_file() for name in ("pyproject.toml", "setup.py", "setup.cfg"))


def _packages(folder: Path) -> list[str]:
    skip = {"tests", "test", "docs", "examples", "build", "dist", "venv", ".venv"}
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir()
        and (p / "__init__.py").is_file()
        and p.name not in skip
        and not p.name.startswith(".")
    )


def _detect_python(project: Project) -> None:
    root = project.root
    src = root / "src"
    if src.is_dir() and (_packages(src) or any(src.glob("*.py"))):
        project.layout, project.packages = "src", _packages(src)
        project.sources = ["src/**/*.py"]
    else:
        project.packages = _packages(root)
        project.sources = [f"{p}/**/*.py" for p in project.packages] or ["*.py"]
    project.test_dirs = [d for d in _TEST_DIRS if (root / d).is_dir()]
    project.tests = [f"{d}/**/*.py" for d in project.test_dirs]
    if not project.test_dirs and any(root.glob("test_*.py")) and project.sources != ["*.py"]:
        project.tests = ["test_*.py"]  # "*.py" has them already
    project.runner, project.test_command = _python_runner(root, project.test_dirs)
    project.include = _generated(root, project)


def _python_runner(root: Path, test_dirs: list[str]) -> tuple[str, str]:
    configs = [root / n for n in ("pytest.ini", "pyproject.toml", "setup.cfg", "tox.ini")]
    says_pytest = any(
        p.is_file() and ("pytest" in p.read_text(encoding="utf-8", errors="replace"))
        for p in configs
    )
    conftest = (
        any((root / d / "conftest.py").is_file() for d in test_dirs)
        or (root / "conftest.py").is_file()
    )
    if says_pytest or conftest or not test_dirs or not _mentions_unittest(root, test_dirs):
        # Plain `def test_...` functions with bare asserts are pytest's: unittest would
        # find no test in them (and pass, or refuse a folder without __init__.py).
        return "pytest", "python -m pytest -q"
    first = test_dirs[0]
    return "unittest", f"python -m unittest discover -s {first} -t . -v"


def _mentions_unittest(root: Path, test_dirs: list[str]) -> bool:
    """Whether a test module of the first 200 imports unittest (or a TestCase)."""
    for folder in test_dirs:
        for path in itertools.islice((root / folder).rglob("test*.py"), 200):
            text = path.read_text(encoding="utf-8", errors="replace")
            if "unittest" in text or "TestCase" in text:
                return True
    return False


def _generated(root: Path, project: Project) -> list[str]:
    """Gitignored generated modules present in the checkout: a worktree lacks them."""
    from agentsaga import gitops

    base = root / "src" if project.layout == "src" else root
    found = [
        path.relative_to(root).as_posix()
        for package in project.packages
        for name in _GENERATED
        if (path := base / package / name).is_file()
    ]
    ignored = gitops.ignored_by_git(root, found)
    return [p for p in found if p in ignored]


def _detect_node(project: Project) -> None:
    project.language, project.layout = "node", "src" if (project.root / "src").is_dir() else "flat"
    try:
        scripts = json.loads((project.root / "package.json").read_text()).get("scripts", {})
    except (OSError, ValueError, AttributeError):
        scripts = {}
    project.runner = "npm test"
    project.test_command = "npm test" if "test" in scripts else "npx jest"
    folder = "src" if project.layout == "src" else "."
    project.sources = [f"{folder}/**/*.js", f"{folder}/**/*.ts"]
    project.tests = []


def starter_pipeline(project: Project, template: str) -> str:
    """The starter pipeline text, its read globs, test command and workspace for
    ``project``. ``template`` is the packaged starter.yml with its placeholders."""
    files = json.dumps(project.sources + project.tests)
    workspace = ""
    if project.include:
        workspace = f"workspace:\n  include: {json.dumps(project.include)}\n"
    return (
        template.replace("__FILES__", files)
        .replace("__TEST_COMMAND__", json.dumps(project.test_command))
        .replace("__WORKSPACE__\n", workspace)
    )
