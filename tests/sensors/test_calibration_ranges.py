"""Calibration and plausibility ranges: the shared keys every sensor has, and the scheduler
step that applies them."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from agent.clock import ClockWatch
from agent.outbox import NewReading
from agent.scheduler import PortWorker, SensorHealth
from contract.settings import ConfigError
from contract.wire import Gap
from sensors import base
from sensors.calibration import Calibration, apply_calibration
from sensors.plausibility import check_ranges, default_range
from sensors.registry import load_sensor_config
from sensors.sample_checks import CheckedValues, check_sample

CAL = {
    "version": "2026-04-01-lab",
    "date": "2026-04-01",
    "by": "J. Wang",
    "values": {
        "moisture_pct": {"offset": -1.2, "scale": 1.03},
        "ec_us_cm": {"two_point": [[120, 100], [1450, 1413]]},
    },
}


def _sensor(**extra: Any) -> base.SensorConfig:
    raw = {
        "id": "probe",
        "field": "bench",
        "driver": "modbus_soil",
        "port": "/dev/null",
        **extra,
    }
    return load_sensor_config(raw, "gateway.toml", 0)


def test_linear_and_two_point() -> None:
    cal = Calibration.model_validate(CAL)
    out = apply_calibration({"moisture_pct": 30.0, "ec_us_cm": 120.0, "temp_c": 5.0}, cal)
    assert out["moisture_pct"] == pytest.approx(30.0 * 1.03 - 1.2)
    assert out["ec_us_cm"] == pytest.approx(100.0)
    assert out["temp_c"] == 5.0  # not named: unchanged
    assert apply_calibration({"ec_us_cm": 1450.0}, cal)["ec_us_cm"] == pytest.approx(1413.0)
    assert apply_calibration({"ec_us_cm": 785.0}, cal)["ec_us_cm"] == pytest.approx(756.5)
    assert apply_calibration({"x_c": 1.0}, None) == {"x_c": 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": ""}, "version"),
        ({"version": "has space"}, "version"),
        ({"date": "April"}, "date"),
        ({"by": ""}, "by"),
        ({"values": {}}, "values"),
        ({"values": {"Bad Name": {"scale": 2}}}, "value name"),
        ({"values": {"ph": {"scale": 0}}}, "scale = 0"),
        ({"values": {"ph": {"offset": 1, "two_point": [[1, 2], [3, 4]]}}}, "not both"),
        ({"values": {"ph": {"two_point": [[1, 2], [1, 4]]}}}, "must read differently"),
        ({"values": {"ph": {"two_point": [[1, 2]]}}}, "exactly two"),
        ({"values": {"ph": {"slope": 1}}}, "slope"),
    ],
)
def test_bad_calibration_is_refused_with_its_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _sensor(calibration={**CAL, **change})
    assert "sensors[0].calibration" in str(raised.value)
    assert message in str(raised.value)


def test_default_ranges_by_name_and_suffix() -> None:
    assert default_range("moisture_pct") == (0, 100)
    assert default_range("leaf_wetness_pct") == (0, 100)
    assert default_range("ph") == (0, 14)
    assert default_range("air_temp_c") == (-60, 60)
    assert default_range("temp_c") == (-40, 80)
    assert default_range("soil_temp_c") == (-40, 80)
    assert default_range("ec_us_cm") == (0, 20_000)
    assert default_range("wind_gust_ms") == (0, 75)
    assert default_range("pressure_hpa") == (300, 1100)
    assert default_range("k_mg_kg") == (0, 2000)
    assert default_range("counter") is None


def test_range_check_and_overrides() -> None:
    assert check_ranges({"temp_c": -40.0, "ph": 14.0}, {}) is None
    violation = check_ranges({"ph": 7.0, "air_temp_c": 61.0}, {})
    assert violation is not None and violation.name == "air_temp_c"
    assert str(violation) == "air_temp_c=61.0 outside [-60.0, 60.0]"
    assert check_ranges({"temp_c": 81.0}, {"temp_c": (-50, 90)}) is None
    assert check_ranges({"counter": 1e12}, {}) is None
    nan = check_ranges({"counter": math.nan}, {})
    assert nan is not None and nan.name == "counter"


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ({"temp_c": [5, 1]}, "low <= high"),
        ({"temp_c": [0, math.inf]}, "finite"),
        ({"Temp": [0, 1]}, "value name"),
        ({"temp_c": [1]}, "temp_c"),
    ],
)
def test_bad_ranges_are_refused(ranges: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _sensor(ranges=ranges)
    assert "sensors[0].ranges" in str(raised.value) and message in str(raised.value)


def test_check_sample_calibrates_then_checks() -> None:
    config = _sensor(calibration=CAL, ranges={"moisture_pct": [0, 50]})
    checked = check_sample(config, {"moisture_pct": 40.0})
    assert isinstance(checked, CheckedValues)
    assert checked.cal == "2026-04-01-lab"
    assert checked.values["moisture_pct"] == pytest.approx(40 * 1.03 - 1.2)
    # 50 raw is 50.3 calibrated: outside [0, 50] only after calibration
    rejected = check_sample(config, {"moisture_pct": 50.0})
    assert not isinstance(rejected, CheckedValues) and rejected.name == "moisture_pct"
    plain = check_sample(_sensor(), {"moisture_pct": 50.0})
    assert isinstance(plain, CheckedValues) and plain.cal is None


def test_text_line_limits_feed_ranges() -> None:
    raw: dict[str, Any] = {"id": "t", "field": "f", "driver": "text_line", "port": "/dev/null"}
    raw |= {"columns": ["temp_c"], "limits": {"temp_c": [-50, 90]}}
    assert load_sensor_config(raw, "g", 0).ranges == {"temp_c": (-50, 90)}
    with pytest.raises(ConfigError, match="different bounds"):
        load_sensor_config({**raw, "ranges": {"temp_c": [0, 1]}}, "g", 0)


class _ScriptedDriver(base.Driver):
    """Fault injection for the scheduler: returns the given samples, then nothing."""

    name = "scripted"

    def __init__(self, config: base.SensorConfig, samples: list[base.Sample]):
        super().__init__(config)
        self.samples = samples

    def open(self) -> None:
        pass

    def read(self) -> list[base.Sample]:
        out, self.samples = self.samples, []
        return out

    def close(self) -> None:
        pass


def test_scheduler_applies_calibration_and_rejects_out_of_range(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = _sensor(calibration=CAL, interval=3600)
    samples = [
        base.Sample({"moisture_pct": 30.0, "temp_c": 10.0}),
        base.Sample({"moisture_pct": 30.0, "temp_c": 95.0}),  # soil temp_c default -40..80
        base.Sample({"moisture_pct": 99.0, "temp_c": 10.0}),  # 100.77 % after calibration
    ]
    stored: list[NewReading] = []
    gaps: list[Gap] = []
    health: dict[str, SensorHealth] = {}

    def sink(readings: Sequence[NewReading]) -> None:
        stored.extend(readings)

    worker = PortWorker(
        config.port,
        [_ScriptedDriver(config, samples)],
        sink,
        gaps.append,
        ClockWatch(),
        threading.Event(),
        health,
    )
    worker._service(worker.slots[0])
    assert len(stored) == 1
    assert stored[0].cal == "2026-04-01-lab"
    assert stored[0].values == {"moisture_pct": pytest.approx(29.7), "temp_c": 10.0}
    assert health["probe"].rejected == {"out_of_range": 2}
    assert health["probe"].readings == 1
    assert "temp_c=95.0 outside [-40.0, 80.0]" in caplog.text and "probe" in caplog.text


def test_scheduler_with_every_sample_out_of_range_stores_nothing() -> None:
    config = _sensor(interval=3600)
    stored: list[NewReading] = []
    health: dict[str, SensorHealth] = {}
    worker = PortWorker(
        config.port,
        [_ScriptedDriver(config, [base.Sample({"ph": 15.0})])],
        stored.extend,
        lambda gap: None,
        ClockWatch(),
        threading.Event(),
        health,
    )
    worker._service(worker.slots[0])
    assert stored == []
    assert health["probe"].rejected == {"out_of_range": 1}
    assert health["probe"].readings == 0
