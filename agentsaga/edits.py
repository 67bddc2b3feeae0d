"""SEARCH/REPLACE edit blocks: parse them from a model's reply, check them, apply them.

The format is aider's::

    path/to/file.py
    <<<<<<< SEARCH
    exact existing lines
    =======
    replacement lines
    >>>>>>> REPLACE

The work is split in three so that nothing touches the disk until every block is known
to apply:

1. ``parse_edit_blocks`` turns the reply into ``EditBlock`` values. Prose and ```` ``` ````
   fences around the blocks are ignored; a malformed block (a SEARCH that never reaches its
   ``=======`` or ``>>>>>>> REPLACE``, a marker with no block) is an ``EditError`` naming the
   block number and the reply line, because a half-understood reply must not half-apply.
2. ``plan_edits`` applies every block in memory, in reply order, so two blocks on one file
   compose. Each failure (missing file, no match, ambiguous match, refused path, creating a
   file that exists) is collected rather than raised, so the model hears about all of them
   at once (``describe_failures``).
3. ``apply_plan`` writes the planned files, and refuses outright if any block failed.

Matching never guesses. A block's SEARCH lines must occur exactly once in the file, first
compared exactly, then, only if there is no exact match, compared with leading and trailing
whitespace of each line ignored (models often drift in indentation). Two or more matches at
the level that found any is "ambiguous", never "the first one". Line endings belong to the
file: a CRLF file stays CRLF, and a file without a final newline keeps lacking it.

Paths are confined to the workspace by ``confine_path``: no absolute paths, no ``..``,
nothing inside ``.git`` (which would let a reply plant a hook that runs on the user's next
commit), and no symlink that resolves outside the root.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agentsaga.errors import EditError, EditPathError

# Aider accepts 5 to 9 marker characters; models do miscount, and a miscounted marker that
# we silently took for content would be worse than being lenient here.
_SEARCH_RE = re.compile(r"^<{5,9}\s*SEARCH\s*$")
_DIVIDER_RE = re.compile(r"^={5,9}$")
_REPLACE_RE = re.compile(r"^>{5,9}\s*REPLACE\s*$")

# Linux limits (NAME_MAX, PATH_MAX); past them the OS fails mid-write instead of up front.
_MAX_COMPONENT_BYTES = 255
_MAX_PATH_BYTES = 4096

# Below this similarity the "closest lines" are noise that would mislead the model.
_CLOSEST_MIN_RATIO = 0.5


@dataclass(frozen=True)
class EditBlock:
    """One SEARCH/REPLACE block. ``search`` and ``replace`` use ``\\n`` line endings and end
    with a newline unless empty; a SEARCH of only blank lines is normalised to ``""``."""

    path: str
    search: str
    replace: str
    index: int  # 0-based order in the reply
    line: int  # 1-based reply line of the path (of the SEARCH marker when inherited)


@dataclass
class BlockFailure:
    block: EditBlock
    # 'missing file' | 'no match' | 'ambiguous: N matches' | 'path refused: ...' | 'file exists'
    reason: str
    closest: str | None = None  # for 'no match': the most similar existing lines
    closest_line: int | None = None  # 1-based line in the file where ``closest`` starts


@dataclass
class EditPlan:
    new_contents: dict[str, str] = field(default_factory=dict)
    blocks_ok: list[EditBlock] = field(default_factory=list)
    failures: list[BlockFailure] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


def _block_error(number: int, line: int, problem: str) -> EditError:
    return EditError(
        f"edit block {number} (reply line {line}): {problem}. Each block is: the file path "
        "on its own line, '<<<<<<< SEARCH', the exact existing lines, '=======', the new "
        "lines, '>>>>>>> REPLACE'."
    )


def _clean_path(line: str) -> str:
    # Models decorate the path line as `path`, **path** or ``path``.
    return line.strip().strip("`*").strip()


def _find_path(lines: list[str], start: int, search_at: int) -> tuple[str, int] | None:
    """The path line for the SEARCH marker at ``search_at``: the last non-empty line after
    the previous block (from ``start``), skipping fence lines such as ```` ```python ````."""
    for i in range(search_at - 1, start - 1, -1):
        text = lines[i].strip()
        if not text or text.startswith("```"):
            continue
        path = _clean_path(text)
        return (path, i) if path else None
    return None


