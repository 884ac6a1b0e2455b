"""What "the bench is safe" means, checked on the emulated bench itself.

Safe means every SMU output off, not merely at 0 V: an output left on at 0 V still forces
its line and is one mis-set level away from stressing a device. Terminals of the emulated
world read ``None`` when no instrument drives them (an output off: the 2400 and B2902A
disconnect); a 2636B output in its normal output-off mode still holds 0 V, current
limited, so for it the emulator's own output state is read. Every board line is grounded,
the eFlash biases are 0 V and the chamber is at the station's safe setpoint.
"""

from __future__ import annotations

from typing import Any

import pytest


def smu_outputs_on(bench: Any) -> dict[str, bool]:
    """Whether an SMU output drives each bench terminal (``{"A": False, "B": False}``)."""
    world = bench.bench
    firmware = bench.firmware["smu"]
    channels = {
        ch.terminal: ch
        for ch in (getattr(firmware, "smua", None), getattr(firmware, "smub", None))
        if ch is not None
    }
    on: dict[str, bool] = {}
    for terminal, volts in world.terminal_v.items():
        if volts is None:
            on[terminal] = False
        elif terminal in channels:  # 2636B: output off holds 0 V in normal off mode
            on[terminal] = channels[terminal].output != 0
        else:
            on[terminal] = True
    return on


def assert_bench_safe(bench: Any, *, setpoint_c: float | None = 25.0) -> None:
    """Every SMU output off, every line grounded, eFlash biases 0 V, chamber at ``setpoint_c``."""
    world = bench.bench
    outputs = smu_outputs_on(bench)
    assert not any(outputs.values()), f"SMU outputs left on: {outputs} ({world.terminal_v} V)"
    assert all(v in (None, 0.0) for v in world.terminal_v.values()), world.terminal_v
    modes = {line.mode for line in (*world.rows_state, *world.cols_state)}
    assert modes == {"gnd"}, modes
    assert (world.control_gate_v, world.erase_gate_v, world.source_v) == (0.0, 0.0, 0.0)
    if setpoint_c is not None:
        assert world.thermal.setpoint_c == pytest.approx(setpoint_c)
