"""Keeping passwords out of everything nvmlab prints or logs.

Database and instrument URLs may carry a password (``postgresql+psycopg://user:pw@host``),
and driver messages may echo a libpq connection string (``password=pw host=...``).
:func:`mask_passwords` replaces every copy of a password with ``***`` in any text:
messages, log lines, the tracebacks the CLI shows (which often hold the same secret
several times: in the call's arguments, the driver's message and a chained exception).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

MASK = "***"

#: ``scheme://user:password@``; the password runs to the last ``@`` before white space or a quote.
PASSWORD_IN_URL = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<pw>[^\s'\"]*)@"
)

#: ``password=pw`` (libpq connection strings, URL query strings, keyword arguments), also
#: ``passwd`` / ``pwd``, any case, the value bare or quoted.
PASSWORD_KEY_VALUE = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,)'\"]+)",
    re.IGNORECASE,
)


def mask_passwords(text: str, passwords: Iterable[str] = ()) -> str:
    """``text`` with every password replaced by ``***``: every ``scheme://user:password@``,
    every ``password=value``, and every literal occurrence of ``passwords`` (a driver may
    echo one outside any syntax), as given and percent-encoded as a URL carries it."""
    masked = PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    masked = PASSWORD_KEY_VALUE.sub(lambda m: f"{m.group('head')}{MASK}", masked)
    literals: set[str] = set()
    for password in passwords:
        if password:
            literals.update((password, urllib.parse.quote(password, safe=""),
                             urllib.parse.quote_plus(password)))  # fmt: skip
    # Longest first, so a password is never half-masked by a shorter one inside it.
    for literal in sorted(literals, key=len, reverse=True):
        masked = masked.replace(literal, MASK)
    return masked
