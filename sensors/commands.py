"""What the installer-facing ``farmtel sensors ...`` commands do, as plain functions.

cli.py parses arguments and prints; these functions find drivers, build a config from
``--option key=value`` pairs and read a device. They raise
:class:`contract.settings.ConfigError` for anything wrong in what the user typed and
:class:`sensors.base.SensorError` for anything wrong on the wire.
"""

import time
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

from contract.settings import ConfigError, validate
from sensors import registry
from sensors.base import Sample, SensorConfig, SensorTimeoutError

OPTIONS_SOURCE = "command line options"
BENCH_DEFAULTS: Mapping[str, Any] = {"id": "probe", "field": "bench", "interval": 1.0}
"""Defaults for a bench read: a throw-away id and field, and polling every second."""


def list_drivers() -> list[tuple[str, str, str]]:
    """``(name, summary, sample_config)`` of every registered driver, sorted by name.

    Raises DriverRegistryError if two packages claim one name, DriverLoadError if a driver's
    package cannot be imported.
    """
    return [
        (name, registry.summary(name), registry.sample_config(name)) for name in registry.names()
    ]


def _toml_value(text: str) -> tuple[bool, Any]:
    try:
        return True, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return False, None


def _kinds(annotation: Any) -> set[str]:
    """Which of 'str', 'list', 'dict' a field's type accepts."""
    origin = get_origin(annotation)
    if annotation is str:
        return {"str"}
    if origin is Literal:
        return {"str"} if any(isinstance(a, str) for a in get_args(annotation)) else set()
    if origin is list or annotation is list:
        return {"list"}
    if origin is dict or annotation is dict:
        return {"dict"}
    if origin is Union or origin is types.UnionType:
        found: set[str] = set()
        for arg in get_args(annotation):
            found |= _kinds(arg)
        return found
    return set()


def parse_option(text: str, annotation: Any) -> Any:
    """An ``--option`` value for a field of type ``annotation``.

    A TOML value when the text is one (``1884``, ``true``, ``["a", "b"]``,
    ``{ t = "temp_c" }``); for list fields also ``a,b`` (split at commas); for table
    fields also ``key:value,key:value`` (or ``key=value``); else the text itself. A number
    given for a text field stays text (``--option id=7``).
    """
    kinds = _kinds(annotation)
    parsed, value = _toml_value(text)
    scalar_for_text = isinstance(value, int | float | bool) and "str" in kinds
    scalar_for_list = "list" in kinds and not isinstance(value, list)
    if parsed and not scalar_for_text and not scalar_for_list:
        return value
    if "list" in kinds:
        return [part.strip() for part in text.split(",") if part.strip()]
    if "dict" in kinds:
        table: dict[str, Any] = {}
        for pair in text.split(","):
            if not pair.strip():
                continue
            separator = ":" if ":" in pair else "="
            key, _, item = pair.partition(separator)
            ok, item_value = _toml_value(item.strip())
            table[key.strip()] = item_value if ok else item.strip()
        return table
    return text


def build_config(
    driver: str,
    port: str,
    options: Mapping[str, str],
    defaults: Mapping[str, Any] = BENCH_DEFAULTS,
) -> SensorConfig:
    """A validated config for ``driver`` on ``port`` from ``--option key=value`` pairs.

    ``id`` and ``field`` default to ``probe`` and ``bench``. Raises ConfigError naming the
    option, the value and what is allowed.
    """
    try:
        cls = registry.config_class(driver)
    except (registry.UnknownDriver, registry.DriverLoadError) as err:
        raise ConfigError(OPTIONS_SOURCE, [("driver", str(err))]) from None
    problems = [
        (key, f"is set by --{key}, not --option {key}=...")
        for key in ("driver", "port")
        if key in options
    ]
    if problems:
        raise ConfigError(OPTIONS_SOURCE, problems)
    raw: dict[str, Any] = {k: v for k, v in defaults.items() if k in cls.model_fields}
    for key, text in options.items():
        field = cls.model_fields.get(key)
        raw[key] = parse_option(text, field.annotation) if field is not None else text
        if isinstance(raw[key], dict) and "" in raw[key].values():
            problems.append(
                (
                    key,
                    f"--option {key}={text} is a table: give name:value pairs or a TOML "
                    f"table, e.g. --option '{key}={{ temp_c = [-40, 85] }}'",
                )
            )
    if problems:
        raise ConfigError(OPTIONS_SOURCE, problems)
    raw["driver"] = driver
    raw["port"] = port
    return validate(cls, raw, OPTIONS_SOURCE)


def read_device(
    driver: str,
    port: str,
    options: Mapping[str, str],
    count: int,
    timeout: float,
) -> Iterator[Sample]:
    """Open the device and yield its samples: ``count`` of them (0 = until the caller stops).

    Polling drivers are asked every ``interval`` seconds (1 s unless given as an option).
    Raises ConfigError for a bad option, SensorPortError if the port cannot be opened or
    goes away, SensorTimeoutError if no valid sample comes for ``timeout`` seconds (the
    message counts the lines rejected meanwhile, by reason), and the driver's other
    SensorErrors as they come. The port is closed when the iterator ends or is closed.
    """
    config = build_config(driver, port, options)
    try:
        device = registry.make_driver(config)
    except registry.DriverLoadError as err:
        raise ConfigError(OPTIONS_SOURCE, [("driver", str(err))]) from None
    device.open()
    try:
        got = 0
        last_sample = time.monotonic()
        while True:
            samples = device.read()
            now = time.monotonic()
            for sample in samples:
                yield sample
                got += 1
                if count and got >= count:
                    return
            if samples:
                last_sample = now
            elif now - last_sample >= timeout:
                rejected = ", ".join(f"{k}: {v}" for k, v in sorted(device.rejected.items()))
                raise SensorTimeoutError(
                    config.id,
                    f"no valid sample from port {port!r} within {timeout} s (rejected lines: "
                    f"{rejected or 'none'}); check the wiring, baudrate and the format options",
                )
            if not device.streaming:
                time.sleep(max(0.0, min(config.interval, timeout - (now - last_sample))))
    finally:
        device.close()


def scan_bus(
    driver: str,
    port: str,
    options: Mapping[str, str],
    progress: Callable[[str], None],
) -> Iterator[dict[str, str]]:
    """Yield the devices the driver finds on the bus at ``port`` (``farmtel sensors scan``).

    Each device is a dict with at least ``address``. Raises ConfigError for an unknown
    driver or a bad option, ScanNotSupported when the driver cannot scan, SensorPortError
    when the port cannot be used. ``progress`` receives one-line progress messages.
    """
    try:
        cls = registry.driver_class(driver)
    except (registry.UnknownDriver, registry.DriverLoadError) as err:
        raise ConfigError(OPTIONS_SOURCE, [("driver", str(err))]) from None
    problems = [
        (key, f"is set by --{key}, not --option {key}=...")
        for key in ("driver", "port")
        if key in options
    ]
    if problems:
        raise ConfigError(OPTIONS_SOURCE, problems)
    yield from cls.scan(port, options, progress)
