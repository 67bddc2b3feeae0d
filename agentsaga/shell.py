"""``${{ }}`` in a bash command string: a value never becomes part of the script's source.

Model output reaches ``run:`` strings (``printf %s "${{ steps.plan.output.text }}"``).
Quoting the value for bash means following bash's grammar exactly — heredocs, comments,
``${x:-...}``, nested substitutions — and every mistake of that lexer was a way to run
code. So a value is never pasted into the script: each ``${{ }}`` becomes a reference to
an environment variable that carries the value (``AGENTSAGA_V1``, ``AGENTSAGA_V2``...), and
bash expands a variable's text without ever parsing it as code. The lexer below only picks
the *spelling* of the reference for where it lands:

* bare: ``"${AGENTSAGA_V1}"`` (one word, no splitting or globbing);
* inside double quotes or an unquoted heredoc body: ``${AGENTSAGA_V1}``;
* inside single quotes (or ``$'...'``): the quote is closed and reopened around
  ``"${AGENTSAGA_V1}"``;
* inside a comment: the reference stays (bash ignores it).

A lexer mistake can now only produce wrong text, never execution. Two places are refused
when the pipeline loads, because bash would not give the value as text there: inside a
quoted heredoc (``<<'EOF'``: no expansion at all, the reference would stay literal) and
inside arithmetic (``$(( ))``, ``(( ))``, ``$[ ]``), which evaluates a variable's text as an
expression, and ``a[$(cmd)]`` in it runs ``cmd``. The same holds for ``[[ $x -eq 1 ]]``,
``let`` and ``declare -i``, which this lexer does not detect: the README says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentsaga import expressions

#: Where an expression landed in the script.
PLAIN, SINGLE, DOUBLE, ANSI = "plain", "single", "double", "ansi"
HEREDOC, QUOTED_HEREDOC, HEREDOC_WORD, ARITH, COMMENT = (
    "heredoc",
    "quoted-heredoc",
    "heredoc-word",
    "arith",
    "comment",
)

#: The rendered field that carries the values of a rendered ``run:`` string; the command
#: runs with them in its environment.
VALUES_FIELD = "run_values"
ENV_PREFIX = "AGENTSAGA_V"

PROBLEMS = {
    ARITH: (
        "an expression inside bash arithmetic ($(( )), (( )) or $[ ]) is evaluated as code "
        "by bash; compare values as strings, or check them in a step of your own"
    ),
    QUOTED_HEREDOC: (
        "bash expands nothing inside a quoted heredoc (<<'EOF'); unquote the terminator "
        '(<<EOF) so the value is expanded, or pass it through env: and print "$X"'
    ),
    HEREDOC_WORD: "an expression cannot be a heredoc's terminator; write the terminator out",
}
#: Kept for callers that name the old refusal.
SUBSTITUTION_PROBLEM = PROBLEMS[ARITH]

_SENTINEL = "\ue000"  # stands for an expression while lexing; private use, never in a script
_WORD_END = " \t\n;&|<>()"


@dataclass
class _Frame:
    state: str
    depth: int = 0  # open parentheses (a subshell's, or inside arithmetic)


class _Lexer:
    """Reads a script with its expressions replaced by a sentinel; records, for each
    sentinel, the context bash would be in there."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.state = PLAIN
        self.depth = 0
        self.stack: list[_Frame] = []  # what to return to after $( ), ` `, $(( ))
        self.heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, quoted, strip tabs)
        self.contexts: list[str] = []

    def at(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.text[j] if j < len(self.text) else ""

    def word_start(self) -> bool:
        return self.i == 0 or self.text[self.i - 1] in " \t\n;&|()"

    def lex(self) -> list[str]:
        while self.i < len(self.text):
            ch = self.at()
            if ch == _SENTINEL:
                self.contexts.append(self.state)
                self.i += 1
            elif self.state == COMMENT:
                if ch == "\n":
                    self.state = PLAIN
                    self.newline()
                else:
                    self.i += 1
            elif self.state == SINGLE:
                self.state = PLAIN if ch == "'" else SINGLE
                self.i += 1
            elif self.state == ANSI:
                self.i += 2 if ch == "\\" and self.at(1) != _SENTINEL else 1
                if ch == "'":
                    self.state = PLAIN
            else:
                self.step(ch)
        return self.contexts

    def step(self, ch: str) -> None:
        nxt = self.at(1)
        if ch == "\\" and nxt != _SENTINEL:
            self.i += 2
            return
        if ch == "$" and self.text.startswith("$((", self.i):
            self.push(ARITH, 3)
        elif ch == "$" and nxt == "[":
            self.push(ARITH, 2)
        elif ch == "$" and nxt == "(":
            self.push(PLAIN, 2)
        elif ch == "`":
            if self.stack and self.stack[-1].state.startswith("`"):
                self.pop(1)
            else:
                self.stack.append(_Frame("`" + self.state))
                self.state = PLAIN
                self.i += 1
        elif self.state == DOUBLE:
            self.state = PLAIN if ch == '"' else DOUBLE
            self.i += 1
        elif self.state == ARITH:
            self.arith(ch)
        elif ch == "(" and nxt == "(" and self.word_start():
            self.push(ARITH, 2)
        elif ch == "(":
            self.depth += 1  # a subshell: its ")" does not close a substitution
            self.i += 1
        elif ch == ")" and self.depth:
            self.depth -= 1
            self.i += 1
        elif ch == ")" and self.stack and not self.stack[-1].state.startswith("`"):
            self.pop(1)
        elif ch == "'":
            self.state = SINGLE
            self.i += 1
        elif ch == '"':
            self.state = DOUBLE
            self.i += 1
        elif ch == "$" and nxt == "'":
            self.state = ANSI
            self.i += 2
        elif ch == "#" and self.word_start():
            self.state = COMMENT
            self.i += 1
        elif (
            ch == "<"
            and self.text.startswith("<<", self.i)
            and not self.text.startswith("<<<", self.i)
        ):
            self.heredoc_word()
        elif ch == "\n":
            self.newline()
        else:
            self.i += 1

    def push(self, state: str, width: int) -> None:
        self.stack.append(_Frame(self.state, self.depth))
        self.state, self.depth = state, 0
        self.i += width

    def pop(self, width: int) -> None:
        frame = self.stack.pop()
        self.state, self.depth = frame.state.lstrip("`"), frame.depth
        self.i += width

    def arith(self, ch: str) -> None:
        if ch in "([":
            self.depth += 1
            self.i += 1
        elif ch in ")]" and self.depth:
            self.depth -= 1
            self.i += 1
        elif ch == "]" or (ch == ")" and self.at(1) == ")"):
            self.pop(1 if ch == "]" else 2)
        else:
            self.i += 1

    def heredoc_word(self) -> None:
        """``<<WORD`` / ``<<-WORD``: the body starts after this line ends."""
        self.i += 2
        strip = self.at() == "-"
        self.i += 1 if strip else 0
        while self.at() in (" ", "\t"):
            self.i += 1
        start, quote = self.i, ""
        while self.i < len(self.text):
            ch = self.at()
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch in _WORD_END:
                break
            if ch == _SENTINEL:
                self.contexts.append(HEREDOC_WORD)
            self.i += 1
        word = self.text[start : self.i]
        quoted = any(c in word for c in "'\"\\")
        delimiter = word.replace("'", "").replace('"', "").replace("\\", "")
        if word:
            self.heredocs.append((delimiter, quoted, strip))

    def newline(self) -> None:
        """A newline outside quotes: the bodies of the heredocs named on this line follow."""
        self.i += 1
        pending, self.heredocs = self.heredocs, []
        for delimiter, quoted, strip in pending:
            while self.i < len(self.text):
                end = self.text.find("\n", self.i)
                end = len(self.text) if end < 0 else end
                line = self.text[self.i : end]
                self.i = end + 1
                if (line.lstrip("\t") if strip else line) == delimiter:
                    break
                context = QUOTED_HEREDOC if quoted else HEREDOC
                self.contexts.extend([context] * line.count(_SENTINEL))


def _contexts(template: expressions.Template) -> list[str]:
    skeleton = "".join(p if isinstance(p, str) else _SENTINEL for p in template.parts)
    return _Lexer(skeleton).lex()


def problem(source: str) -> tuple[int, str] | None:
    """The offset of the first expression in ``source`` that bash would not take as text
    (and why), or None when every expression can be passed as a variable."""
    template = expressions.parse_template(source)
    exprs = [p for p in template.parts if not isinstance(p, str)]
    for expr, context in zip(exprs, _contexts(template), strict=True):
        if context in PROBLEMS:
            return expr.offset, PROBLEMS[context]
    return None


def unsafe_offset(source: str) -> int | None:
    found = problem(source)
    return found[0] if found else None


def _reference(name: str, context: str) -> str:
    if context in (DOUBLE, HEREDOC, COMMENT):
        return "${" + name + "}"
    if context == SINGLE:
        return "'\"${" + name + "}\"'"
    if context == ANSI:
        return "'\"${" + name + "}\"$'"
    return '"${' + name + '}"'


def render_bash(source: str, namespace: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A bash command string with each expression replaced by a variable reference, and
    the variables' values (for the command's environment)."""
    if not expressions.has_expressions(source):
        return source, {}
    template = expressions.parse_template(source)
    contexts = iter(_contexts(template))
    out: list[str] = []
    values: dict[str, str] = {}
    names: dict[str, str] = {}  # value -> variable, so a repeated value is passed once
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        context = next(contexts)
        if context in PROBLEMS:
            raise expressions_error(source)
        text = expressions.to_text(expressions.evaluate(part, namespace))
        name = names.get(text)
        if name is None:
            name = names[text] = f"{ENV_PREFIX}{len(names) + 1}"
            values[name] = text
        out.append(_reference(name, context))
    return "".join(out), values


def expressions_error(source: str) -> Exception:
    from agentsaga.errors import ExpressionError

    offset, why = problem(source) or (0, SUBSTITUTION_PROBLEM)
    return ExpressionError(source, offset, why)