def _section(text_lines: list[str]) -> str:
    return "".join(line + "\n" for line in text_lines)


def parse_edit_blocks(reply: str) -> list[EditBlock]:
    """Parse every SEARCH/REPLACE block in ``reply``, in order.

    A block with no path line of its own directly after another block (only blank lines or
    fences between them) edits the previous block's file, as aider allows; its ``line`` is
    then the SEARCH marker's. A stray ``=======`` outside any block is ignored, since it is
    also a Markdown heading underline; a stray SEARCH or REPLACE marker is an error.
    """
    lines = [line.removesuffix("\r") for line in reply.replace("\r\n", "\n").split("\n")]
    blocks: list[EditBlock] = []
    prev_end = 0  # first line after the previous block
    prev_path: str | None = None
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        number = len(blocks) + 1
        if _REPLACE_RE.match(stripped):
            raise _block_error(number, i + 1, "'>>>>>>> REPLACE' without a '<<<<<<< SEARCH'")
        if not _SEARCH_RE.match(stripped):
            i += 1
            continue
        search_at = i
        found = _find_path(lines, prev_end, search_at)
        if found is not None:
            path, path_line = found[0], found[1] + 1
        elif prev_path is not None:
            path, path_line = prev_path, search_at + 1
        else:
            raise _block_error(number, search_at + 1, "no file path line before '<<<<<<< SEARCH'")
        if _SEARCH_RE.match(path) or _DIVIDER_RE.match(path) or _REPLACE_RE.match(path):
            raise _block_error(number, path_line, f"the path line is a marker: {path!r}")

        # SEARCH section: up to the divider; any other marker first means a broken block.
        j = search_at + 1
        while j < len(lines) and not _DIVIDER_RE.match(lines[j].strip()):
            if _SEARCH_RE.match(lines[j].strip()) or _REPLACE_RE.match(lines[j].strip()):
                raise _block_error(
                    number, j + 1, f"'<<<<<<< SEARCH' at line {search_at + 1} has no '======='"
                )
            j += 1
        if j >= len(lines):
            raise _block_error(
                number, search_at + 1, "'<<<<<<< SEARCH' has no '=======' before the end"
            )
        divider_at = j

        j = divider_at + 1
        while j < len(lines) and not _REPLACE_RE.match(lines[j].strip()):
            if _SEARCH_RE.match(lines[j].strip()) or _DIVIDER_RE.match(lines[j].strip()):
                raise _block_error(
                    number,
                    j + 1,
                    f"'=======' at line {divider_at + 1} is not closed by '>>>>>>> REPLACE'",
                )
            j += 1
        if j >= len(lines):
            raise _block_error(
                number, divider_at + 1, "'=======' has no '>>>>>>> REPLACE' before the end"
            )
        replace_at = j

        search_lines = lines[search_at + 1 : divider_at]
        # A blank-only SEARCH is what "create this file" looks like with a stray empty line.
        search = "" if all(not s.strip() for s in search_lines) else _section(search_lines)
        replace = _section(lines[divider_at + 1 : replace_at])
        blocks.append(EditBlock(path, search, replace, index=len(blocks), line=path_line))
        prev_path = path
        prev_end = replace_at + 1
        i = replace_at + 1
    return blocks


# --------------------------------------------------------------------------- paths


def _is_git_dir_name(part: str) -> bool:
    # Case-insensitive, and trailing dots/spaces dropped, because on Windows and macOS
    # '.GIT' and '.git. ' name the same directory as '.git' (CVE-2014-9390).
    return part.casefold().rstrip(". ") == ".git"


