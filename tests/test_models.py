"""The instrument registry (nvmlab.models) is the one place model names live."""

from __future__ import annotations

import pytest

from nvmlab.instruments.sourcemeters import SOURCE_METERS
from nvmlab.instruments.station import DRIVERS
from nvmlab.mocks.benchfile import CHAMBER_MODELS, SMU_MODELS, BenchConfig
from nvmlab.mocks.emulated import EMULATORS, build_emulated_bench
from nvmlab.models import MODELS, canonical_model, get_model, models_of_kind


def test_every_model_resolves_to_its_driver_role_and_emulator() -> None:
    for name, model in MODELS.items():
        assert "-" not in name, "canonical names use underscores"
        driver, role, emulator = model.load_driver(), model.load_role(), model.load_emulator()
        assert DRIVERS[name].load() is driver
        assert EMULATORS[name] == model.emulator
        if model.kind == "smu":
            assert SOURCE_METERS[name] == (driver, role)
            assert model.channels and model.identity
        assert isinstance(emulator, type)


def test_both_spellings_are_accepted_on_input_and_the_canonical_one_comes_out() -> None:
    assert canonical_model("keysight-b2902a") == "keysight_b2902a"
    assert canonical_model("Watlow-F4", "chamber") == "watlow_f4"
    assert get_model("keithley2636b").tsp
    assert models_of_kind("smu") == SMU_MODELS and models_of_kind("chamber") == CHAMBER_MODELS
    with pytest.raises(ValueError, match="allowed: espec, watlow_f4"):
        canonical_model("keithley2400", "chamber")
    config = BenchConfig.from_dict(
        {"smu": {"model": "keysight-b2902a"}, "chamber": {"model": "watlow-f4"}}
    )
    assert (config.smu.model, config.chamber.model) == ("keysight_b2902a", "watlow_f4")
    bench = build_emulated_bench(rows=2, cols=2, smu_model="keysight-b2902a")
    try:
        assert bench.models["smu"] == "keysight_b2902a"
        assert bench.station_dict()["instruments"]["smu"]["driver"] == "keysight_b2902a"
    finally:
        bench.close()
