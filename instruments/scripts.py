"""Instrument scripts (TSP, Keithley 2600B) whose every amplitude is checked before upload.

A :class:`ScriptTemplate` is Lua text with named placeholders (``$v_write``, ``${count}``,
:class:`string.Template` syntax) and a declaration of what each placeholder is: a read,
write or forming voltage, a pulse width, a current, a count, a duration. The role
(:meth:`~nvmlab.instruments.sourcemeters.Keithley2636BSourceMeter.run_script`) checks every
value against the station's :class:`~nvmlab.instruments.safety.SafetyLimits` by its
declared kind, *then* substitutes it: the script text is never parsed for amplitudes, and
a template that has a placeholder it does not declare (or declares one it lacks) is
refused. A refused value raises before anything is sent.

The run time is bounded on the instrument itself: :func:`render` wraps the template in a
watchdog. The template's body runs inside ``pcall``; its ``delay`` is replaced by one that
never sleeps past the deadline, and ``nvmlab_watchdog()`` (callable from the body's loops)
stops it once the deadline has passed. Stopped (or failing), the wrapper sets both
channels to 0 V and switches their outputs off before it reports, so a host that died
while the script ran cannot leave the instrument pulsing. Every run ends with one line
``nvmlab_end ok`` or ``nvmlab_end stopped <reason>``; the lines the body printed come
before it.

Units: V, A, s.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nvmlab.drivers.keithley2636b import lua_literal
from nvmlab.errors import InstrumentError, SafetyLimitError
from nvmlab.instruments.safety import SafetyLimits

__all__ = [
    "END_MARKER",
    "MAX_COUNT",
    "MAX_RUN_S",
    "ParameterKind",
    "ScriptResult",
    "ScriptStopped",
    "ScriptTemplate",
    "render",
]

#: What a placeholder holds, and so which limit checks it.
ParameterKind = Literal[
    "read_v", "write_v", "forming_v", "width_s", "current_a", "count", "duration_s"
]
PARAMETER_KINDS: tuple[str, ...] = (
    "read_v",
    "write_v",
    "forming_v",
    "width_s",
    "current_a",
    "count",
    "duration_s",
)
#: Longest run-time bound a script may be given (s).
MAX_RUN_S = 3600.0
#: Largest ``count`` parameter.
MAX_COUNT = 100_000
#: First word of the line that ends every run.
END_MARKER = "nvmlab_end"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: The watchdog around a template's body; ``$``-free apart from the three placeholders.
_WRAPPER = """\
local nvmlab_deadline_s = {deadline}
local nvmlab_sleep = delay
local function nvmlab_off()
  smua.source.levelv = 0
  smub.source.levelv = 0
  smua.source.output = smua.OUTPUT_OFF
  smub.source.output = smub.OUTPUT_OFF
end
local function nvmlab_watchdog()
  if timer.measure.t() >= nvmlab_deadline_s then
    error("nvmlab watchdog: run-time bound of {deadline} s reached")
  end
end
local function delay(seconds)
  local left = nvmlab_deadline_s - timer.measure.t()
  if seconds >= left then
    if left > 0 then
      nvmlab_sleep(left)
    end
    nvmlab_watchdog()
    error("nvmlab watchdog: run-time bound of {deadline} s reached")
  end
  nvmlab_sleep(seconds)
end
local function nvmlab_body()
{body}
end
timer.reset()
local nvmlab_ok, nvmlab_error = pcall(nvmlab_body)
if nvmlab_ok then
  smua.source.levelv = 0
  smub.source.levelv = 0
  print("{end} ok")
else
  nvmlab_off()
  print("{end} stopped " .. tostring(nvmlab_error))
