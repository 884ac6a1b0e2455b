"""The step registry: a job file's steps are validated in full before anything runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from nvmlab.errors import ConfigError
from nvmlab.steps import Param, StepContext, get_step, register_step, step_kinds, unregister_step


@pytest.fixture
def noise_step() -> Iterator[str]:
    @register_step(
        "test-noise",
        summary="repeated reads",
        params=(
            Param("reads", int, 100, low=2, high=100_000, help="reads per device"),
            Param("nplc", float, 1.0, unit="PLC", low=0.01, high=10.0),
            Param("states_s", list, [10e-6, 30e-6], unit="S", low=1e-6, high=200e-6),
            Param("scheme", str, "v/2", choices=("v/2", "v/3")),
            Param("devices", int, required=True, low=1),
        ),
        estimate_s=lambda p: p["reads"] * p["devices"] * p["nplc"] / 60,
    )
    def run(context: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        return {"chip": context.chip, **params}

    yield "test-noise"
    unregister_step("test-noise")


def test_parameters_are_checked_and_defaults_filled(noise_step: str) -> None:
    kind = get_step(noise_step)
    params = kind.validate({"devices": 4, "nplc": 2})
    assert params == {
        "reads": 100,
        "nplc": 2.0,
        "states_s": [10e-6, 30e-6],
        "scheme": "v/2",
        "devices": 4,
    }
    assert isinstance(params["nplc"], float)
    assert kind.estimate_s is not None and kind.estimate_s(params) == pytest.approx(
        100 * 4 * 2 / 60
    )
    result = kind.run(StepContext(station=None, chip="C1", database=None), params)
    assert result["chip"] == "C1"
    assert noise_step in step_kinds()


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"devices": 4, "nplc": 20}, "steps[2].nplc", "from 0.01 to 10 PLC"),
        ({"devices": 4, "reads": 2.5}, "steps[2].reads", "an integer"),
        ({"devices": 4, "scheme": "v/4"}, "steps[2].scheme", "one of 'v/2', 'v/3'"),
        ({"devices": 4, "states_s": [1e-3]}, "steps[2].states_s[0]", "from 1e-06 to 0.0002 S"),
        ({}, "steps[2].devices", "missing"),
        ({"devices": 4, "nplcs": 1}, "steps[2].nplcs", "allowed: reads, nplc"),
        ({"devices": True}, "steps[2].devices", "an integer"),
    ],
)
def test_bad_parameters_name_file_step_field_and_range(
    noise_step: str, params: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        get_step(noise_step).validate(params, file="night.toml", where="steps[2]")
    assert err.value.file == "night.toml" and err.value.field == field
    assert str(err.value).startswith(f"night.toml: {field}: ")
    assert says in str(err.value)


def test_unknown_kind_names_the_registered_ones(noise_step: str) -> None:
    with pytest.raises(ConfigError, match="unknown step kind 'tune-all'; allowed: .*test-noise"):
        get_step("tune-all", file="night.toml", where="steps[0].kind")


def test_a_name_cannot_be_taken_twice(noise_step: str) -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_step("test-noise", summary="another")
        def other(context: StepContext, params: dict[str, Any]) -> None: ...