def confine_path(root: Path, rel: str, reading: bool = False) -> Path:
    """Resolve ``rel`` inside ``root``, or raise ``EditPathError`` saying why not (in a
    read's words when ``reading``: the agent's ``read_file`` is confined alike)."""
    done = "read" if reading else "edited"
    if "\x00" in rel:
        raise EditPathError(rel, "the path contains a NUL byte")
    if not rel.strip():
        raise EditPathError(rel, "the path is empty")
    if len(rel.encode("utf-8", "surrogatepass")) > _MAX_PATH_BYTES:
        raise EditPathError(rel[:80] + "...", f"the path is longer than {_MAX_PATH_BYTES} bytes")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith("\\") or re.match(r"^[A-Za-z]:[\\/]", rel):
        raise EditPathError(
            rel, "absolute paths are not allowed; give a path relative to the workspace"
        )
    for part in pure.parts:
        if part == "..":
            where = "paths to read" if reading else "edit paths"
            raise EditPathError(rel, f"'..' is not allowed in {where}")
        if len(part.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES:
            raise EditPathError(
                rel[:80] + "...", f"a path component is longer than {_MAX_COMPONENT_BYTES} bytes"
            )
        if _is_git_dir_name(part):
            raise EditPathError(rel, f"files inside .git are not {done}")
    base = root.resolve()
    try:
        resolved = (base / pure).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise EditPathError(rel, f"the path cannot be resolved: {exc}") from exc
    if not resolved.is_relative_to(base):
        raise EditPathError(rel, "a symlink in the path leads outside the workspace")
    inner = resolved.relative_to(base)
    # A symlink inside the workspace may still point into .git.
    if any(_is_git_dir_name(part) for part in inner.parts):
        raise EditPathError(rel, "the path leads into .git")
    if not inner.parts:
        raise EditPathError(rel, "the path is the workspace itself, not a file")
    # agentsaga's own state and configuration: a reply that rewrote them could point the
    # next command's provider (and its key) elsewhere, or forge the run's records.
    first = inner.parts[0].casefold().rstrip(". ")
    if first in (".agentsaga", ".agentsaga.yml", ".agentsaga.yaml"):
        raise EditPathError(rel, f"agentsaga's own state and configuration are not {done}")
    return resolved


# --------------------------------------------------------------------------- matching

# A file as lines without terminators plus each line's own terminator, so that a mixed-ending
# file comes back byte for byte where no block touched it.
_Lines = tuple[list[str], list[str]]


def _split(text: str) -> _Lines:
    pieces = text.split("\n")
    contents: list[str] = []
    endings: list[str] = []
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        if last:
            if piece:
                contents.append(piece)
                endings.append("")
        elif piece.endswith("\r"):
            contents.append(piece[:-1])
            endings.append("\r\n")
        else:
            contents.append(piece)
            endings.append("\n")
    return contents, endings


def _join(contents: list[str], endings: list[str]) -> str:
    return "".join(c + e for c, e in zip(contents, endings, strict=True))


def _newline_of(endings: list[str]) -> str:
    # The first real line ending decides: that is the file's style for new lines.
    return next((e for e in endings if e), "\n")


def _find(contents: list[str], wanted: list[str], *, loose: bool) -> list[int]:
    if loose:
        contents = [c.strip() for c in contents]
        wanted = [w.strip() for w in wanted]
    k = len(wanted)
    return [i for i in range(len(contents) - k + 1) if contents[i : i + k] == wanted]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindent(replace: list[str], search: list[str], matched: list[str]) -> list[str]:
    """Shift the replacement by the indentation delta of the first non-blank matched line.

    Only a pure prefix delta is applied (the file indents by more, or by less, of the same
    characters). Tabs against spaces has no single meaning, so the replacement is then left
    as the model wrote it rather than converted on a guess.
    """
    pair = next(((s, m) for s, m in zip(search, matched, strict=True) if s.strip()), None)
    if pair is None:
        return replace
    have, want = _indent(pair[0]), _indent(pair[1])
    if want.startswith(have):
        extra = want[len(have) :]
        return [extra + r if r.strip() else r for r in replace]
    if have.startswith(want):
        surplus = have[len(want) :]
        return [r.removeprefix(surplus) for r in replace]
    return replace


def _closest(contents: list[str], wanted: list[str]) -> tuple[str, int] | None:
    """The window of existing lines most similar to ``wanted``, with its 1-based start line,
    or None when nothing is similar enough to be worth showing.

    Difflib over whole windows is quadratic in their length and, run at every offset, took
    seconds on a 10,000-line file. So every window is first scored by the characters it
    shares with ``wanted`` (difflib's ``quick_ratio``, kept up to date as the window slides
    by one line), and only the best few are scored properly, line against line.
    """
    if not contents:
        return None
    k = min(len(wanted), len(contents))
    target = Counter("\n".join(s.strip() for s in wanted))
    target_size = sum(target.values())
    line_counts = [Counter(c.strip()) for c in contents]
    window: Counter[str] = Counter()
    shared = 0

    def slide(counts: Counter[str], sign: int) -> None:
        nonlocal shared
        for ch, n in counts.items():
            before = min(window[ch], target[ch])
            window[ch] += sign * n
            shared += min(window[ch], target[ch]) - before

    scored: list[tuple[float, int]] = []
    for i in range(len(contents)):
        slide(line_counts[i], 1)
        if i >= k:
            slide(line_counts[i - k], -1)
        if i >= k - 1:
            size = target_size + sum(window.values())
            scored.append((2 * shared / size if size else 1.0, i - k + 1))
    scored.sort(key=lambda item: (-item[0], item[1]))

    def line_score(start: int) -> float:
        pairs = zip(wanted, contents[start : start + k], strict=False)
        ratios = [difflib.SequenceMatcher(None, w.strip(), c.strip()).ratio() for w, c in pairs]
        return sum(ratios) / len(wanted)

    best = max(scored[:8], key=lambda item: (line_score(item[1]), -item[1]))
    start = best[1]
    if line_score(start) < _CLOSEST_MIN_RATIO:
        return None
    return "".join(c + "\n" for c in contents[start : start + k]), start + 1


def _apply_block(text: str, block: EditBlock) -> tuple[str | None, BlockFailure | None]:
    """Apply one non-empty SEARCH block to ``text``: the new text, or why not."""
    contents, endings = _split(text)
    wanted = block.search.split("\n")[:-1]
    new = block.replace.split("\n")[:-1]
    hits = _find(contents, wanted, loose=False)
    loose = False
    if not hits:
        hits = _find(contents, wanted, loose=True)
        loose = True
    if len(hits) > 1:
        return None, BlockFailure(block, f"ambiguous: {len(hits)} matches")
    if not hits:
        near = _closest(contents, wanted)
        if near is None:
            return None, BlockFailure(block, "no match")
        return None, BlockFailure(block, "no match", closest=near[0], closest_line=near[1])
    start, end = hits[0], hits[0] + len(wanted)
    if loose:
        new = _reindent(new, wanted, contents[start:end])
    nl = _newline_of(endings)
    new_endings = [nl] * len(new)
    if new_endings:
        # The last replaced line keeps the ending it had: "" at the end of a file without a
        # final newline, or a lone "\n" in a mixed file.
        new_endings[-1] = endings[end - 1]
    had_final_newline = not endings or endings[-1] != ""
    contents[start:end] = new
    endings[start:end] = new_endings
    if contents and not had_final_newline:
        # Deleting the last lines must not give the file a final newline it never had.
        endings[-1] = ""
    return _join(contents, endings), None


def _read(path: Path) -> str | None:
    if not path.exists():
        return None
    # Bytes, not read_text: universal newlines would turn CRLF into LF and lose the style.
    return path.read_bytes().decode("utf-8")


def plan_edits(root: Path, blocks: list[EditBlock]) -> EditPlan:
    """Check every block against the files under ``root`` and compute the new contents,
    without writing anything. Blocks apply in order, in memory, so later blocks see the
    effect of earlier ones on the same file; a failed block changes nothing."""
    plan = EditPlan()
    base = root.resolve()
    current: dict[str, str | None] = {}
    for block in blocks:
        try:
            target = confine_path(root, block.path)
        except EditPathError as exc:
            plan.failures.append(BlockFailure(block, f"path refused: {exc.reason}"))
            continue
        key = target.relative_to(base).as_posix()
        if key not in current:
            if target.is_dir():
                plan.failures.append(BlockFailure(block, "path refused: it is a directory"))
                continue
            try:
                current[key] = _read(target)
            except UnicodeDecodeError:
                plan.failures.append(BlockFailure(block, "path refused: not a UTF-8 text file"))
                continue
            except OSError as exc:
                reason = f"path refused: cannot read it ({exc.strerror})"
                plan.failures.append(BlockFailure(block, reason))
                continue
        text = current[key]
        # Blank-only SEARCH is "create", also for blocks not made by parse_edit_blocks.
        if not block.search.strip():
            if text:
                plan.failures.append(BlockFailure(block, "file exists"))
                continue
            new_text: str | None = block.replace
        elif text is None:
            plan.failures.append(BlockFailure(block, "missing file"))
            continue
        else:
            new_text, failure = _apply_block(text, block)
            if failure is not None:
                plan.failures.append(failure)
                continue
        assert new_text is not None
        current[key] = new_text
        plan.new_contents[key] = new_text
        plan.blocks_ok.append(block)
    return plan


def apply_plan(root: Path, plan: EditPlan) -> list[str]:
    """Write the planned files and return the relative paths that changed, sorted.

    Refuses (``EditError``, nothing written) when any block failed. Each file is first
    written to a temporary file beside it, and only when all of them are written are they
    renamed into place, so a full disk cannot leave half the edits applied.
    """
    if plan.failures:
        raise EditError(
            describe_failures(plan),
            output={
                "failures": [
                    {"block": f.block.index + 1, "path": f.block.path, "reason": f.reason}
                    for f in plan.failures
                ]
            },
        )
    staged: list[tuple[Path, Path]] = []
    changed: list[str] = []
    try:
        for rel, text in sorted(plan.new_contents.items()):
            target = confine_path(root, rel)
            data = text.encode("utf-8")
            if target.exists() and target.read_bytes() == data:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".agentsaga-edit-")
            tmp = Path(tmp_name)
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            # mkstemp makes 0600 files; keep an edited script executable, a new file 0644-ish.
            if target.exists():
                os.chmod(tmp, target.stat().st_mode & 0o7777)
            else:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            changed.append(rel)
    except OSError as exc:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise EditError(f"could not write the edits, nothing was changed: {exc}") from exc
    for tmp, target in staged:
        os.replace(tmp, target)
    return sorted(changed)


