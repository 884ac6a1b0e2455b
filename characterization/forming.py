"""The ``forming`` sweep: current-limited forming ramps on virgin devices.

A virgin memristor conducts almost nothing (below 0.5 uS on the reference chips) and does
not switch until a positive bias reaches its *forming voltage* (about 2.2 V, above the
write limit of a formed device); it then jumps into its working window (5-150 kOhm). The
sweep forms each device with a staircase ramp of voltage pulses and reports, per device,
the voltage at which it formed (units V, A, S, s):

- every device is read first (0.2 V, tracking read); one already at or above
  ``target_s`` is left alone (formed earlier, or stuck conducting);
- otherwise the SMU (channel A) is routed to the device (``board.select``, unselected
  columns following A through the board's tracking buffer, unselected rows grounded) and
  pulses of ``width_s`` rise from ``start_v`` by ``step_v`` up to ``max_v`` (default the
  station's forming limit), each checked against the station's *forming* limit, each
  followed by a read. The SMU compliance ``current_limit_a`` is the forming current
  limit: in this routing the selected device is the only one on the SMU's line, so the
  compliance limits exactly its current;
- the ramp stops at the first read at or above ``target_s`` (the device formed). Its
  forming voltage lies between the last pulse that did not form it and the one that did;
  the sweep reports the midpoint, so its error is at most ``step_v / 2`` (the first pulse
  forming it gives no lower bound: reported as not measured). A device that does not form
  by ``max_v`` is reported not formed.

Disturb: in this routing the devices on neither the selected row nor the selected column
see ``-V`` (their rows grounded, their columns on the buffer at ``V``). Virgin devices do not
react to a negative bias, but devices already formed are reset by it: run ``forming`` on
virgin chips; after it the formed devices sit low in their window (set them to working
states afterwards, e.g. ``nvmlab.characterization.states.set_conductance``).

Profile array: ``forming_voltage_v``. Per-device parameters stored with the run:
``forming_voltage_v``, ``formed`` (1 formed by this ramp, 0 not), ``already_conducting``,
``forming_pulses``, ``formed_conductance_s``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nvmlab.characterization.sweep import (
    ProfileUpdate,
    Sweep,
    SweepContext,
    SweepUnit,
    check_station_limits,
    choose_devices,
    devices_by_row,
    register_sweep,
)
from nvmlab.errors import ConfigError
from nvmlab.instruments.arrays import ReadSettings
from nvmlab.steps import Param

if TYPE_CHECKING:
    from nvmlab.storage.inventory import RegisteredChip
    from nvmlab.storage.profile import ChipProfile

__all__ = ["FormingSweep"]


@register_sweep
class FormingSweep(Sweep):
    kind = "forming"
    summary = "current-limited forming ramps on virgin devices; forming voltage per device"
    description = __doc__ or ""
    params = (
        Param("sample", int, 0, low=0, high=1 << 24, help="devices (0: every device)"),
        Param("start_v", float, 1.5, unit="V", low=0.1, high=10.0, help="first ramp pulse"),
        Param("step_v", float, 0.02, unit="V", low=0.001, high=1.0, help="ramp step"),
        Param("max_v", float, 0.0, unit="V", low=0.0, high=10.0,
              help="last ramp pulse (0: the station's forming limit)"),
        Param("width_s", float, 1e-3, unit="s", low=1e-7, high=1.0, help="pulse width"),
        Param("current_limit_a", float, 1e-4, unit="A", low=1e-9, high=1.0,
              help="forming current limit (SMU compliance)"),
        Param("target_s", float, 2e-6, unit="S", low=1e-9, high=1e-2,
              help="a read at or above this conductance means formed"),
        Param("read_v", float, 0.2, unit="V", low=0.05, high=0.5),
        Param("nplc", float, 1.0, unit="PLC", low=0.01, high=10.0),
    )  # fmt: skip

    def check(self, params: dict[str, Any], chip: RegisteredChip, station: Any) -> None:
        super().check(params, chip, station)
        limits = station.limits
        top = self._top(params, limits)
        if top > limits.max_forming_v:
            raise ConfigError(
                f"value {top:g} V is not allowed; the station's forming limit is "
                f"{limits.max_forming_v:g} V (0 uses it)",
                field="max_v",
            )
        if params["start_v"] > top:
            raise ConfigError(
                f"value {params['start_v']:g} V is not allowed; it must not exceed the last "
                f"ramp pulse {top:g} V",
                field="start_v",
            )
        check_station_limits(params, limits, current_limit_a="max_current_a")
        check_station_limits(params, limits, read_v="max_read_v")
        check_station_limits(params, limits, width_s="max_pulse_width_s")

    @staticmethod
    def _top(params: dict[str, Any], limits: Any) -> float:
        return float(params["max_v"]) or float(limits.max_forming_v)

    def plan(
        self, params: dict[str, Any], chip: RegisteredChip, rng: np.random.Generator,
        profile: ChipProfile | None,
    ) -> list[SweepUnit]:  # fmt: skip
        devices = choose_devices(chip, params["sample"], rng, functional_only=False)
        by_row = devices_by_row(devices)
        return [SweepUnit(f"row-{r}", tuple(d), {"row": r}) for r, d in by_row.items()]

    def estimate_s(self, params: dict[str, Any], chip: RegisteredChip | None) -> float | None:
        if chip is None:
            return None
        n = params["sample"] or chip.rows * chip.cols
        steps = max(1.0, (2.3 - params["start_v"]) / params["step_v"])
        return n * steps * (params["width_s"] + params["nplc"] / 60.0 + 2e-3)

    def _settings(self, p: dict[str, Any]) -> ReadSettings:
        # One compliance for the reads and the ramp: the forming current limit.
        return ReadSettings(
            read_v=p["read_v"], scheme="track", averages=1, nplc=p["nplc"],
            current_limit_a=p["current_limit_a"],
        )  # fmt: skip

    def run_unit(self, ctx: SweepContext, unit: SweepUnit) -> None:
        p = ctx.params
        settings = self._settings(p)
        top = self._top(p, ctx.station.limits)
        n_steps = int(math.floor((top - p["start_v"]) / p["step_v"] + 1e-9)) + 1
        for r, c in unit.devices:
            ctx.check_stop()
            g = ctx.read(r, c, settings).conductance_s
            if g >= p["target_s"]:
                ctx.parameter(r, c, "already_conducting", 1.0)
                ctx.parameter(r, c, "formed", 0.0)
                ctx.parameter(r, c, "forming_voltage_v", None, "V", text="already conducting")
                ctx.parameter(r, c, "forming_pulses", 0.0)
                continue
            ctx.parameter(r, c, "already_conducting", 0.0)
            formed_at = math.nan
            pulses = 0
            for k in range(n_steps):
                amplitude = min(p["start_v"] + k * p["step_v"], top)
                self._pulse(ctx, r, c, amplitude, p["width_s"])
                pulses += 1
                g = ctx.read(r, c, settings).conductance_s
                if g >= p["target_s"]:
                    formed_at = amplitude
                    break
            ctx.parameter(r, c, "forming_pulses", float(pulses))
            if math.isnan(formed_at):
                ctx.parameter(r, c, "formed", 0.0)
                ctx.parameter(r, c, "forming_voltage_v", None, "V", text="did not form")
                continue
            ctx.parameter(r, c, "formed", 1.0)
            ctx.parameter(r, c, "formed_conductance_s", g, "S")
            if pulses == 1:
                ctx.parameter(
                    r, c, "forming_voltage_v", None, "V", text="formed at the first pulse"
                )
            else:
                ctx.parameter(r, c, "forming_voltage_v", formed_at - 0.5 * p["step_v"], "V")

    @staticmethod
    def _pulse(ctx: SweepContext, r: int, c: int, amplitude_v: float, width_s: float) -> None:
        """One forming pulse (V, s) from SMU A on device (r, c), the unselected columns on
        the tracking buffer, the unselected rows grounded; stored as a pulse record with
        scheme ``smu-track``. The amplitude is checked against the forming limit by the
        SMU role before anything is sent."""
        ctx.station.limits.check_voltage(amplitude_v, "forming", what="forming pulse amplitude")
        ctx.ops.board.select(r, c, unselected="track")
        ctx.ops.smu.pulse(amplitude_v, width_s, purpose="forming")
        ctx.writer.add_pulse(r, c, amplitude_v, width_s, 1, "smu-track")

    def finish(self, ctx: SweepContext) -> ProfileUpdate:
        got = ctx.chain_parameters(
            ["forming_voltage_v", "formed", "already_conducting", "forming_pulses"]
        )
        v = got["forming_voltage_v"]
        formed = got["formed"]
        measured = np.isfinite(formed)
        finite = v[np.isfinite(v)]
        summary: dict[str, Any] = {
            "devices": int(measured.sum()),
            "formed": int(np.nansum(formed)),
            "already_conducting": int(np.nansum(got["already_conducting"])),
            "not_formed": int(
                np.sum(measured & (formed == 0)) - np.nansum(got["already_conducting"])
            ),
            "forming_voltage_mean_v": float(finite.mean()) if finite.size else None,
            "forming_voltage_std_v": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "forming_voltage_median_v": float(np.median(finite)) if finite.size else None,
            "resolution_v": ctx.params["step_v"] / 2.0,
            "pulses_per_device_mean": (
                float(np.nanmean(got["forming_pulses"])) if measured.any() else None
            ),
        }
        return ProfileUpdate(arrays={"forming_voltage_v": v}, summary=summary)
