"""Write-verify of one memristor on the instrument: a TSP loop on a Keithley 2636B.

The per-device tuners of :mod:`nvmlab.tuning.writeverify` make at least one bus round trip
per pulse and per read (a board ``PULSE``, a routing ``SEL``, a reading). On a 2636B the
whole loop of one device can run on the instrument instead: :func:`tune_on_instrument`
routes the device once with the board and then runs one TSP script that pulses, reads and
decides until the device is within the tolerance (or the pulse budget is spent), and
returns every pulse amplitude, every read and the final read in one printed line.

Routing (``docs/probe-board.md``, *The tracking read*): the board's ``track-b`` read
routing (``READ:SCHEME TRACKB``, ``SEL r,c``): the selected row on SMU A, the selected
column grounded, every other row and column on the buffer following SMU B. The script
then changes only the two SMU levels:

======================  =========================  ============================
line                    pulse of amplitude V        read
======================  =========================  ============================
selected row (A)        V                           V_read (A measures)
selected column         0 V                         0 V
every other line (B)    V / 2                       V_read
======================  =========================  ============================

so the selected device sees V, the half-selected devices of its row and its column V/2
(the V/2 scheme of a board ``PULSE``), every other device 0 V. A negative V (A at -V, B at
-V/2) resets. Between a read and the next pulse both levels stay at the read voltage.
Level order: into a set pulse B goes to V/2 before A goes to V (A first would put the full
V on the whole selected row), out of it A returns to the read level before B; a reset is
entered and left through A at 0 V. In the microseconds between two level settings no
device but the selected one sees more than |V|/2 (or the read voltage). During a read only
the selected device's current flows through A (its row's other devices see 0 V; its
column's other devices are fed by the buffer).

Limits. Every amplitude, width, current and count is a declared placeholder of a
:class:`~nvmlab.instruments.scripts.ScriptTemplate`, checked against the station's
:class:`~nvmlab.instruments.safety.SafetyLimits` before the script text is built (a value
beyond them raises and nothing is sent), and the script runs under the capped-script
watchdog (:mod:`nvmlab.instruments.scripts`: past its run-time bound it stops, both
outputs off). Inside, every level the loop computes goes through one function, which
clamps |A| to the cap it was given (the smaller of the station's write limit and the
caller's amplitude cap) and B to half of that, and counts any clamping it had to do: no
value beyond the limits can reach the wire even from inside the loop. The read level is
the checked placeholder itself.

Compliance: inside the script SMU A's compliance is the station's current limit (or the
lower ``pulse_current_limit_a``), for pulses and reads alike (a read at 0.2 V through one
device draws at most tens of uA). During a pulse A feeds the selected device at V *and*
the other devices of its row at V/2 (a board ``PULSE`` has no compliance; the SMU has): on
a 32-wide row that is a few mA, more once V/2 has disturbed the row's low-threshold
devices upwards. A pulse in compliance is counted (``compliance_pulses``): the device saw
less than the amplitude; adaptive-lite does not learn from it and takes that amplitude as
the polarity's maximum. The station's ``max_current_a`` must cover the row's current for
the loop to apply what it computes (1 mA, the default, does not on a 32-wide row).

Algorithms:

- ``"conventional"``: the calibration protocol of ``docs/devices.md`` exactly as
  :func:`~nvmlab.tuning.writeverify.conventional` (set ramp 0.5 -> 2.0 V, reset ramp
  0.5 -> 2.2 V in 30 mV steps, a polarity change restarts the ramp, 1.1 ms pulses, one
  1 PLC reading after each, at most 200 pulses, stop at the first read within the
  tolerance, default 2 %).
- ``"adaptive-lite"``: a simplified :func:`~nvmlab.tuning.writeverify.adaptive`: per
  polarity the threshold theta of the switching law ``d ln G = L0 (w / 1 ms)
  exp((|V| - theta) / v0)`` is learned by a probing ramp (each probe the largest pulse that
  cannot overshoot if theta sat at its proven lower bound, which every pulse that moved
  nothing detectable raises) and then from each observed change (a weighted running
  mean); the next amplitude is the one whose predicted change is the needed
  ``ln(target / G)``, shrunk by the cycle-to-cycle spread and theta's uncertainty so that
  it lands in the band; an overshoot hands over to the other polarity (learned the same
  way). Reads average as many 1 PLC readings as the next decision needs (a noise model
  rescaled by the spread the readings show); a device is accepted when an averaged read
  and a confirming one, pooled, lie inside half the tolerance by 1.5 standard errors. A
  polarity whose amplitude sat at its maximum for two pulses that moved nothing is dead
  (the device ``stuck`` if nothing ever moved it, else ``failed``). Left out against the
  host tuner: the telegraph check, the choice of NPLC, the ambiguity re-reads beyond one.

The reply is one line (``nvmlab_tune`` then numbers): the outcome code, pulses, reads,
readings, pulses clamped, pulses in compliance, the final averaged current and its
standard error, the learned thresholds, whether the device moved, the script's run time,
then every pulse (1, amplitude) and read (2, mean current) in order. The result is an
:class:`OnboardResult` (a :class:`~nvmlab.tuning.writeverify.TuneResult`);
``round_trips`` are the bus replies of the whole call when counted: the board's ``SEL``
(and ``READ:SCHEME`` when it changes), the reply line and the watchdog's end line, 3 per
device against tens to hundreds for the host loops. The script is uploaded for every
device (writes, no replies): its comments and indentation stripped and its statements
joined into lines of at most :data:`MAX_SCRIPT_LINE` characters (:func:`compact`), it is
about 45 lines / 4 kB (conventional) or 60 lines / 9.5 kB (adaptive-lite) with the
watchdog, so a device costs some 60-75 messages written against 140-350 for the host
loops.

Targets are conductances by the devices docs' definition, I(0.2 V) / 0.2 V, so the loop
reads at 0.2 V and compares currents with ``target_s x 0.2 V``.

Units: V, A, S, s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from nvmlab.characterization.states import Ramp
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ArrayOperations, ReadSettings
from nvmlab.instruments.scripts import ScriptResult, ScriptStopped, ScriptTemplate, render
from nvmlab.tuning.writeverify import (
    L0_RESET,
    L0_SET,
    THRESHOLD_PULSE_S,
    BusCounter,
    Outcome,
    ThresholdPrior,
    TuneResult,
    line_frequency_hz,
)

__all__ = [
    "ALGORITHMS",
    "OnboardResult",
    "OnboardSettings",
    "REPLY_MARKER",
    "ScriptStopped",
    "build_template",
    "compact",
    "script_values",
    "tune_on_instrument",
]

Algorithm = Literal["conventional", "adaptive-lite"]
ALGORITHMS: tuple[str, ...] = ("conventional", "adaptive-lite")
#: First word of the script's one reply line.
REPLY_MARKER = "nvmlab_tune"
#: Read voltage of the conductance definition (V, docs/devices.md).
DEFINITION_READ_V = 0.2
#: Outcome codes the script prints.
_TUNED, _DEAD, _BUDGET = 1, 2, 3
#: Per-reading firmware overhead assumed for the run-time bound (s; generous).
_READING_OVERHEAD_S = 2e-3


@dataclass(frozen=True)
class OnboardSettings:
    """Settings of :func:`tune_on_instrument` (units in the names).

    ``set_ramp`` / ``reset_ramp``: start, step and maximum amplitude (V) of each polarity
    (the maxima are capped at the station's write limit and at ``amplitude_cap_v`` when
    given, e.g. a half-select cap from a chip profile). ``width_s``: pulse width.
    ``max_pulses``: pulse budget. ``nplc``: integration time of every reading (PLC).
    ``read_current_limit_a``: the compliance of both channels as the host prepares the
    track-b read before the script; ``pulse_current_limit_a``: SMU A's compliance inside
    the script (None: the station's current limit). ``max_averages``: most
    readings in one averaged read (adaptive-lite). The rest are the adaptive-lite model
    (see :class:`~nvmlab.tuning.writeverify.AdaptiveSettings`).
    """

    set_ramp: Ramp = Ramp(0.5, 0.03, 2.0)
    reset_ramp: Ramp = Ramp(0.5, 0.03, 2.2)
    width_s: float = 1.1e-3
    max_pulses: int = 200
    nplc: float = 1.0
    read_current_limit_a: float = 1e-4
    pulse_current_limit_a: float | None = None
    amplitude_cap_v: float | None = None
    max_averages: int = 64
    switching_slope_v: float = 0.05
    cycle_to_cycle_cv: float = 0.3
    read_noise_rel: float = 0.002
    read_noise_abs_s: float = 2e-8
    accept_band: float = 0.5
    accept_z: float = 1.5
    detect_z: float = 3.0
    overshoot_z: float = 1.0
    max_change_ln: float = 2.0
    probe_change_ln: float = 1.0
    probe_start_z: float = 2.0
    stuck_pulses: int = 2
    cap_change_rel: float = 0.01
    stuck_limit_rel: float = 0.05
    #: Consecutive model-based pulses that moved nothing detectable before the polarity
    #: probes again (adaptive-lite).
    quiet_pulses: int = 3

    @classmethod
    def for_algorithm(cls, algorithm: str) -> OnboardSettings:
        """The defaults of ``algorithm``: the calibration protocol for ``conventional``,
        the adaptive tuner's ramps and 1 ms pulses for ``adaptive-lite``."""
        _check_algorithm(algorithm)
        if algorithm == "conventional":
            return cls()
        return cls(
            set_ramp=Ramp(0.4, 0.08, 2.5),
            reset_ramp=Ramp(0.4, 0.08, 2.5),
            width_s=1e-3,
            max_pulses=80,
        )

    def check(self) -> None:
        """ConfigError naming the field for a value outside what the loop allows."""
        for name, ramp in (("set_ramp", self.set_ramp), ("reset_ramp", self.reset_ramp)):
            for part in ("start_v", "step_v", "max_v"):
                _positive(f"{name}.{part}", getattr(ramp, part))
        _positive("width_s", self.width_s)
        for name in ("max_pulses", "max_averages", "stuck_pulses", "quiet_pulses"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{value!r}: allowed an integer >= 1", field=name)
        if not (isinstance(self.nplc, (int, float)) and 0.001 <= self.nplc <= 25):
            raise ConfigError(f"{self.nplc!r} PLC: allowed 0.001..25 PLC", field="nplc")
        _positive("read_current_limit_a", self.read_current_limit_a)
        if self.pulse_current_limit_a is not None:
            _positive("pulse_current_limit_a", self.pulse_current_limit_a)
        if self.amplitude_cap_v is not None:
            _positive("amplitude_cap_v", self.amplitude_cap_v)
        for name in (
            "switching_slope_v",
            "accept_band",
            "accept_z",
            "detect_z",
            "max_change_ln",
            "probe_change_ln",
            "cap_change_rel",
            "stuck_limit_rel",
            "read_noise_abs_s",
        ):
            _positive(name, getattr(self, name))
        for name in ("cycle_to_cycle_cv", "read_noise_rel", "overshoot_z"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{value!r}: must be a finite number >= 0", field=name)
        if not 0 < self.accept_band <= 1:
            raise ConfigError(f"{self.accept_band!r}: allowed (0, 1]", field="accept_band")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{value!r}: must be a finite number > 0", field=name)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{value!r}: must be a finite number > 0", field=name)


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"algorithm {algorithm!r}: allowed {', '.join(ALGORITHMS)}", field="algorithm"
        )


# ---------------------------------------------------------------------------------------
# the script
# ---------------------------------------------------------------------------------------
#: Placeholders every variant declares, by kind (checked by the role against the limits).
_PARAMETERS: dict[str, Any] = {
    "v_read": "read_v",
    "v_cap": "write_v",
    "v_set_start": "write_v",
    "v_set_step": "write_v",
    "v_set_max": "write_v",
    "v_reset_start": "write_v",
    "v_reset_step": "write_v",
    "v_reset_max": "write_v",
    "v_set_lo": "write_v",
    "v_reset_lo": "write_v",
    "v_set_seed": "write_v",
    "v_reset_seed": "write_v",
    "width": "width_s",
    "i_target": "current_a",
    "i_band": "current_a",
    "i_pulse_limit": "current_a",
    "i_noise_abs": "current_a",
    "max_pulses": "count",
    "max_averages": "count",
}

#: Shared part: state, the one level-setting function, the averaged read, the reply.
_COMMON = """\
local v_read = $v_read
local v_cap = $v_cap
local width = $width
local i_target = $i_target
local i_band = $i_band
local max_pulses = $max_pulses
local max_averages = $max_averages
local set_start, set_step, set_max = $v_set_start, $v_set_step, $v_set_max
local reset_start, reset_step, reset_max = $v_reset_start, $v_reset_step, $v_reset_max
local set_lo, reset_lo = $v_set_lo, $v_reset_lo
local set_seed, reset_seed = $v_set_seed, $v_reset_seed
local i_pulse_limit = $i_pulse_limit
local i_noise_abs = $i_noise_abs
local nplc = @NPLC@
if set_max > v_cap then set_max = v_cap end
if reset_max > v_cap then reset_max = v_cap end
if smua.source.output ~= smua.OUTPUT_ON or smub.source.output ~= smub.OUTPUT_ON then
  error("nvmlab_tune: both outputs must be on (the host prepares the track-b read)")
end
local saved_nplc_a = smua.measure.nplc
local saved_limit_a = smua.source.limiti
smua.measure.nplc = nplc
smua.source.limiti = i_pulse_limit
local pulses, reads, readings, clamped, compliance = 0, 0, 0, 0, 0
local last_hit = false
local history = {}
-- Levels. Between a read and the next pulse A and B stay at v_read. Into a set pulse B
-- goes to v/2 before A goes to v, out of it A returns to v_read before B; a reset pulse
-- is entered and left through A at 0 V. So no device ever sees more than |v| / 2 (or
-- v_read) in the instants between two level settings, except the selected one.
local at_read = false
-- the only place a pulse level is computed: |A| <= v_cap, B = A / 2
local function pulse(v)
  nvmlab_watchdog()
  if v > v_cap then
    v = v_cap
    clamped = clamped + 1
  elseif v < -v_cap then
    v = -v_cap
    clamped = clamped + 1
  end
  if v < 0 and at_read then
    smua.source.levelv = 0
  end
  smub.source.levelv = v / 2
  smua.source.levelv = v
  last_hit = smua.source.compliance and true or false
  if last_hit then
    compliance = compliance + 1
  end
  delay(width)
  if v < 0 then
    smua.source.levelv = 0
    smub.source.levelv = v_read
    smua.source.levelv = v_read
  else
    smua.source.levelv = v_read
    smub.source.levelv = v_read
  end
  at_read = true
  pulses = pulses + 1
  table.insert(history, 1)
  table.insert(history, v)
end
-- n readings at the read level (A and B at v_read, A measures): mean current and its
-- standard error (0 for a single reading)
local function read(n)
  nvmlab_watchdog()
  if n < 1 then n = 1 end
  if n > max_averages then n = max_averages end
  if not at_read then
    smub.source.levelv = v_read
    smua.source.levelv = v_read
    at_read = true
  end
  local s, ss = 0, 0
  for k = 1, n do
    local i = smua.measure.i()
    s = s + i
    ss = ss + i * i
  end
  reads = reads + 1
  readings = readings + n
  local m = s / n
  local se = 0
  if n > 1 then
    local var = (ss - n * m * m) / (n - 1)
    if var < 0 then var = 0 end
    se = math.sqrt(var / n)
  end
  table.insert(history, 2)
  table.insert(history, m)
  return m, se
end
local function reply(code, i, se, theta_set, theta_reset, moved)
  smua.source.levelv = 0
  smub.source.levelv = 0
  smua.measure.nplc = saved_nplc_a
  smua.source.limiti = saved_limit_a
  local moved_flag = 0
  if moved then moved_flag = 1 end
  local parts = {"@MARKER@", code, pulses, reads, readings, clamped, compliance, i, se,
                 theta_set, theta_reset, moved_flag, timer.measure.t()}
  for k = 1, table.getn(history) do
    table.insert(parts, history[k])
  end
  print(table.concat(parts, " "))
end
"""

#: The conventional ramp-with-verify loop (writeverify.conventional, in currents).
_CONVENTIONAL = """\
local i = read(1)
local i_first = i
local moved = false
local polarity, amplitude = 0, 0
while math.abs(i - i_target) > i_band and pulses < max_pulses do
  local wanted = 1
  if i > i_target then wanted = -1 end
  local start, step, top = set_start, set_step, set_max
  if wanted < 0 then start, step, top = reset_start, reset_step, reset_max end
  if wanted ~= polarity then
    polarity, amplitude = wanted, start
  else
    amplitude = amplitude + step
  end
  if amplitude > top then amplitude = top end
  pulse(polarity * amplitude)
  i = read(1)
  if math.abs(i / i_first - 1) > 0.1 then moved = true end
end
local code = 3
if math.abs(i - i_target) <= i_band then code = 1 end
reply(code, i, 0, 0, 0, moved)
"""

#: The adaptive-lite loop (threshold learned by ramp and from observed changes).
_ADAPTIVE = """\
-- (Lua 5.0 on the instrument: no math.huge, no '#')
local big = 1e300
local v0 = @V0@
local c2c = @C2C@
local rel_noise = @NOISE_REL@
local band = @BAND@
local accept_z = @ACCEPT_Z@
local detect_z = @DETECT_Z@
local overshoot_z = @OVERSHOOT_Z@
local max_change = @MAX_CHANGE@
local probe_change = @PROBE_CHANGE@
local stuck_pulses = @STUCK_PULSES@
local cap_change = @CAP_CHANGE@
local fine = 0.3 * band
local noise_scale = 1
local function new_polarity(sign, l0, start, step, top, lo, seed)
  local p = {sign = sign, scale = l0 * width / @PULSE_REF_S@, start = start, step = step,
             top = top, lo = lo, known = false, theta = 0, w = 0, moved = false, nulls = 0, quiet = 0,
             capn = 0, capref = false, cap_i = 0, cap_se = 0, last = 0}
  if p.lo < start then p.lo = start end
  if seed > 0 then
    p.known, p.theta, p.w = true, seed, 1 / (0.03 * 0.03)
    p.lo = seed - 0.06
    if p.lo < start then p.lo = start end
  end
  return p
end
local pset = new_polarity(1, @L0_SET@, set_start, set_step, set_max, set_lo, set_seed)
local preset = new_polarity(-1, @L0_RESET@, reset_start, reset_step, reset_max, reset_lo,
                            reset_seed)
local function sigma1(i)
  if i < 1e-12 then i = 1e-12 end
  return noise_scale * (rel_noise + i_noise_abs / i)
end
-- an averaged read whose relative standard error is about sigma (at least min_n readings)
local function measure(i_guess, sigma, min_n)
  local n = math.ceil((sigma1(i_guess) / sigma) ^ 2)
  if n < min_n then n = min_n end
  if n > max_averages then n = max_averages end
  local m, se = read(n)
  if m < 1e-12 then m = 1e-12 end
  local model = sigma1(m) / noise_scale
  if n >= 4 then
    local obs = se * math.sqrt(n) / m / model
    noise_scale = 0.7 * noise_scale + 0.3 * obs
    if noise_scale < 0.5 then noise_scale = 0.5 end
    if noise_scale > 4 then noise_scale = 4 end
  end
  local rse = sigma1(m) / math.sqrt(n)
  if n >= 4 and se / m > rse then rse = se / m end
  return m, rse
end
local function pool(i1, s1, i2, s2)
  local w1, w2 = 1 / (s1 * s1 + 1e-18), 1 / (s2 * s2 + 1e-18)
  return (i1 * w1 + i2 * w2) / (w1 + w2), 1 / math.sqrt(w1 + w2)
end
local function theta_sd(p)
  if p.w > 0 then return 1 / math.sqrt(p.w) end
  return big
end
local function aim(distance, tsd)
  local spread = c2c
  if tsd < big then spread = math.sqrt(c2c * c2c + (tsd / v0) ^ 2) end
  local a = (distance + band * 0.6) * math.exp(-overshoot_z * spread)
  if a > distance then a = distance end
  if a > max_change then a = max_change end
  return a
end
local function amplitude(p, distance)
  local v
  if p.known then
    v = p.theta + v0 * math.log(aim(distance, theta_sd(p)) / p.scale)
    local floor = p.lo
    if p.theta < floor then floor = p.theta end
    if v < floor - 0.1 then v = floor - 0.1 end
  else
    local want = aim(distance, 0)
    if want > probe_change then want = probe_change end
    v = p.lo + v0 * math.log(want / p.scale)
    if p.last > 0 and v < p.last + p.step then v = p.last + p.step end
    if v < p.start then v = p.start end
  end
  if v > p.top then v = p.top end
  if v < 0 then v = 0 end
  return v
end
local function learn(p, v, change, sd)
  local limit = detect_z * sd
  if change > limit then
    p.moved = true
    p.nulls = 0
    p.quiet = 0
    local obs = v - v0 * math.log(change / p.scale)
    local w = 1 / (v0 * v0 * (c2c * c2c + (sd / change) ^ 2))
    if p.known then
      local keep = 0.6 * p.w
      p.theta = (p.theta * keep + obs * w) / (keep + w)
      p.w = keep + w
    else
      p.known, p.theta, p.w = true, obs, w
    end
    if p.theta < p.lo then p.lo = p.theta end
  else
    local seen = limit
    if change > seen then seen = change end
    local bound = v - v0 * math.log(seen / p.scale)
    local expected = big
    if p.known then expected = p.scale * math.exp((v - p.theta) / v0) end
    if expected > 2 * limit then p.nulls = p.nulls + 1 end
    -- consecutive pulses that moved nothing detectable, whatever the model expected: a
    -- model aiming at changes below the detection limit would otherwise creep upward
    -- by millivolts
    p.quiet = p.quiet + 1
    if p.known and (bound > p.theta + 2 * theta_sd(p) or p.nulls >= 2 or p.quiet >= @QUIET@) then
      p.quiet = 0
      p.known, p.theta, p.w = false, 0, 0
      p.lo = bound
    elseif p.known then
      if bound > p.theta then
        p.theta = bound
        if p.w > 1 / (0.03 * 0.03) then p.w = 1 / (0.03 * 0.03) end
      end
    elseif bound > p.lo then
      p.lo = bound
    end
  end
end
local i, se = measure(i_target, 0.05, 8)
local i_first, se_first = i, se
local moved = false
local code = 0
local ambiguous = 0
while code == 0 do
  local err = i / i_target - 1
  if math.abs(err) + accept_z * se <= band then
    -- confirm with a second averaged read, pooled
    local sub = se
    if sub < fine then sub = fine end
    local i2, se2 = measure(i, sub, 1)
    i, se = pool(i, se, i2, se2)
    if math.abs(i / i_target - 1) + accept_z * se <= band then
      code = 1
    end
  elseif math.abs(err) - accept_z * se <= band and se > fine and ambiguous < 1 then
    ambiguous = ambiguous + 1
    local i2, se2 = measure(i, fine, 1)
    i, se = pool(i, se, i2, se2)
  else
    ambiguous = 0
    local p = pset
    if i > i_target then p = preset end
    if p.capn >= stuck_pulses then
      code = 2
    elseif pulses >= max_pulses then
      code = 3
    else
      local distance = math.abs(math.log(i_target / i))
      local v = amplitude(p, distance)
      pulse(p.sign * v)
      local hit = last_hit
      if hit and v < p.top then
        -- A reached its compliance (the selected row's current): the device saw less
        -- than v, and no larger amplitude can be applied in this polarity
        p.top = v
      end
      if p.known then p.last = v elseif v > p.last then p.last = v end
      local want = aim(distance, theta_sd(p))
      local sigma = 0.15 * math.abs(distance - want)
      if want / (2 * detect_z) < sigma then sigma = want / (2 * detect_z) end
      if sigma > 0.05 then sigma = 0.05 end
      if sigma < fine then sigma = fine end
      if v >= p.top - 1e-9 then
        if cap_change / (2 * detect_z) < sigma then sigma = cap_change / (2 * detect_z) end
        if not p.capref then
          p.capref, p.cap_i, p.cap_se = true, i, se
        end
      else
        p.capref, p.capn = false, 0
      end
      local i_new, se_new = measure(i, sigma, 1)
      local change = p.sign * math.log(i_new / i)
      local sd = math.sqrt(se * se + se_new * se_new)
      if not hit then
        learn(p, v, change, sd)
      end
      if p.capref then
        local moved = p.sign * math.log(i_new / p.cap_i)
        if moved > detect_z * math.sqrt(p.cap_se ^ 2 + se_new ^ 2) then
          p.cap_i, p.cap_se, p.capn = i_new, se_new, 0
        else
          p.capn = p.capn + 1
        end
      end
      i, se = i_new, se_new
      -- moved: beyond 5 % and beyond what the two reads' noise can explain
      local limit = 2 * detect_z * math.sqrt(se_first ^ 2 + se ^ 2)
      if limit < @STUCK_LIMIT@ then limit = @STUCK_LIMIT@ end
      if math.abs(math.log(i / i_first)) > limit then moved = true end
    end
  end
end
local ts, tr = 0, 0
if pset.known and pset.moved then ts = pset.theta end
if preset.known and preset.moved then tr = preset.theta end
reply(code, i, se * i, ts, tr, moved)
"""


def _literal(name: str, value: float) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{value!r} is not a finite number", field=name)
    return f"{float(value):.10g}"


def build_template(algorithm: str, settings: OnboardSettings) -> ScriptTemplate:
    """The :class:`ScriptTemplate` of ``algorithm``: every amplitude, width, current and
    count a declared placeholder; the model's dimensionless constants (slope, spreads,
    z factors, NPLC) written in as literals."""
    _check_algorithm(algorithm)
    settings.check()
    s = settings
    constants = {
        "@NPLC@": _literal("nplc", s.nplc),
        "@MARKER@": REPLY_MARKER,
        "@V0@": _literal("switching_slope_v", s.switching_slope_v),
        "@C2C@": _literal("cycle_to_cycle_cv", math.sqrt(math.log1p(s.cycle_to_cycle_cv**2))),
        "@NOISE_REL@": _literal("read_noise_rel", s.read_noise_rel),
        "@ACCEPT_Z@": _literal("accept_z", s.accept_z),
        "@DETECT_Z@": _literal("detect_z", s.detect_z),
        "@OVERSHOOT_Z@": _literal("overshoot_z", s.overshoot_z),
        "@MAX_CHANGE@": _literal("max_change_ln", s.max_change_ln),
        "@PROBE_CHANGE@": _literal("probe_change_ln", s.probe_change_ln),
        "@STUCK_PULSES@": _literal("stuck_pulses", s.stuck_pulses),
        "@CAP_CHANGE@": _literal("cap_change_rel", s.cap_change_rel),
        "@STUCK_LIMIT@": _literal("stuck_limit_rel", s.stuck_limit_rel),
        "@QUIET@": _literal("quiet_pulses", s.quiet_pulses),
        "@L0_SET@": _literal("L0_SET", L0_SET),
        "@L0_RESET@": _literal("L0_RESET", L0_RESET),
        "@PULSE_REF_S@": _literal("THRESHOLD_PULSE_S", THRESHOLD_PULSE_S),
    }
    body = _COMMON + (_CONVENTIONAL if algorithm == "conventional" else _ADAPTIVE)
    for key, value in constants.items():
        body = body.replace(key, value)
    body = compact(body)
    # the band is filled in per call (it depends on the tolerance): a literal, not a limit
    name = "nvmlab_tune_conv" if algorithm == "conventional" else "nvmlab_tune_lite"
    return ScriptTemplate(name, body, _PARAMETERS)


#: Longest line of the uploaded script (characters); the driver already sends far longer
#: lines (a 5000-point list sweep is one).
MAX_SCRIPT_LINE = 400


def compact(body: str, width: int = MAX_SCRIPT_LINE) -> str:
    """Lua ``body`` with its comment lines, blank lines and indentation removed and its
    statements joined into lines of at most ``width`` characters: the same program in a
    few dozen upload messages instead of hundreds. Lua is free-form; a line that opens
    with ``(`` (which Lua could read as a call continuing the line before) starts a new
    line, and a code line may not carry a trailing comment."""
    lines: list[str] = []
    for raw in body.splitlines():
        line = raw.strip()
        if not line or line.startswith("--"):
            continue
        if "--" in line:
            raise ValueError(f"script line with a trailing comment: {line!r}")
        if lines and not line.startswith("(") and len(lines[-1]) + 1 + len(line) <= width:
            lines[-1] += " " + line
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _with_band(template: ScriptTemplate, band_rel: float) -> ScriptTemplate:
    return ScriptTemplate(
        template.name,
        template.body.replace("@BAND@", _literal("tolerance_rel", band_rel)),
        template.parameters,
    )


def script_values(
    ops: ArrayOperations,
    target_s: float,
    tolerance_rel: float,
    settings: OnboardSettings,
    *,
    set_threshold_v: float | None = None,
    reset_threshold_v: float | None = None,
    prior: ThresholdPrior | None = None,
) -> dict[str, Any]:
    """The placeholder values for one device (the role checks them again, by kind,
    before anything is sent). The amplitude cap is the smallest of the station's write
    limit and ``settings.amplitude_cap_v``; ramp maxima above it are lowered to it."""
    limits = ops.limits
    cap = limits.max_write_v
    if settings.amplitude_cap_v is not None:
        cap = min(cap, settings.amplitude_cap_v)
    prior = prior or ThresholdPrior()

    def capped(v: float) -> float:
        return float(min(v, cap))

    def seed(v: float | None) -> float:
        if v is None or not math.isfinite(v) or v == 0:
            return 0.0
        return capped(abs(float(v)))

    pulse_limit = (
        settings.pulse_current_limit_a
        if settings.pulse_current_limit_a is not None
        else limits.max_current_a
    )
    i_target = float(target_s) * DEFINITION_READ_V
    return {
        "v_read": DEFINITION_READ_V,
        "v_cap": float(cap),
        "v_set_start": capped(settings.set_ramp.start_v),
        "v_set_step": capped(settings.set_ramp.step_v),
        "v_set_max": capped(settings.set_ramp.max_v),
        "v_reset_start": capped(settings.reset_ramp.start_v),
        "v_reset_step": capped(settings.reset_ramp.step_v),
        "v_reset_max": capped(settings.reset_ramp.max_v),
        "v_set_lo": capped(prior.lower_bound_v(1, settings.probe_start_z)),
        "v_reset_lo": capped(prior.lower_bound_v(-1, settings.probe_start_z)),
        "v_set_seed": seed(set_threshold_v),
        "v_reset_seed": seed(reset_threshold_v),
        "width": float(settings.width_s),
        "i_target": i_target,
        "i_band": float(tolerance_rel) * i_target,
        "i_pulse_limit": float(pulse_limit),
        "i_noise_abs": float(settings.read_noise_abs_s) * DEFINITION_READ_V,
        "max_pulses": int(settings.max_pulses),
        "max_averages": int(settings.max_averages),
    }


def run_time_bound_s(settings: OnboardSettings, algorithm: str, plc_s: float) -> float:
    """A generous run-time bound (s) of one device's loop: every pulse followed by up to
    three averaged reads of the most readings, plus the confirming reads."""
    reading_s = settings.nplc * plc_s + _READING_OVERHEAD_S
    per_read = reading_s * (1 if algorithm == "conventional" else settings.max_averages)
    reads_per_pulse = 1 if algorithm == "conventional" else 3
    bound = settings.max_pulses * (settings.width_s + reads_per_pulse * per_read)
    return float(2.0 * (bound + 10 * per_read) + 1.0)


# ---------------------------------------------------------------------------------------
# the call
# ---------------------------------------------------------------------------------------
@dataclass
class OnboardResult(TuneResult):
    """A :class:`~nvmlab.tuning.writeverify.TuneResult` of the on-instrument loop, with
    ``clamped_pulses`` (pulses whose level the script's guard had to lower to its cap:
    0 unless the loop computed beyond it), ``compliance_pulses`` (pulses during which SMU A
    was in compliance: the device saw less than the amplitude) and ``script_s`` (bench
    time the script ran, s)."""

    clamped_pulses: int = 0
    compliance_pulses: int = 0
    script_s: float = 0.0


@dataclass
class _Reply:
    code: int
    pulses: int
    reads: int
    readings: int
    clamped: int
    compliance: int
    current_a: float
    stderr_a: float
    theta_set_v: float
    theta_reset_v: float
    moved: bool
    script_s: float
    history: list[float] = field(default_factory=list)


def _parse(result: ScriptResult) -> _Reply:
    lines = [ln for ln in result.lines if ln.startswith(REPLY_MARKER)]
    if len(lines) != 1:
        raise ScriptStopped(
            f"the tuning script printed {len(lines)} reply lines; expected one "
            f"starting with {REPLY_MARKER!r}",
            result.lines,
        )
    words = lines[0].split()[1:]
    try:
        values = [float(w) for w in words]
    except ValueError:
        raise ScriptStopped(
            f"the tuning script's reply is not numeric: {lines[0]!r}", result.lines
        ) from None
    if len(values) < 12:
        raise ScriptStopped(f"the tuning script's reply is short: {lines[0]!r}", result.lines)
    head = values[:12]
    return _Reply(
        int(head[0]),
        int(head[1]),
        int(head[2]),
        int(head[3]),
        int(head[4]),
        int(head[5]),
        head[6],
        head[7],
        head[8],
        head[9],
        head[10] > 0,
        head[11],
        values[12:],
    )


def _split_history(
    history: list[float], pulses: int, reads: int
) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """Amplitudes (V), read currents (A) and the (amplitude V, conductance S) history in
    the order they happened, from the reply's (kind, value) pairs: kind 1 a pulse, 2 a
    read."""
    if len(history) % 2:
        raise ValueError(f"reply history of odd length {len(history)}")
    amps: list[float] = []
    currents: list[float] = []
    events: list[tuple[float, float]] = []
    for kind, x in zip(history[::2], history[1::2], strict=True):
        if kind == 1:
            amps.append(x)
            events.append((x, math.nan))
        elif kind == 2:
            currents.append(x)
            events.append((0.0, x / DEFINITION_READ_V))
        else:
            raise ValueError(f"reply history: unknown entry kind {kind!r}")
    if len(amps) != pulses or len(currents) != reads:
        raise ValueError(
            f"reply history holds {len(amps)} pulses and {len(currents)} reads; the script "
            f"counted {pulses} and {reads}"
        )
    return amps, currents, events


def tune_on_instrument(
    where: Any,
    row: int,
    col: int,
    target_s: float,
    *,
    algorithm: str = "conventional",
    tolerance_rel: float | None = None,
    settings: OnboardSettings | None = None,
    set_threshold_v: float | None = None,
    reset_threshold_v: float | None = None,
    prior: ThresholdPrior | None = None,
    bus: BusCounter | None = None,
    max_run_s: float | None = None,
) -> TuneResult:
    """Tune device (row, col) to ``target_s`` (S) with a loop running on the 2636B.

    ``where``: a :class:`~nvmlab.instruments.station.Station` (its round trips are
    counted when ``bus`` is None) or :class:`ArrayOperations` over a 2636B and a memristor
    board. ``algorithm``: ``"conventional"`` (tolerance default 2 %) or
    ``"adaptive-lite"`` (default 1 %). ``settings`` default to
    :meth:`OnboardSettings.for_algorithm`. ``set_threshold_v`` / ``reset_threshold_v``:
    a chip profile's thresholds (V) seeding adaptive-lite; ``prior``: the chip's threshold
    prior (its lower quantile starts the probing; the thresholds learned here are added to
    it). ``max_run_s``: the watchdog's run-time bound (s; default a generous bound from
    the settings). NaN target: ``skipped``, nothing sent.

    Returns a :class:`TuneResult` (``history`` holds (amplitude V, 0) per pulse and
    (0, conductance S) per read). Raises ConfigError for a bad argument and
    SafetyLimitError for a value beyond the station's limits, both before anything is
    sent; :class:`ScriptStopped` when the watchdog stopped the script (the SMU is then at
    0 V with its outputs off and every board line grounded).
    """
    ops, transports = _resolve(where)
    _check_algorithm(algorithm)
    if isinstance(target_s, bool) or not isinstance(target_s, (int, float)):
        raise ConfigError(f"target {target_s!r} is not a number (S)", field="target_s")
    if math.isnan(target_s):
        return TuneResult(row, col, target_s, math.nan, math.nan, 0, 0, 0, "skipped")
    if not (math.isfinite(target_s) and target_s > 0):
        raise ConfigError(
            f"target {target_s!r} S: a conductance target must be a finite number > 0 S",
            field="target_s",
        )
    settings = settings or OnboardSettings.for_algorithm(algorithm)
    settings.check()
    tol = (
        tolerance_rel
        if tolerance_rel is not None
        else (0.02 if algorithm == "conventional" else 0.01)
    )
    _positive("tolerance_rel", tol)
    if tol >= 0.5:
        raise ConfigError(f"{tol!r}: allowed (0, 0.5)", field="tolerance_rel")
    row, col = _check_device(ops, row, col)
    if getattr(ops.board, "kind", "MEMRISTOR") == "EFLASH":
        raise ConfigError(
            "the on-instrument loop tunes memristor crossbars; this board holds an eFlash array",
            field="board",
        )
    run_script = getattr(ops.smu, "run_script", None)
    if run_script is None or "b" not in ops.smu.channels:
        raise ConfigError(
            f"the on-instrument loop needs a Keithley 2636B (a TSP script on two channels); "
            f"this SMU is {type(ops.smu).__name__}",
            field="smu",
        )
    ops.limits.check_voltage(DEFINITION_READ_V, "read", what="read voltage")
    template = _with_band(build_template(algorithm, settings), tol * settings.accept_band)
    values = script_values(
        ops,
        float(target_s),
        tol,
        settings,
        set_threshold_v=set_threshold_v,
        reset_threshold_v=reset_threshold_v,
        prior=prior,
    )
    plc_s = 1.0 / line_frequency_hz(ops)
    bound = max_run_s if max_run_s is not None else run_time_bound_s(settings, algorithm, plc_s)
    # every value checked before anything is sent (the role checks again when it renders)
    render(template, values, ops.limits, max_run_s=bound)
    read_settings = _read_settings(settings)
    ops.check_read_settings(read_settings)

    own_bus = bus is None and transports is not None
    counter_cm = BusCounter.on(transports) if own_bus else None
    counter = counter_cm.__enter__() if counter_cm is not None else bus
    start = counter.round_trips if counter is not None else 0
    try:
        ops.prepare_reads(read_settings)
        ops.board.select(row, col, unselected="track-b")
        try:
            result = run_script(template, values, max_run_s=bound)
        except BaseException as exc:
            # stopped by its watchdog (outputs already off), or the host lost it: SMU at
            # 0 V with outputs off, every board line grounded, then the first error
            try:
                ops.finish()
            except Exception as cleanup:  # noqa: BLE001 - reported on the first error
                exc.add_note(f"leaving the station safe failed too: {cleanup}")
            raise
        trips = counter.round_trips - start if counter is not None else -1
    finally:
        if counter_cm is not None:
            counter_cm.__exit__(None, None, None)
    reply = _parse(result)
    amps, currents, events = _split_history(reply.history, reply.pulses, reply.reads)
    g_final = reply.current_a / DEFINITION_READ_V
    se_final = reply.stderr_a / DEFINITION_READ_V if algorithm != "conventional" else math.nan
    outcome = _outcome(reply)
    floor = reply.pulses * settings.width_s + reply.readings * settings.nplc * plc_s
    theta_set = reply.theta_set_v if reply.theta_set_v > 0 else math.nan
    theta_reset = -reply.theta_reset_v if reply.theta_reset_v > 0 else math.nan
    if prior is not None:
        for sign, theta in ((1, theta_set), (-1, theta_reset)):
            if math.isfinite(theta):
                prior.observe(sign, abs(theta))
    out = OnboardResult(
        row,
        col,
        float(target_s),
        g_final,
        se_final,
        reply.pulses,
        reply.reads,
        reply.readings,
        outcome,
        round_trips=trips,
        set_threshold_v=theta_set,
        reset_threshold_v=theta_reset,
        max_amplitude_v=max((abs(a) for a in amps), default=0.0),
        floor_s=floor,
        clamped_pulses=reply.clamped,
        compliance_pulses=reply.compliance,
        script_s=reply.script_s,
    )
    out.history = events
    return out


def _outcome(reply: _Reply) -> Outcome:
    """``tuned`` by the script's stop rule; else ``failed`` when a read ever left the
    first beyond its noise (the script's ``moved``), ``stuck`` when none did."""
    if reply.code == _TUNED:
        return "tuned"
    return "failed" if reply.moved else "stuck"


def _read_settings(settings: OnboardSettings) -> ReadSettings:
    """The host's preparation of the track-b read: both channels configured (compliance
    ``read_current_limit_a``, NPLC) and on at 0 V."""
    return ReadSettings(
        read_v=DEFINITION_READ_V,
        scheme="track-b",
        averages=1,
        nplc=settings.nplc,
        current_limit_a=settings.read_current_limit_a,
    )


def _resolve(where: Any) -> tuple[ArrayOperations, Any]:
    if isinstance(where, ArrayOperations):
        return where, None
    smu = getattr(where, "smu", None)
    board = getattr(where, "board", None)
    limits = getattr(where, "limits", None)
    if smu is None or board is None or limits is None:
        raise ConfigError(
            f"{type(where).__name__}: give a Station or ArrayOperations", field="where"
        )
    transports = getattr(where, "transports", None)
    return ArrayOperations(smu, board, limits), (list(transports.values()) if transports else None)


def _check_device(ops: ArrayOperations, row: int, col: int) -> tuple[int, int]:
    for what, index, size in (("row", row, ops.board.rows), ("col", col, ops.board.cols)):
        if isinstance(index, bool) or not hasattr(index, "__index__") or not 0 <= index < size:
            raise ConfigError(
                f"{what} {index!r} is outside 0..{size - 1} of this "
                f"{ops.board.rows}x{ops.board.cols} array",
                field=what,
            )
    return int(row), int(col)