# --------------------------------------------------------------------------- feedback


def _name(block: EditBlock) -> str:
    return f"block {block.index + 1} ({block.path})"


def _explain(failure: BlockFailure) -> str:
    block, reason = failure.block, failure.reason
    head = f"Block {block.index + 1} ({block.path}, reply line {block.line}): {reason}."
    if reason == "missing file":
        return (
            f"{head} {block.path} does not exist. Check the path; to create a new file, "
            "leave the SEARCH section empty."
        )
    if reason == "file exists":
        return (
            f"{head} An empty SEARCH creates a file, but {block.path} already exists and "
            "is not empty. Put the exact lines to change in SEARCH."
        )
    if reason.startswith("ambiguous"):
        return (
            f"{head} The SEARCH lines occur more than once in {block.path}. Include more "
            "of the surrounding lines so that they match exactly one place."
        )
    if reason.startswith("path refused"):
        return f"{head} Only edit files inside the workspace, by their relative path."
    if reason == "no match" and failure.closest is not None:
        where = f"line {failure.closest_line}" if failure.closest_line else "the file"
        return (
            f"{head} The SEARCH lines are not in {block.path}. The closest existing lines, "
            f"from {where}, are:\n```\n{failure.closest}```\n"
            "The SEARCH section must copy the existing lines exactly, including comments "
            "and blank lines."
        )
    if reason == "no match":
        return (
            f"{head} The SEARCH lines are not in {block.path}, and nothing there is close. "
            "Read the file again and copy the lines exactly."
        )
    return head


def describe_failures(plan: EditPlan) -> str:
    """The message fed back to the model: every failed block and why, the closest existing
    lines for a block that did not match, and which blocks were fine."""
    total = len(plan.failures) + len(plan.blocks_ok)
    if not plan.failures:
        return f"All {total} edit blocks apply."
    parts = [
        f"{len(plan.failures)} of {total} edit blocks failed, so no file was changed.",
        *(_explain(f) for f in sorted(plan.failures, key=lambda f: f.block.index)),
    ]
    if plan.blocks_ok:
        fine = ", ".join(_name(b) for b in plan.blocks_ok)
        parts.append(
            f"These blocks matched but were NOT applied, because all blocks apply together "
            f"or not at all: {fine}. Send them again, unchanged, with the corrected blocks."
        )
    else:
        parts.append("No block applied. Send all the blocks again, corrected.")
    return "\n\n".join(parts)
