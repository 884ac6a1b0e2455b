"""Lexer for the Lua subset run by the emulated TSP instruments (see :mod:`nvmlab.mocks.firmware.tsp`).

Turns chunk text into :class:`Token` objects: names, keywords, numbers (decimal with
fraction and exponent, ``0x`` hexadecimal), strings (``'..'``, ``".."`` with the Lua
escapes, long brackets ``[[..]]`` / ``[==[..]==]``), operators and punctuation. Comments
(``-- ...`` and ``--[[ ... ]]``) and whitespace are skipped. Errors raise
:class:`LuaSyntaxError` with the line and the Lua-style ``near `...'`` text.
"""

from __future__ import annotations

from dataclasses import dataclass

KEYWORDS = frozenset(
    (
        *("and", "break", "do", "else", "elseif", "end", "false", "for", "function", "if"),
        *("in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until"),
        "while",
    )
)

#: Multi-character operators, longest first.
_OPERATORS_3 = ("...",)
_OPERATORS_2 = ("==", "~=", "<=", ">=", "..")
_OPERATORS_1 = frozenset("+-*/%^#<>=(){}[];:,.")

_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "\n": "\n",
    "[": "[",
    "]": "]",
}


class LuaSyntaxError(Exception):
    """A chunk that does not lex or parse; ``line`` is 1-based."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(slots=True)
class Token:
    """One token: ``kind`` is ``"name"``, ``"number"``, ``"string"``, ``"eof"``, or the
    keyword / operator text itself; ``value`` holds the name, number (float) or string."""

    kind: str
    value: object
    line: int

    def text(self) -> str:
        """The token as Lua prints it in ``near `...'`` messages."""
        if self.kind == "eof":
            return "<eof>"
        if self.kind == "string":
            return str(self.value)
        if self.kind == "number":
            v = float(self.value)  # type: ignore[arg-type]
            return f"{v:.14g}"
        if self.kind == "name":
            return str(self.value)
        return self.kind


def _is_name_start(c: str) -> bool:
    return c.isascii() and (c.isalpha() or c == "_")


def _is_name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _long_bracket_level(src: str, i: int) -> int:
    """If ``src[i]`` opens a long bracket ``[==[``, its level (count of ``=``), else -1."""
    if src[i] != "[":
        return -1
    j = i + 1
    while j < len(src) and src[j] == "=":
        j += 1
    if j < len(src) and src[j] == "[":
        return j - i - 1
    return -1


def _read_long(src: str, i: int, level: int, line: int, what: str) -> tuple[str, int, int]:
    """Read a long string/comment whose opening bracket starts at ``i``.

    Returns (content, index after the closing bracket, new line number).
    """
    start_line = line
    j = i + level + 2
    if src.startswith("\r\n", j):
        j += 2
        line += 1
    elif j < len(src) and src[j] == "\n":
        j += 1
        line += 1
    close = "]" + "=" * level + "]"
    end = src.find(close, j)
    if end < 0:
        raise LuaSyntaxError(
            f"unfinished long {what} (starting at line {start_line}) near `<eof>'", line
        )
    content = src[j:end]
    line += content.count("\n")
    return content, end + len(close), line


