"""Edit blocks against real files in tmp_path: parsing, confinement, planning, applying."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentsaga.edits import (
    EditBlock,
    EditPlan,
    apply_plan,
    confine_path,
    describe_failures,
    parse_edit_blocks,
    plan_edits,
)
from agentsaga.errors import EditError, EditPathError

CALC = "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"


def block(path: str, search: str, replace: str) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def put(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def read(root: Path, rel: str) -> str:
    return (root / rel).read_bytes().decode("utf-8")


def run(root: Path, reply: str) -> tuple[EditPlan, list[str]]:
    """Parse, plan and apply; changed paths are [] when the plan has failures."""
    plan = plan_edits(root, parse_edit_blocks(reply))
    if plan.failures:
        return plan, []
    return plan, apply_plan(root, plan)


# ------------------------------------------------------------------ parsing


def test_parse_one_block() -> None:
    blocks = parse_edit_blocks(block("calc.py", "a\n", "b\n"))
    assert blocks == [EditBlock("calc.py", "a\n", "b\n", index=0, line=1)]


def test_parse_ignores_text_around_blocks() -> None:
    reply = (
        "Here is the fix.\n\nIt changes two files:\n\n"
        + block("a.py", "x = 1\n", "x = 2\n")
        + "\nAnd now the second one:\n\n"
        + block("b.py", "y = 1\n", "y = 2\n")
        + "\nThat should do it.\n"
    )
    blocks = parse_edit_blocks(reply)
    assert [(b.path, b.index, b.line) for b in blocks] == [("a.py", 0, 5), ("b.py", 1, 14)]


def test_parse_blocks_inside_fences() -> None:
    reply = (
        "```python\n"
        + block("src/a.py", "x = 1\n", "x = 2\n")
        + "```\n\nsrc/b.py\n```python\n"
        + "<<<<<<< SEARCH\ny = 1\n=======\ny = 2\n>>>>>>> REPLACE\n```\n"
    )
    blocks = parse_edit_blocks(reply)
    assert [(b.path, b.search, b.replace) for b in blocks] == [
        ("src/a.py", "x = 1\n", "x = 2\n"),
        ("src/b.py", "y = 1\n", "y = 2\n"),
    ]


@pytest.mark.parametrize("decorated", ["`calc.py`", "**calc.py**", "  calc.py  ", "``calc.py``"])
def test_parse_strips_path_decoration(decorated: str) -> None:
    assert parse_edit_blocks(block(decorated, "a\n", "b\n"))[0].path == "calc.py"


def test_parse_reuses_previous_path_for_back_to_back_blocks() -> None:
    reply = block("calc.py", "a\n", "b\n") + "<<<<<<< SEARCH\nc\n=======\nd\n>>>>>>> REPLACE\n"
    second = parse_edit_blocks(reply)[1]
    assert (second.path, second.line) == ("calc.py", 7)


def test_parse_crlf_reply_and_blank_search() -> None:
    reply = "new.py\r\n<<<<<<< SEARCH\r\n\r\n=======\r\nx = 1\r\n>>>>>>> REPLACE\r\n"
    assert parse_edit_blocks(reply) == [EditBlock("new.py", "", "x = 1\n", index=0, line=1)]


def test_parse_no_blocks() -> None:
    assert parse_edit_blocks("I could not find anything to change.") == []


@pytest.mark.parametrize(
    ("reply", "number", "line", "words"),
    [
        # SEARCH that never reaches its divider.
        ("a.py\n<<<<<<< SEARCH\nx = 1\n", 1, 2, "no '======='"),
        # Divider that is never closed.
        ("a.py\n<<<<<<< SEARCH\nx\n=======\ny\n", 1, 4, "no '>>>>>>> REPLACE'"),
        # A second SEARCH starts before the first block's divider.
        ("a.py\n<<<<<<< SEARCH\nx\n<<<<<<< SEARCH\n", 1, 4, "has no '======='"),
        # REPLACE before the divider.
        ("a.py\n<<<<<<< SEARCH\nx\n>>>>>>> REPLACE\n", 1, 4, "has no '======='"),
        # Two dividers in one block.
        ("a.py\n<<<<<<< SEARCH\nx\n=======\ny\n=======\nz\n>>>>>>> REPLACE\n", 1, 6, "not closed"),
        # A REPLACE marker with no block: a block that lost its SEARCH line.
        ("a.py\nx\n=======\ny\n>>>>>>> REPLACE\n", 1, 5, "without a '<<<<<<< SEARCH'"),
        # The stray marker is numbered after the good block before it.
        (block("a.py", "x\n", "y\n") + ">>>>>>> REPLACE\n", 2, 7, "without"),
        # No path at all.
        ("<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n", 1, 1, "no file path"),
    ],
)
def test_parse_malformed(reply: str, number: int, line: int, words: str) -> None:
    with pytest.raises(EditError) as info:
        parse_edit_blocks(reply)
    message = info.value.message
    assert f"edit block {number} (reply line {line})" in message
    assert words in message


def test_parse_stray_divider_in_prose_is_ignored() -> None:
    reply = "Summary\n=======\n\n" + block("a.py", "x\n", "y\n")
    assert [b.path for b in parse_edit_blocks(reply)] == ["a.py"]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "<<<<<<< SEARCH",
                    "=======",
                    ">>>>>>> REPLACE",
                    "```",
                    "```python",
                    "a.py",
                    "",
                    "  ",
                    "\r",
                    "<<<<< SEARCH",
                    "**x.py**",
                ]
            ),
            st.text(max_size=40),
        ),
        max_size=30,
    ).map("\n".join)
)
def test_fuzz_parse_returns_blocks_or_edit_error(reply: str) -> None:
    try:
        blocks = parse_edit_blocks(reply)
    except EditError:
        return
    for n, parsed in enumerate(blocks):
        assert parsed.index == n
        assert parsed.path
        assert parsed.line >= 1


# ------------------------------------------------------------------ confinement


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("../outside.py", "'..'"),
        ("src/../../outside.py", "'..'"),
        ("/etc/passwd", "absolute"),
        (".git/hooks/pre-commit", ".git"),
        (".GIT/config", ".git"),
        ("sub/.git/config", ".git"),
        (".git", ".git"),
        ("a\x00b.py", "NUL"),
        ("x" * 256 + ".py", "255 bytes"),
        ("d/" * 2100 + "f.py", "4096 bytes"),
        ("", "empty"),
        (".", "workspace itself"),
    ],
)
def test_confine_refuses(tmp_path: Path, rel: str, reason: str) -> None:
    with pytest.raises(EditPathError) as info:
        confine_path(tmp_path, rel)
    assert reason in info.value.reason


def test_confine_accepts_normal_and_new_paths(tmp_path: Path) -> None:
    put(tmp_path, "src/a.py", "x\n")
    assert confine_path(tmp_path, "src/a.py") == (tmp_path / "src/a.py").resolve()
    assert confine_path(tmp_path, "./new/dir/b.py") == (tmp_path / "new/dir/b.py").resolve()
    assert confine_path(tmp_path, ".github/workflows/ci.yml").name == "ci.yml"


def test_confine_refuses_symlink_dir_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(EditPathError, match="outside the workspace"):
        confine_path(root, "link/evil.py")


def test_confine_refuses_symlink_file_outside(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    secret = put(tmp_path, "secret.txt", "keep\n")
    os.symlink(secret, root / "notes.txt")
    reply = block("notes.txt", "keep\n", "stolen\n")
    plan, changed = run(root, reply)
    assert changed == []
    assert plan.failures[0].reason.startswith("path refused")
    assert secret.read_text() == "keep\n"


def test_confine_refuses_symlink_into_git(tmp_path: Path) -> None:
    (tmp_path / ".git" / "hooks").mkdir(parents=True)
    os.symlink(tmp_path / ".git" / "hooks", tmp_path / "hooks")
    with pytest.raises(EditPathError, match=".git"):
        confine_path(tmp_path, "hooks/pre-commit")


def test_confine_allows_symlink_inside_root(tmp_path: Path) -> None:
    put(tmp_path, "real/a.py", "x\n")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert confine_path(tmp_path, "alias/a.py") == (tmp_path / "real/a.py").resolve()


def test_refused_paths_become_failures_not_writes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    reply = (
        block("../escape.py", "", "x\n")
        + block("/tmp/abs.py", "", "x\n")
        + block(".git/hooks/pre-commit", "", "#!/bin/sh\nrm -rf ~\n")
    )
    plan, changed = run(root, reply)
    assert changed == []
    assert [f.reason.split(":")[0] for f in plan.failures] == ["path refused"] * 3
    assert not (tmp_path / "escape.py").exists()
    assert not (root / ".git").exists()


# ------------------------------------------------------------------ applying


def test_exact_replace(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    plan, changed = run(tmp_path, block("calc.py", "def add(a, b):\n    return a - b\n",
                                        "def add(a, b):\n    return a + b\n"))  # fmt: skip
    assert changed == ["calc.py"]
    assert read(tmp_path, "calc.py") == CALC.replace("return a - b", "return a + b", 1)
    assert [b.index for b in plan.blocks_ok] == [0]


def test_whitespace_drift_reindents_replacement(tmp_path: Path) -> None:
    put(tmp_path, "m.py", "class C:\n    def f(self):\n        return 1\n")
    # The model dropped the class indentation from both sections.
    reply = block("m.py", "def f(self):\n    return 1\n", "def f(self):\n    return 2\n")
    _, changed = run(tmp_path, reply)
    assert changed == ["m.py"]
    assert read(tmp_path, "m.py") == "class C:\n    def f(self):\n        return 2\n"


def test_whitespace_drift_with_excess_indentation_and_trailing_spaces(tmp_path: Path) -> None:
    put(tmp_path, "m.py", "def f():\n    return 1\n")
    reply = block("m.py", "        def f():   \n            return 1\n", "        def g():\n"
                  "            return 2\n")  # fmt: skip
    run(tmp_path, reply)
    assert read(tmp_path, "m.py") == "def g():\n    return 2\n"


def test_exact_match_wins_over_loose_match(tmp_path: Path) -> None:
    # "x = 1" appears indented once and flush once; the exact (flush) one is not ambiguous.
    put(tmp_path, "m.py", "if a:\n    x = 1\nx = 1\n")
    _, changed = run(tmp_path, block("m.py", "x = 1\n", "x = 2\n"))
    assert changed == ["m.py"]
    assert read(tmp_path, "m.py") == "if a:\n    x = 1\nx = 2\n"


def test_crlf_file_stays_crlf(tmp_path: Path) -> None:
    put(tmp_path, "win.py", "a = 1\r\nb = 2\r\nc = 3\r\n")
    run(tmp_path, block("win.py", "b = 2\n", "b = 20\nb2 = 21\n"))
    assert read(tmp_path, "win.py") == "a = 1\r\nb = 20\r\nb2 = 21\r\nc = 3\r\n"


def test_mixed_line_endings_untouched_lines_keep_theirs(tmp_path: Path) -> None:
    put(tmp_path, "mix.txt", "a\r\nb\nc\r\n")
    run(tmp_path, block("mix.txt", "a\n", "A\n"))
    assert read(tmp_path, "mix.txt") == "A\r\nb\nc\r\n"


def test_new_file_in_new_directory(tmp_path: Path) -> None:
    _, changed = run(tmp_path, block("pkg/sub/new.py", "", "def hello():\n    return 'hi'\n"))
    assert changed == ["pkg/sub/new.py"]
    assert read(tmp_path, "pkg/sub/new.py") == "def hello():\n    return 'hi'\n"


def test_empty_search_appends_to_empty_file(tmp_path: Path) -> None:
    put(tmp_path, "empty.py", "")
    _, changed = run(tmp_path, block("empty.py", "", "x = 1\n"))
    assert changed == ["empty.py"]
    assert read(tmp_path, "empty.py") == "x = 1\n"


def test_empty_search_on_existing_file_fails(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    plan, _ = run(tmp_path, block("calc.py", "", "x = 1\n"))
    assert plan.failures[0].reason == "file exists"
    assert read(tmp_path, "calc.py") == CALC


def test_delete_lines(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    run(tmp_path, block("calc.py", "\n\ndef sub(a, b):\n    return a - b\n", ""))
    assert read(tmp_path, "calc.py") == "def add(a, b):\n    return a - b\n"


def test_delete_last_lines_keeps_missing_final_newline(tmp_path: Path) -> None:
    put(tmp_path, "t.txt", "one\ntwo\nthree")
    run(tmp_path, block("t.txt", "three\n", ""))
    assert read(tmp_path, "t.txt") == "one\ntwo"


@pytest.mark.parametrize("final", ["\n", ""])
def test_trailing_newline_preserved(tmp_path: Path, final: str) -> None:
    put(tmp_path, "t.txt", "one\ntwo" + final)
    run(tmp_path, block("t.txt", "two\n", "TWO\n"))
    assert read(tmp_path, "t.txt") == "one\nTWO" + final


def test_several_files_in_one_reply(tmp_path: Path) -> None:
    put(tmp_path, "src/a.py", "a = 1\n")
    put(tmp_path, "src/b.py", "b = 1\n")
    reply = (
        "First:\n"
        + block("src/b.py", "b = 1\n", "b = 2\n")
        + "Then:\n"
        + block("src/a.py", "a = 1\n", "a = 2\n")
        + block("docs/new.md", "", "# New\n")
    )
    _, changed = run(tmp_path, reply)
    assert changed == ["docs/new.md", "src/a.py", "src/b.py"]
    assert (read(tmp_path, "src/a.py"), read(tmp_path, "src/b.py")) == ("a = 2\n", "b = 2\n")


def test_two_blocks_on_one_file_compose(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    reply = block("calc.py", "def add(a, b):\n    return a - b\n",
                  "def add(a, b):\n    return a + b\n") + block(
        "calc.py", "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return b + a\n"
    )  # fmt: skip
    plan, changed = run(tmp_path, reply)
    assert changed == ["calc.py"] and len(plan.blocks_ok) == 2
    assert read(tmp_path, "calc.py").startswith("def add(a, b):\n    return b + a\n")


def test_create_then_edit_same_file_in_one_reply(tmp_path: Path) -> None:
    reply = block("n.py", "", "x = 1\n") + block("n.py", "x = 1\n", "x = 2\n")
    run(tmp_path, reply)
    assert read(tmp_path, "n.py") == "x = 2\n"


def test_ambiguous_search_is_not_guessed(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    plan, changed = run(tmp_path, block("calc.py", "    return a - b\n", "    return 0\n"))
    assert changed == []
    assert plan.failures[0].reason == "ambiguous: 2 matches"
    assert read(tmp_path, "calc.py") == CALC


def test_ambiguous_at_the_loose_level(tmp_path: Path) -> None:
    put(tmp_path, "m.py", "if a:\n    x = 1\nif b:\n\tx = 1\n")
    plan, _ = run(tmp_path, block("m.py", "  x = 1\n", "  x = 2\n"))
    assert plan.failures[0].reason == "ambiguous: 2 matches"


def test_missing_file(tmp_path: Path) -> None:
    plan, _ = run(tmp_path, block("nope.py", "x\n", "y\n"))
    assert plan.failures[0].reason == "missing file"
    assert not (tmp_path / "nope.py").exists()


def test_no_match_reports_closest_lines(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    reply = block("calc.py", "def sub(a, b):\n    return a + b  # wrong\n", "pass\n")
    plan, _ = run(tmp_path, reply)
    failure = plan.failures[0]
    assert failure.reason == "no match"
    assert failure.closest == "def sub(a, b):\n    return a - b\n"
    assert failure.closest_line == 5


def test_no_match_with_nothing_close(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    plan, _ = run(tmp_path, block("calc.py", "zzzzzzzzzzzzzzzzzzzzzzzzzzz\n", "y\n"))
    assert (plan.failures[0].reason, plan.failures[0].closest) == ("no match", None)


def test_directory_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    plan, _ = run(tmp_path, block("pkg", "", "x\n"))
    assert plan.failures[0].reason == "path refused: it is a directory"


def test_all_blocks_checked_before_any_is_applied(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    put(tmp_path, "other.py", "z = 1\n")
    reply = (
        block("calc.py", "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return 0\n")
        + block("new.py", "", "created = True\n")
        + block("other.py", "not there\n", "z = 2\n")
    )
    plan = plan_edits(tmp_path, parse_edit_blocks(reply))
    assert [b.index for b in plan.blocks_ok] == [0, 1]
    assert [f.block.index for f in plan.failures] == [2]
    with pytest.raises(EditError) as info:
        apply_plan(tmp_path, plan)
    assert info.value.output == {
        "failures": [{"block": 3, "path": "other.py", "reason": "no match"}]
    }
    assert read(tmp_path, "calc.py") == CALC
    assert read(tmp_path, "other.py") == "z = 1\n"
    assert not (tmp_path / "new.py").exists()


def test_describe_failures_names_blocks_reasons_and_closest_lines(tmp_path: Path) -> None:
    put(tmp_path, "calc.py", CALC)
    reply = (
        block("calc.py", "def add(a, b):\n    return a - b\n", "def add(a, b):\n    return 0\n")
        + block("calc.py", "def sub(a, b):\n    return a-b\n", "pass\n")
        + block("missing.py", "x\n", "y\n")
    )
    message = describe_failures(plan_edits(tmp_path, parse_edit_blocks(reply)))
    assert "2 of 3 edit blocks failed, so no file was changed" in message
    assert "Block 2 (calc.py, reply line 9): no match." in message
    assert "def sub(a, b):\n    return a - b\n" in message
    assert "from line 5" in message
    assert "Block 3 (missing.py, reply line 16): missing file." in message
    assert "matched but were NOT applied" in message and "block 1 (calc.py)" in message


def test_describe_failures_when_nothing_failed(tmp_path: Path) -> None:
    plan = plan_edits(tmp_path, parse_edit_blocks(block("a.py", "", "x\n")))
    assert describe_failures(plan) == "All 1 edit blocks apply."


def test_unicode_content(tmp_path: Path) -> None:
    put(tmp_path, "i18n.py", 'GREETING = "héllo"\nEMOJI = "🙂"\n')
    _, changed = run(
        tmp_path, block("i18n.py", 'GREETING = "héllo"\n', 'GREETING = "こんにちは"\n')
    )
    assert changed == ["i18n.py"]
    assert read(tmp_path, "i18n.py") == 'GREETING = "こんにちは"\nEMOJI = "🙂"\n'


def test_unicode_line_separators_are_not_line_breaks(tmp_path: Path) -> None:
    # str.splitlines would split on U+2028 and \x0c; a file's lines are "\n"-separated only.
    put(tmp_path, "u.txt", "a\u2028b\x0cc\nd\n")
    run(tmp_path, block("u.txt", "d\n", "D\n"))
    assert read(tmp_path, "u.txt") == "a\u2028b\x0cc\nD\n"


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bin.dat").write_bytes(b"\xff\xfe\x00x\n")
    plan, _ = run(tmp_path, block("bin.dat", "x\n", "y\n"))
    assert plan.failures[0].reason == "path refused: not a UTF-8 text file"


def test_apply_keeps_file_mode(tmp_path: Path) -> None:
    script = put(tmp_path, "run.sh", "#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    run(tmp_path, block("run.sh", "echo hi\n", "echo bye\n"))
    assert script.stat().st_mode & 0o777 == 0o755
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".agentsaga-edit-")]


def test_apply_reports_only_files_that_changed(tmp_path: Path) -> None:
    put(tmp_path, "a.py", "x = 1\n")
    reply = block("a.py", "x = 1\n", "x = 2\n") + block("a.py", "x = 2\n", "x = 1\n")
    _, changed = run(tmp_path, reply)
    assert changed == []


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="ab \t", max_size=4), min_size=1, max_size=12),
    new=st.lists(st.text(alphabet="xyz ", max_size=4), max_size=4),
    span=st.tuples(st.integers(0, 11), st.integers(1, 4)),
    nl=st.sampled_from(["\n", "\r\n"]),
    final=st.booleans(),
)
def test_fuzz_exact_replacement_matches_a_model(
    lines: list[str],
    new: list[str],
    span: tuple[int, int],
    nl: str,
    final: bool,
) -> None:
    """Against random files: a unique exact window is replaced and nothing else changes; a
    non-unique one is refused as ambiguous, never applied to the first occurrence."""
    # Without a final newline, a last empty line is not a line at all: "a\n" is ["a"].
    assume(final or lines[-1] != "")
    start = min(span[0], len(lines) - 1)
    end = min(start + span[1], len(lines))
    window = lines[start:end]
    text = nl.join(lines) + (nl if final else "")
    search = "".join(w + "\n" for w in window)
    replace = "".join(n + "\n" for n in new)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        put(root, "f.txt", text)
        plan = plan_edits(root, [EditBlock("f.txt", search, replace, index=0, line=1)])
        if not search.strip():
            # A blank SEARCH means "create": refused unless the file is empty.
            if text:
                assert plan.failures[0].reason == "file exists"
            else:
                assert plan.new_contents["f.txt"] == replace
            return
        exact = [i for i in range(len(lines)) if lines[i : i + len(window)] == window]
        if len(exact) > 1:
            assert plan.failures[0].reason == f"ambiguous: {len(exact)} matches"
            return
        assert not plan.failures
        result = lines[:start] + new + lines[end:]
        keeps_final = final or not result
        # A file with no line ending at all has no style of its own: new lines get "\n".
        nl = nl if "\n" in text else "\n"
        expected = nl.join(result) + (nl if result and keeps_final else "")
        assert plan.new_contents["f.txt"] == expected


def test_closest_lines_in_a_large_file_are_found_quickly(tmp_path: Path) -> None:
    put(tmp_path, "big.py", "".join(f"v_{i} = f(x, {i})  # n{i}\n" for i in range(10_000)))
    search = "".join(f"v_{i} = f(y, {i})\n" for i in range(5000, 5040))
    # CPU time of this process, not the wall clock: other processes' load does not count.
    started = time.process_time()
    plan, _ = run(tmp_path, block("big.py", search, "pass\n"))
    assert time.process_time() - started < 5
    assert plan.failures[0].closest_line == 5001
