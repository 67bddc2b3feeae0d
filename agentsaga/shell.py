"""``${{ }}`` in a bash command string, quoted for the quoting context it lands in.

Users quote out of habit — ``printf %s "${{ steps.plan.output.text }}"`` — and a value
single-quoted by ``shlex.quote`` inside their double quotes is no quoting at all:
``"'$(cmd)'"`` runs ``cmd``. So the renderer follows bash's quoting as it reads the
literal text, and for each expression it closes the user's quote, inserts the
``shlex.quote``d value, and reopens the quote: ``"abc${{ x }}"`` becomes
``"abc"'value'""``, one word holding exactly the value.

Inside a command substitution (``$( )``, backticks, ``$(( ))``) bash starts a new
command whose quoting we would have to follow too; an expression there is refused when the
pipeline loads, with the advice to pass the value through ``env:``.
"""

from __future__ import annotations

import shlex
from typing import Any

from agentsaga import expressions

PLAIN, SINGLE, DOUBLE, ANSI = "plain", "single", "double", "ansi"

SUBSTITUTION_PROBLEM = (
    "an expression inside $( ), backticks or $(( )) of a bash command cannot be quoted "
    'safely; pass the value through env: (e.g. env: {X: ...} and use "$X")'
)


class _Lexer:
    """Bash's quote state across the literal parts of a template."""

    def __init__(self) -> None:
        self.state = PLAIN
        self.stack: list[str] = []  # states to return to after $( ... ) or ` ... `

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            ch = text[i]
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if self.state == SINGLE:
                if ch == "'":
                    self.state = PLAIN
            elif self.state == ANSI:
                if ch == "\\":
                    i += 1
                elif ch == "'":
                    self.state = PLAIN
            elif ch == "\\":
                i += 1  # the next character is escaped (plain and double alike)
            elif ch == "$" and nxt == "(":
                self.stack.append(self.state)
                self.state = PLAIN
                i += 1
            elif ch == "`":
                if self.stack and self.stack[-1].startswith("`"):
                    self.state = self.stack.pop()[1:]
                else:
                    self.stack.append("`" + self.state)
                    self.state = PLAIN
            elif self.state == DOUBLE:
                if ch == '"':
                    self.state = PLAIN
            elif ch == ")" and self.stack and not self.stack[-1].startswith("`"):
                self.state = self.stack.pop()
            elif ch == "'":
                self.state = SINGLE
            elif ch == '"':
                self.state = DOUBLE
            elif ch == "$" and nxt == "'":
                self.state = ANSI
                i += 1
            i += 1

    @property
    def in_substitution(self) -> bool:
        return bool(self.stack)


def _quoted(value: Any, state: str) -> str:
    word = shlex.quote(expressions.to_text(value))
    if state == DOUBLE:
        return f'"{word}"'
    if state in (SINGLE, ANSI):
        return f"'{word}" + ("$'" if state == ANSI else "'")
    return word


def unsafe_offset(source: str) -> int | None:
    """The offset of the first expression in ``source`` that sits inside a command
    substitution (which we refuse), or None when every expression can be quoted."""
    template = expressions.parse_template(source)
    lexer = _Lexer()
    position = 0
    for part in template.parts:
        if isinstance(part, str):
            lexer.feed(part)
            position += len(part)
            continue
        if lexer.in_substitution:
            refs = expressions.expression_references(part)
            return refs[0].offset if refs else position
    return None


def render_bash(source: str, namespace: dict[str, Any]) -> str:
    """Render a bash command string; every value arrives as exactly its text."""
    if not expressions.has_expressions(source):
        return source
    template = expressions.parse_template(source)
    lexer = _Lexer()
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            lexer.feed(part)
            out.append(part)
            continue
        if lexer.in_substitution:
            raise expressions_error(source)
        out.append(_quoted(expressions.evaluate(part, namespace), lexer.state))
    return "".join(out)


def expressions_error(source: str) -> Exception:
    from agentsaga.errors import ExpressionError

    return ExpressionError(source, unsafe_offset(source) or 0, SUBSTITUTION_PROBLEM)
