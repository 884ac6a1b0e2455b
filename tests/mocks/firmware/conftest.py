"""Shared fixture: an 8 x 8 bench of known ohmic devices on a virtual clock."""

from __future__ import annotations

import numpy as np
import pytest

from nvmlab.clock import VirtualClock
from nvmlab.mocks.physics.resistor import ResistorArray
from nvmlab.mocks.thermal import ThermalModel
from nvmlab.mocks.world import Bench

#: Device (r, c) has conductance (10 + r * 8 + c) uS: every device is distinguishable.
KNOWN_G_S = (10.0 + np.arange(64, dtype=float).reshape(8, 8)) * 1e-6


@pytest.fixture
def bench() -> Bench:
    """An 8 x 8 ResistorArray (KNOWN_G_S), every line grounded, clock at 0 s."""
    clock = VirtualClock()
    return Bench(ResistorArray(KNOWN_G_S.copy()), clock, ThermalModel(clock))
