"""Keeping passwords out of everything nvmlab prints or logs.

Database and instrument URLs may carry a password (``postgresql+psycopg://user:pw@host``).
:func:`mask_passwords` replaces it with ``***`` in any text: messages, log lines, the
tracebacks the CLI shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

#: ``scheme://user:password@``; the password runs to the last ``@`` before white space or a quote.
PASSWORD_IN_URL = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<pw>[^\s'\"]*)@"
)


def mask_passwords(text: str, passwords: Iterable[str] = ()) -> str:
    """``text`` with the password of every ``scheme://user:password@`` replaced by ``***``,
    and every literal occurrence of ``passwords`` too (a driver may echo one outside URL
    syntax)."""
    masked = PASSWORD_IN_URL.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    for password in passwords:
        if password:
            masked = masked.replace(password, MASK)
    return masked
