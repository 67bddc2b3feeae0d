"""The read step on repositories as they are: what comes first, what is cut rather than
dropped, what is never read (symlinks out of the repository), and globs that match nothing.

Whole pipelines through the CLI with the scripted provider, real git, real pytest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentsaga.steps import read_rank
from agentsaga.store import open_store
from tests.conftest import cli
from tests.gitstate import git, make_repo


def read_outputs(run_id: str) -> list[dict[str, Any]]:
    store = open_store(os.environ["AGENTSAGA_STORE"])
    try:
        return [a.output for a in store.attempts(run_id) if a.step_id == "read" and a.output]
    finally:
        store.close()


def run(repo: Path, text: str) -> dict[str, Any]:
    (repo.parent / "p.yml").write_text(text)
    result = cli("run", str(repo.parent / "p.yml"), "--json")
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(repr(result)) from None
    data["_result"] = result
    return data


def plan_then_read(plan: str, files: str, extra: str = "", max_tokens: int = 2000) -> str:
    return (
        "name: r\nworkspace: {isolation: none}\n"
        "defaults: {provider: scripted, model: m}\nsteps:\n"
        f"  - id: plan\n    kind: plan\n    prompt: p\n    replies: [{json.dumps(plan)}]\n"
        f"  - id: read\n    kind: read\n    files: {files}\n    max_tokens: {max_tokens}\n" + extra
    )


def filler(name: str, n: int) -> str:
    return "".join(f"def {name}_{i}(x):\n    return x + {i}\n\n" for i in range(n))


def test_globs_that_match_nothing_are_an_error_or_listed(tmp_path: Path, monkeypatch: Any) -> None:
    repo = make_repo(tmp_path, {"src/a.py": "x = 1\n"})
    monkeypatch.chdir(repo)
    data = run(repo, plan_then_read("plan", '["lib/**/*.py", "setup.cfg"]'))
    assert data["status"] == "failed"
    assert "'lib/**/*.py', 'setup.cfg' matched no file" in data["_result"].output
    # A pattern that matched nothing while another did is listed, not dropped silently.
    data = run(repo, plan_then_read("plan", '["src/**/*.py", "lib/**/*.py"]'))
    assert data["status"] == "succeeded"
    (out,) = read_outputs(data["run_id"])
    unmatched = {"path": "lib/**/*.py", "reason": "the pattern matched no file", "tokens": None}
    assert unmatched in out["skipped"]


def test_symlinks_out_of_the_repository_are_never_read(tmp_path: Path, monkeypatch: Any) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOKEN=do-not-read-me\n")
    repo = make_repo(tmp_path, {"src/a.py": "x = 1\n"})
    os.symlink(outside / "secret.txt", repo / "src" / "leak.py")
    os.symlink(outside, repo / "src" / "linked_dir")
    os.symlink(repo / ".git" / "config", repo / "src" / "gitconfig.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "links")
    monkeypatch.chdir(repo)
    data = run(repo, plan_then_read("plan", '["src/**"]'))
    assert data["status"] == "succeeded", data["_result"]
    (out,) = read_outputs(data["run_id"])
    assert out["paths"] == ["src/a.py"]
    assert "do-not-read-me" not in out["files"]
    reasons = {s["path"]: s["reason"] for s in out["skipped"]}
    assert "leads outside the workspace" in reasons["src/leak.py"]
    assert "leads into .git" in reasons["src/gitconfig.py"]
    # A symlink to a folder is not a file to git's listing: nothing beyond it is read.
    assert not any(p.startswith("src/linked_dir") for p in out["paths"])


def test_validate_explain_says_reads_are_confined(tmp_path: Path) -> None:
    p = tmp_path / "p.yml"
    p.write_text(plan_then_read("plan", '["src/**"]'))
    result = cli("validate", "--explain", str(p), "--json")
    assert result.exit_code == 0, result
    (read,) = [s for s in result.json()["steps"] if s["kind"] == "read"]
    assert read["reads"][0] == "src/**"
    assert "symlinks leading out of the workspace" in read["reads"][-1]
    assert ".git/**" in read["reads"][-1]


def test_plan_named_file_too_big_is_cut_to_its_relevant_regions_not_dropped(
    tmp_path: Path, monkeypatch: Any
) -> None:
    big = filler("helper", 300) + "def parse_header(data):\n    return data[:4]\n\n"
    big += filler("tail", 300)
    repo = make_repo(
        tmp_path,
        {"src/big_module.py": big, "src/aaa.py": filler("a", 5), "src/bbb.py": filler("b", 5)},
    )
    monkeypatch.chdir(repo)
    plan = "Fix parse_header in src/big_module.py: it must return 8 bytes."
    data = run(repo, plan_then_read(plan, '["src/*.py"]', max_tokens=600))
    assert data["status"] == "succeeded", data["_result"]
    (out,) = read_outputs(data["run_id"])
    assert out["paths"][0] == "src/big_module.py"
    (cut,) = out["cut"]
    assert cut["path"] == "src/big_module.py" and cut["why"] == "named by the plan"
    assert "def parse_header(data):\n    return data[:4]" in out["files"]
    assert "left out ..." in out["files"]
    assert out["tokens"] <= 600


def test_order_plan_then_failure_then_imports_then_similar_paths(
    tmp_path: Path, monkeypatch: Any
) -> None:
    files = {
        "src/shop/__init__.py": "",
        "src/shop/cart.py": "from .pricing import total\n\n\ndef checkout(items):\n"
        "    return total(items)\n",
        "src/shop/pricing.py": "def total(items):\n    return sum(items) - 1\n",
        "src/shop/aaa_unrelated.py": "X = 1\n",
        "src/shop/discount.py": "RATE = 0\n",
        "tests/conftest.py": "import sys\nsys.path.insert(0, 'src')\n",
        "tests/test_cart.py": "from shop.cart import checkout\n\n\ndef test_checkout():\n"
        "    assert checkout([1, 2]) == 3\n",
    }
    repo = make_repo(tmp_path, files)
    monkeypatch.chdir(repo)
    # The test fails once; the run rewinds to the read, which now sees the failure.
    extra = (
        "  - id: test\n    kind: test\n    run: python -m pytest -q -p no:cacheprovider\n"
        "    on_failure: {rewind_to: read, max_rewinds: 1}\n"
    )
    plan = "Look at the discount rules in tests/conftest.py."
    data = run(repo, plan_then_read(plan, '["src/**/*.py", "tests/*.py"]', extra, 5000))
    assert data["status"] == "failed"
    first, second = read_outputs(data["run_id"])
    assert first["paths"][:2] == ["tests/conftest.py", "src/shop/discount.py"]
    paths = second["paths"]
    # Plan-named first; then the failure's test file; then what it imports (cart), then
    # what cart imports (pricing); then the rest, the path sharing a word with the plan
    # first, whatever the alphabet says.
    assert paths[:4] == [
        "tests/conftest.py",
        "tests/test_cart.py",
        "src/shop/cart.py",
        "src/shop/pricing.py",
    ]
    assert paths[4] == "src/shop/discount.py"


def test_imports_resolve_absolute_relative_and_from_package() -> None:
    paths = ["src/pkg/__init__.py", "src/pkg/a.py", "src/pkg/b.py", "src/pkg/sub/c.py", "d.py"]
    index = read_rank._module_index(paths)
    text = "import d\nfrom pkg import b\nfrom .sub.c import thing\nfrom . import a\n"
    assert read_rank.imports_of("src/pkg/x.py", text, index) == [
        "d.py",
        "src/pkg/__init__.py",
        "src/pkg/b.py",
        "src/pkg/sub/c.py",
        "src/pkg/a.py",
    ]


@pytest.mark.parametrize("text", ["see big.py", "fix src/x/big.py now"])
def test_named_in_by_path_or_unique_file_name(text: str) -> None:
    assert read_rank.named_in(text, ["src/x/big.py", "src/y/small.py"]) == {"src/x/big.py"}
    # A file name two paths share names neither.
    assert read_rank.named_in("see big.py", ["a/big.py", "b/big.py"]) == set()
