"""What the model needs to know about failing tests: per test, its name, where it failed,
the failing line and the message, within a token budget.

The last 1,500 characters of a test run's output rarely hold that: with ``-rA``, ``-v`` or
a warnings summary the closing lines are passes and warnings, and the assertion scrolled
away. So, most precise source first:

1. JUnit XML, when the runner wrote it (the test step asks pytest for it through
   ``PYTEST_ADDOPTS``; any runner that writes JUnit to the same path counts): one
   ``<testcase>`` per test, its ``<failure>``/``<error>`` message and traceback.
2. The runner's own summary: pytest's failure sections (``___ test_x ___`` with the ``>``
   line, the ``E`` lines and ``file:line: Error``) joined with its short summary
   (``FAILED path::test - message``); unittest's ``FAIL:``/``ERROR:`` blocks.
3. The raw tail of the output, only when neither names a failing test.

:func:`render` keeps whole failures while they fit the budget and says how many it left
out. :func:`traceback_paths` lists the files the output's tracebacks point at, for the read
step's ranking and for noticing tests that imported the user's checkout instead of the
run's worktree.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Tokens of failure context a test step's error carries to the model by default.
CONTEXT_TOKENS = 1500
#: One failure's message and failing lines are cut to this many characters each.
_FIELD_CHARS = 1200
# A message's excess lines are of diminishing use; the first ones say what broke.
_MESSAGE_LINES = 25


@dataclass
class Failure:
    name: str
    location: str | None = None  # "path:line"
    assertion: str | None = None  # the failing source line(s), pytest's ">" lines
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        head = f"FAILED {self.name}" + (f" at {self.location}" if self.location else "")
        parts = [head]
        if self.assertion:
            parts.append(_indent(_cut(self.assertion)))
        if self.message:
            parts.append(_indent(_cut(self.message)))
        return "\n".join(parts)


def _cut(text: str) -> str:
    lines = text.strip("\n").splitlines()
    if len(lines) > _MESSAGE_LINES:
        lines = lines[:_MESSAGE_LINES] + [f"... ({len(lines) - _MESSAGE_LINES} more lines)"]
    out = "\n".join(lines)
    return out if len(out) <= _FIELD_CHARS else out[:_FIELD_CHARS] + " ..."


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# ----------------------------------------------------------------------------- JUnit XML


def from_junit(path: Path) -> list[Failure] | None:
    """Failing test cases in a JUnit XML file; None when there is no readable file."""
    import xml.etree.ElementTree as ET

    try:
        if not path.is_file() or path.stat().st_size > 50_000_000:
            return None
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    failures = []
    for case in root.iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is None:
            continue
        classname, name = case.get("classname") or "", case.get("name") or "?"
        file_attr = case.get("file")
        test_id = _junit_id(classname, name, file_attr)
        body = bad.text or ""
        section = _parse_section(test_id, body.splitlines())
        # The traceback's own error lines say more than the attribute, which for a
        # collection error is only "collection failure".
        message = section.message or bad.get("message")
        location = section.location
        if location is None and file_attr and case.get("line"):
            # xunit1 records the line of the test's definition, counted from 0.
            location = f"{file_attr}:{int(case.get('line') or 0) + 1}"
        failures.append(Failure(test_id, location, section.assertion, message))
    return failures


def _junit_id(classname: str, name: str, file_attr: str | None) -> str:
    """``tests.test_x.TestY`` + ``test_z`` as pytest spells it: ``tests/test_x.py::TestY::test_z``
    (unknown split between module and class: keep the dotted form)."""
    if file_attr:
        module = file_attr.removesuffix(".py").replace("/", ".")
        rest = classname.removeprefix(module).strip(".")
        return "::".join([file_attr, *([rest.replace(".", "::")] if rest else []), name])
    return f"{classname}::{name}" if classname else name


# ----------------------------------------------------------------------------- pytest

_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$")
_BLOCK = re.compile(r"^={3,} (FAILURES|ERRORS) ={3,}$")
_END = re.compile(r"^={3,}")
_LOCATION = re.compile(r"^(\S+?\.\w+):(\d+): (?:in \S+|[A-Za-z_][\w.]*(?:: .*)?)$")
_SHORT = re.compile(r"^(?:FAILED|ERROR) (\S+)(?: - (.*))?$", re.MULTILINE)


def from_pytest(text: str) -> list[Failure]:
    """Failures from pytest's FAILURES/ERRORS sections, named and completed by its short
    test summary (``-rf``, the default, or ``-rA``)."""
    lines = text.splitlines()
    sections: list[tuple[str, list[str]]] = []
    in_block = False
    for line in lines:
        if _BLOCK.match(line):
            in_block = True
            continue
        if in_block and (m := _SECTION.match(line)):
            sections.append((m.group(1), []))
            continue
        if in_block and _END.match(line):
            in_block = False
            continue
        if in_block and sections:
            sections[-1][1].append(line)
    short = {test_id: (msg or None) for test_id, msg in _SHORT.findall(text) if "::" in test_id}
    failures: list[Failure] = []
    used: set[str] = set()
    for header, body in sections:
        test_id = _match_id(header, short) or header
        used.add(test_id)
        failure = _parse_section(test_id, body)
        failure.message = failure.message or short.get(test_id)
        failures.append(failure)
    for test_id, message in short.items():
        if test_id not in used:
            failures.append(Failure(test_id, None, None, message))
    return failures


def _match_id(header: str, short: dict[str, str | None]) -> str | None:
    # "TestX.test_y[1]" heads the section of "tests/test_x.py::TestX::test_y[1]";
    # "ERROR at setup of test_y" that of the error in test_y's fixture.
    name = re.sub(r"^ERROR (?:at \w+ of |collecting )", "", header)
    tail = "::" + name.replace(".", "::") if "[" not in name else "::" + name
    for test_id in short:
        if test_id.endswith(tail) or test_id == name:
            return test_id
    return None


def _parse_section(test_id: str, body: list[str]) -> Failure:
    source = [line[1:].strip() for line in body if line.startswith(">")]
    errors = [line[1:].strip() for line in body if line.startswith("E ") or line == "E"]
    locations = [m for line in body if (m := _LOCATION.match(line.strip()))]
    location = f"{locations[-1].group(1)}:{locations[-1].group(2)}" if locations else None
    if not errors:
        # unittest-style traceback in a JUnit body: its last "Error: message" line.
        tail = [line for line in body if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line)]
        errors = tail[-1:]
        frames = re.findall(r'File "([^"]+)", line (\d+)', "\n".join(body))
        if frames and location is None:
            location = f"{frames[-1][0]}:{frames[-1][1]}"
    return Failure(
        test_id,
        location,
        "\n".join(source[-3:]) or None,
        "\n".join(errors) or None,
    )


# ----------------------------------------------------------------------------- unittest

_UNITTEST_HEAD = re.compile(r"^(FAIL|ERROR): (\S+) \(([^)]+)\)", re.MULTILINE)


def from_unittest(text: str) -> list[Failure]:
    heads = list(_UNITTEST_HEAD.finditer(text))
    failures = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        # The block: a line of dashes, the traceback, then a blank line and dashes (or the
        # next block's line of "=").
        lines = text[head.end() : end].splitlines()[1:]
        body: list[str] = []
        for line in lines:
            if re.match(r"^(-{20,}|={20,})$", line):
                if body:
                    break
                continue
            body.append(line)
        test, where = head.group(2), head.group(3)
        name = where if where.endswith("." + test) else f"{where}.{test}"
        failures.append(_parse_section(name, body))
    return failures


# ----------------------------------------------------------------------------- together


def extract(text: str, junit: Path | None = None) -> tuple[list[Failure], str]:
    """The failing tests and where they were read from (``junit``, ``pytest``,
    ``unittest``, or ``none``)."""
    if junit is not None:
        found = from_junit(junit)
        if found:
            _pytest_names(found, text)
            return found, "junit"
    found = from_pytest(text)
    if found:
        return found, "pytest"
    found = from_unittest(text)
    if found:
        return found, "unittest"
    return [], "none"


def _pytest_names(failures: list[Failure], text: str) -> None:
    """JUnit spells a test ``tests.test_x.TestY::test_z``; name it as pytest's own
    summary does (``tests/test_x.py::TestY::test_z``), which the user can paste."""

    def norm(test_id: str) -> str:
        return test_id.replace(".py::", "::").replace("/", ".").replace("::", ".")

    spelled = {norm(test_id): test_id for test_id, _ in _SHORT.findall(text)}
    for failure in failures:
        failure.name = spelled.get(norm(failure.name), failure.name)


def render(failures: list[Failure], tail: str, budget_tokens: int = CONTEXT_TOKENS) -> str:
    """Whole failures while they fit ``budget_tokens``, then how many were left out; the
    output's tail (cut to the budget) when no failing test could be named."""
    from agentsaga import tokens

    if not failures:
        chars = budget_tokens * 3
        cut = tail.strip()[-chars:]
        return f"(no failing test could be named; the output's last lines)\n{cut}" if cut else ""
    blocks: list[str] = []
    used = 0
    for i, failure in enumerate(failures):
        block = failure.render()
        cost = tokens.count(block)
        if blocks and used + cost > budget_tokens:
            blocks.append(f"(+{len(failures) - i} more failing tests not shown)")
            break
        if not blocks and cost > budget_tokens:
            block = block[: budget_tokens * 3] + " ..."
            cost = tokens.count(block)
        blocks.append(block)
        used += cost
    return "\n".join(blocks)


_PY_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_PYTEST_LOC = re.compile(r"^(\S+?\.py):(\d+):", re.MULTILINE)
_TEST_ID = re.compile(r"^(?:FAILED|ERROR) ([^\s:]+\.py)(?:::|\s)", re.MULTILINE)


def traceback_paths(text: str) -> list[str]:
    """Files the output's tracebacks and test ids point at, innermost frames last, once each."""
    found = [m.group(1) for m in _PY_FRAME.finditer(text)]
    found += [m.group(1) for m in _PYTEST_LOC.finditer(text)]
    found += [m.group(1) for m in _TEST_ID.finditer(text)]
    return list(dict.fromkeys(found))