def tokenize(src: str) -> list[Token]:
    """Split ``src`` into tokens, ending with one ``eof`` token."""
    tokens: list[Token] = []
    i, n, line = 0, len(src), 1
    append = tokens.append
    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if c == "-" and src.startswith("--", i):
            i += 2
            if i < n and src[i] == "[":
                level = _long_bracket_level(src, i)
                if level >= 0:
                    _, i, line = _read_long(src, i, level, line, "comment")
                    continue
            while i < n and src[i] != "\n":
                i += 1
            continue
        if _is_name_start(c):
            j = i + 1
            while j < n and _is_name_char(src[j]):
                j += 1
            word = src[i:j]
            if word in KEYWORDS:
                append(Token(word, word, line))
            else:
                append(Token("name", word, line))
            i = j
            continue
        if c.isdigit() or (c == "." and i + 1 < n and src[i + 1].isdigit()):
            i = _read_number(src, i, line, tokens)
            continue
        if c in "\"'":
            i, line = _read_string(src, i, line, tokens)
            continue
        if c == "[":
            level = _long_bracket_level(src, i)
            if level >= 0:
                start_line = line
                content, i, line = _read_long(src, i, level, line, "string")
                append(Token("string", content, start_line))
                continue
        if src.startswith("...", i):
            append(Token("...", "...", line))
            i += 3
            continue
        two = src[i : i + 2]
        if two in _OPERATORS_2:
            append(Token(two, two, line))
            i += 2
            continue
        if c in _OPERATORS_1:
            append(Token(c, c, line))
            i += 1
            continue
        shown = c if c.isprintable() else f"char({ord(c)})"
        raise LuaSyntaxError(f"unexpected symbol near `{shown}'", line)
    append(Token("eof", None, line))
    return tokens


def _read_number(src: str, i: int, line: int, tokens: list[Token]) -> int:
    n = len(src)
    j = i
    if src.startswith(("0x", "0X"), i):
        j = i + 2
        while j < n and (src[j] in "0123456789abcdefABCDEF"):
            j += 1
        text = src[i:j]
        if j < n and _is_name_char(src[j]) or j == i + 2:
            k = j
            while k < n and _is_name_char(src[k]):
                k += 1
            raise LuaSyntaxError(f"malformed number near `{src[i:k]}'", line)
        tokens.append(Token("number", float(int(text, 16)), line))
        return j
    while j < n and src[j].isdigit():
        j += 1
    if j < n and src[j] == "." and not src.startswith("..", j):
        j += 1
        while j < n and src[j].isdigit():
            j += 1
    if j < n and src[j] in "eE":
        k = j + 1
        if k < n and src[k] in "+-":
            k += 1
        if k < n and src[k].isdigit():
            while k < n and src[k].isdigit():
                k += 1
            j = k
        else:
            raise LuaSyntaxError(f"malformed number near `{src[i:k]}'", line)
    if (
        j < n
        and (_is_name_char(src[j]) or src[j] == ".")
        and not (src[j] == "." and src.startswith("..", j))
    ):
        k = j
        while k < n and (_is_name_char(src[k]) or src[k] == "."):
            k += 1
        raise LuaSyntaxError(f"malformed number near `{src[i:k]}'", line)
    tokens.append(Token("number", float(src[i:j]), line))
    return j


def _read_string(src: str, i: int, line: int, tokens: list[Token]) -> tuple[int, int]:
    quote = src[i]
    n = len(src)
    j = i + 1
    out: list[str] = []
    start_line = line
    while True:
        if j >= n or src[j] == "\n":
            raise LuaSyntaxError(f"unfinished string near `{src[i:j]}'", line)
        c = src[j]
        if c == quote:
            j += 1
            break
        if c == "\\":
            j += 1
            if j >= n:
                raise LuaSyntaxError(f"unfinished string near `{src[i:j]}'", line)
            e = src[j]
            if e.isdigit():
                k = j
                while k < n and k < j + 3 and src[k].isdigit():
                    k += 1
                code = int(src[j:k])
                if code > 255:
                    raise LuaSyntaxError(f"escape sequence too large near `{src[i:k]}'", line)
                out.append(chr(code))
                j = k
                continue
            if e == "x":
                hexdigits = src[j + 1 : j + 3]
                if len(hexdigits) == 2 and all(h in "0123456789abcdefABCDEF" for h in hexdigits):
                    out.append(chr(int(hexdigits, 16)))
                    j += 3
                    continue
                raise LuaSyntaxError(f"hexadecimal digit expected near `{src[i : j + 3]}'", line)
            if e == "\n":
                line += 1
            out.append(_ESCAPES.get(e, e))
            j += 1
            continue
        out.append(c)
        j += 1
    tokens.append(Token("string", "".join(out), start_line))
    return j, line