end"""


class ScriptStopped(InstrumentError):
    """A script was stopped on the instrument (watchdog or error); outputs are off.

    ``lines`` holds what it printed before it stopped."""

    def __init__(self, message: str, lines: Sequence[str]) -> None:
        super().__init__(message)
        self.lines = list(lines)


@dataclass(frozen=True)
class ScriptResult:
    """The lines a script printed (its end line excluded) and its run-time bound (s)."""

    lines: list[str]
    max_run_s: float

    def numbers(self) -> list[float]:
        """Every printed value as a float (lines split on commas, tabs and spaces)."""
        return [float(v) for line in self.lines for v in re.split(r"[\s,]+", line.strip()) if v]


@dataclass(frozen=True)
class ScriptTemplate:
    """Lua ``body`` with ``$name`` placeholders, each declared in ``parameters`` with its
    :data:`ParameterKind`. ``name`` is the script's name on the instrument (a Lua
    identifier). The body may call ``delay(s)`` and ``nvmlab_watchdog()``; it runs as a
    function body, so it may use ``local`` and ``return``."""

    name: str
    body: str
    parameters: Mapping[str, ParameterKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _IDENTIFIER.match(self.name):
            raise ValueError(f"script name {self.name!r}: allowed a Lua identifier")
        for key, kind in self.parameters.items():
            if not _IDENTIFIER.match(key):
                raise ValueError(f"script {self.name}: parameter name {key!r} is not an identifier")
            if kind not in PARAMETER_KINDS:
                raise ValueError(
                    f"script {self.name}: parameter {key} has kind {kind!r}; allowed "
                    f"{', '.join(PARAMETER_KINDS)}"
                )
        template = string.Template(self.body)
        if not template.is_valid():
            raise ValueError(f"script {self.name}: a '$' is not a valid placeholder ($$ for $)")
        used = set(template.get_identifiers())
        undeclared = sorted(used - set(self.parameters))
        unused = sorted(set(self.parameters) - used)
        if undeclared or unused:
            raise ValueError(
                f"script {self.name}: placeholders {undeclared} are not declared, declared "
                f"parameters {unused} are not used; every value must be checked by its kind"
            )


def _numbers(what: str, value: Any) -> list[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{what}: an empty list")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise SafetyLimitError(f"{what} {v!r} is not a finite number; nothing was sent")
    return [float(v) for v in values]


def check_parameter(
    template: ScriptTemplate, key: str, value: Any, limits: SafetyLimits, max_run_s: float
) -> Any:
    """``value`` of parameter ``key`` checked by its declared kind against ``limits``.

    Voltages, widths and currents may be a number or a list of numbers (each checked)."""
    kind = template.parameters[key]
    what = f"script {template.name} parameter {key}"
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
            raise ValueError(f"{what} {value!r}: allowed an integer 1..{MAX_COUNT}")
        return value
    numbers = _numbers(what, value)
    for v in numbers:
        if kind in ("read_v", "write_v", "forming_v"):
            purpose = kind.removesuffix("_v")
            limits.check_voltage(v, purpose, what=what)  # type: ignore[arg-type]
        elif kind == "width_s":
            limits.check_pulse_width(v, what=what)
        elif kind == "current_a":
            limits.check_current_limit(v, what=what)
        elif not 0 <= v <= max_run_s:
            raise ValueError(f"{what} {v:g} s: allowed 0..{max_run_s:g} s (the run-time bound)")
    return numbers if isinstance(value, (list, tuple)) else numbers[0]


def render(
    template: ScriptTemplate,
    values: Mapping[str, Any],
    limits: SafetyLimits,
    *,
    max_run_s: float,
) -> str:
    """The script text to upload: every value checked, substituted, the body wrapped in
    the watchdog of run-time bound ``max_run_s`` (s, 0 < bound <= :data:`MAX_RUN_S`).
    Raises (SafetyLimitError, ValueError) before anything could be sent."""
    if not (isinstance(max_run_s, (int, float)) and 0 < max_run_s <= MAX_RUN_S):
        raise ValueError(
            f"script {template.name}: run-time bound {max_run_s!r} s; allowed (0, {MAX_RUN_S:g}] s"
        )
    missing = sorted(set(template.parameters) - set(values))
    extra = sorted(set(values) - set(template.parameters))
    if missing or extra:
        raise ValueError(
            f"script {template.name}: parameters {missing} missing, {extra} not declared"
        )
    literals = {
        key: lua_literal(check_parameter(template, key, value, limits, float(max_run_s)))
        for key, value in values.items()
    }
    body = string.Template(template.body).substitute(literals)
    indented = "\n".join("  " + line if line.strip() else "" for line in body.splitlines())
    return _WRAPPER.format(deadline=f"{float(max_run_s):.10g}", body=indented, end=END_MARKER)
