"""What every registered driver must do, checked for each one the registry lists."""

from __future__ import annotations

import importlib.resources
import math
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from contract.wire import check_value_name
from sensors import registry
from sensors.base import Driver, Sample, SensorConfig
from tests.sensors.wire_runner import REPO, Simulator

DRIVERS = registry.names()


def _sample_entries(name: str) -> list[dict[str, object]]:
    parsed = tomllib.loads(registry.sample_config(name))
    entries = parsed.get("sensors")
    assert isinstance(entries, list) and entries, "sample.toml must hold [[sensors]] tables"
    return entries


def test_text_line_is_registered() -> None:
    assert "text_line" in DRIVERS


@pytest.mark.parametrize("name", DRIVERS)
def test_sample_config_validates(name: str) -> None:
    for i, raw in enumerate(_sample_entries(name)):
        config = registry.load_sensor_config(raw, "sample.toml", i)
        assert isinstance(config, registry.config_class(name))
        assert config.driver == name


@pytest.mark.parametrize("name", DRIVERS)
def test_sample_config_shows_every_key(name: str) -> None:
    text = registry.sample_config(name)
    for key in registry.config_class(name).model_fields:
        assert re.search(rf"^\s*#?\s*{key} = ", text, re.MULTILINE), f"{key} missing from sample"
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not stripped.startswith("##"):
            assert re.match(r"^# [a-z_]+ = ", stripped), f"not a '# key = default' line: {line!r}"


@pytest.mark.parametrize("name", DRIVERS)
def test_own_config_keys_are_documented(name: str) -> None:
    cls = registry.config_class(name)
    own = set(cls.model_fields) - set(SensorConfig.model_fields)
    assert own, "a driver config adds its own keys"
    for key in own:
        assert cls.model_fields[key].description, f"{name}: key {key} has no docstring"


@pytest.mark.parametrize("name", DRIVERS)
def test_driver_class(name: str) -> None:
    cls = registry.driver_class(name)
    assert issubclass(cls, Driver)
    assert cls.name == name
    assert isinstance(cls.streaming, bool)


@pytest.mark.parametrize("name", DRIVERS)
def test_summary_and_readme(name: str) -> None:
    summary = registry.summary(name)
    assert summary and "\n" not in summary and summary != "(no summary)"
    readme = importlib.resources.files(registry.package_of(name)).joinpath("README.md")
    assert name in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", DRIVERS)
def test_validating_config_imports_no_driver_code(name: str) -> None:
    package = registry.package_of(name)
    code = (
        "import sys\n"
        "from sensors import registry\n"
        f"registry.config_class({name!r}); registry.summary({name!r})\n"
        f"heavy = [m for m in ('serial', 'pymodbus', 'pynmea2', {package + '.driver'!r}) "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", DRIVERS)
def test_simulator_feeds_the_driver_through_a_pty(name: str, tmp_path: Path) -> None:
    link = tmp_path / "port"
    with Simulator(registry.package_of(name), link) as sim:
        sim.ready()
        raw = dict(_sample_entries(name)[0], port=str(link), timeout=0.5)
        driver = registry.make_driver(registry.load_sensor_config(raw, "sample.toml", 0))
        driver.open()
        samples: list[Sample] = []
        try:
            deadline = time.monotonic() + 20
            while not samples and time.monotonic() < deadline:
                samples = driver.read()
        finally:
            driver.close()
        code, events, err = sim.stop()
    assert samples, f"no sample within 20 s; rejected: {dict(driver.rejected)}"
    for sample in samples:
        assert sample.values
        for key, value in sample.values.items():
            check_value_name(key)
            assert isinstance(value, float) and math.isfinite(value)
    assert code == 0, err
    assert events[-1]["event"] == "done"
    assert not link.is_symlink(), "the simulator must remove its link on SIGTERM"
