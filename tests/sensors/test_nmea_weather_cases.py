"""Case folders: the exact bytes an NMEA 0183 station sends, through a real pty, and what
must come out.

Each folder under ``cases/nmea_weather/`` holds ``config.toml`` (driver options),
``wire.bin`` (the bytes on the wire) and ``expected.json`` (the samples' values in order
and the rejection counters).
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from sensors.registry import config_class
from tests.sensors.wire_runner import read_wire

CASES = Path(__file__).parent / "cases" / "nmea_weather"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
REQUIRED = {
    "empty_fields_not_measured",
    "bad_checksum",
    "mwv_void_status",
    "xdr_multiple_quadruples",
    "negative_temperature",
}


def test_required_cases_exist() -> None:
    assert set(CASE_NAMES) >= REQUIRED


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case(case: str) -> None:
    folder = CASES / case
    options = tomllib.loads((folder / "config.toml").read_text())
    expected = json.loads((folder / "expected.json").read_text())
    config = config_class("nmea_weather").model_validate(
        {"id": "case", "field": "test", "driver": "nmea_weather", "port": "unset", **options}
    )
    samples, rejected, _ = read_wire(config, (folder / "wire.bin").read_bytes())
    assert [s.values for s in samples] == expected["samples"], expected["why"]
    assert dict(rejected) == expected["rejected"], expected["why"]
    for sample in samples:
        assert sample.ts is not None and sample.ts > 0
        assert all(isinstance(v, float) and math.isfinite(v) for v in sample.values.values())
    stamps = [s.ts or 0 for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "timestamps must differ"
