"""Is the instrument that answered the one the station file names?

A station opens each instrument and asks who it is (the driver's identity query); the
reply must fit the model the file names, otherwise the station refuses to open. This
catches an entry pointing at another instrument's port (the SMU entry on the probe
board's port) and a driver of the wrong model (``keithley2636b`` on a 2400).

What each model's identity must look like:

* SMUs: the ``*IDN?`` reply contains every ``identity`` substring of the registry
  (:data:`nvmlab.models.MODELS`, case-insensitive).
* ``probe_board``: ``*IDN?`` answers ``NVMLAB,PROBE-BOARD,<serial>,<firmware>``
  (``docs/probe-board.md``).
* ``espec``: the driver's identity is ``ESPEC <TYPE? reply> ROM <ROM? reply>``; ``TYPE?``
  answers ``<sensor>,<controller>,<max temperature>`` (the last field a number), and
  neither reply is an error (``NA:...`` from an Espec, ``ERR ...`` from the probe board).
* ``watlow_f4``: holding register 0 holds the model number, 5270 for an F4; the driver's
  identity reads ``Watlow F4 model <register 0> ...``.

A wrong device usually does not answer an identity query the way the expected one does:
it times out, answers with an error, or with garbage. The station reports that too, naming
the model it expected (see :meth:`nvmlab.instruments.station.Station.check`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from nvmlab.models import MODELS, canonical_model

__all__ = ["identity_problem", "expected_identity", "with_article"]

_NUMBER = re.compile(r"^[-+]?\d+(\.\d*)?$")
_ESPEC = re.compile(r"^ESPEC (?P<type>.*) ROM (?P<rom>.*)$", re.DOTALL)
_ERROR_REPLY = re.compile(r"^\s*(NA:|ERR\b|ERROR\b|-?\d+,\")", re.IGNORECASE)


def _espec_ok(identity: str) -> bool:
    match = _ESPEC.match(identity.strip())
    if match is None:
        return False
    kind, rom = match["type"].strip(), match["rom"].strip()
    if not kind or not rom or _ERROR_REPLY.match(kind) or _ERROR_REPLY.match(rom):
        return False
    fields = [f.strip() for f in kind.split(",")]
    return len(fields) >= 2 and all(fields) and bool(_NUMBER.match(fields[-1]))


def _watlow_ok(identity: str) -> bool:
    return re.match(r"^Watlow F4 model 5270\b", identity.strip()) is not None


def _probe_board_ok(identity: str) -> bool:
    return re.match(r"^NVMLAB,PROBE-BOARD,", identity.strip(), re.IGNORECASE) is not None


#: Models whose registry entry has no ``identity`` substrings: what their identity must be.
_RULES: dict[str, tuple[Callable[[str], bool], str]] = {
    "espec": (_espec_ok, "'ESPEC <sensor>,<controller>,<max C> ROM <version>'"),
    "watlow_f4": (_watlow_ok, "'Watlow F4 model 5270 ...' (holding register 0 = 5270)"),
    "probe_board": (_probe_board_ok, "'NVMLAB,PROBE-BOARD,<serial>,<firmware>'"),
}


def expected_identity(model: str) -> str:
    """What ``model``'s identity must look like, for messages."""
    name = canonical_model(model)
    substrings = MODELS[name].identity
    if substrings:
        return "an identity containing " + " and ".join(repr(s) for s in substrings)
    if name in _RULES:
        return _RULES[name][1]
    return "any identity"


def identity_problem(model: str, identity: str) -> str | None:
    """Why ``identity`` (what answered) is not an instrument of ``model``; None when it is."""
    name = canonical_model(model)
    text = str(identity)
    substrings = MODELS[name].identity
    if substrings:
        lowered = text.lower()
        missing = [s for s in substrings if s.lower() not in lowered]
        if not missing:
            return None
        return f"its identity lacks {', '.join(repr(s) for s in missing)}"
    rule = _RULES.get(name)
    if rule is None or rule[0](text):
        return None
    return f"expected {rule[1]}"


def with_article(title: str) -> str:
    """``"a Keithley 2400"``, ``"an Espec chamber"``."""
    return f"{'an' if title[:1].lower() in 'aeiou' else 'a'} {title}"
