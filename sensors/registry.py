"""Which sensor drivers exist, and loading one of them by name.

A table of ``name -> "package.path"`` strings, imported only when used (as fsspec does), so
that listing drivers or validating a gateway config imports no driver code. Each driver is
a package ``<package>/`` holding:

- ``__init__.py``: a docstring whose first line is the driver's summary, and no imports;
- ``config.py``: ``class Config(SensorConfig)`` with ``driver: Literal["<name>"]`` and the
  driver's own keys, each documented by a docstring under it. It must not import device
  libraries (pyserial, pymodbus ...), so that a config is validated without them;
- ``driver.py``: ``class Driver(sensors.base.Driver)`` with ``name = "<name>"``;
- ``simulator.py``: ``python -m <package>.simulator --link PATH`` speaks, on a pty whose
  slave is linked at PATH, what ``sample.toml`` (with ``port = PATH``) configures the driver
  to read; the contract test pairs the two;
- ``sample.toml``: a commented ``[[sensors]]`` example (``## Sentence.`` documents a key,
  ``# key = default`` shows a default);
- ``README.md``.

Built-in drivers are listed in :data:`BUILTIN_DRIVERS`. Third-party packages add theirs
through the entry-point group ``farmtel.drivers`` (``name = "package.path"``). A name
claimed twice is an error, never a silent override.
"""

import functools
import importlib
import importlib.metadata
import importlib.resources
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any, get_args

from contract.settings import ConfigError, validate
from sensors.base import Driver, DriverInfo, SensorConfig

ENTRY_POINT_GROUP = "farmtel.drivers"

BUILTIN_DRIVERS: Mapping[str, str] = {
    "text_line": "sensors.text_line",
    "modbus_soil": "sensors.modbus_soil",
    "sdi12": "sensors.sdi12",
    "nmea_weather": "sensors.nmea_weather",
}
"""Drivers shipped with farmtel: name -> package path."""

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PACKAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class UnknownDriver(ValueError):
    """No driver has this name. The message lists the drivers that exist."""

    def __init__(self, name: object):
        self.name = name
        super().__init__(
            f"driver {name!r} is not known; known drivers: {', '.join(names()) or '(none)'}"
            " (list them with: farmtel sensors drivers)"
        )


class DriverRegistryError(RuntimeError):
    """The driver table is inconsistent: a name claimed twice, or a malformed entry point."""


class DriverLoadError(RuntimeError):
    """A registered driver package cannot be imported or does not follow the driver layout."""


def _entry_points() -> list[tuple[str, str, str]]:
    """``(name, package, distribution)`` for every ``farmtel.drivers`` entry point."""
    found = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
        found.append((ep.name, ep.value, dist))
    return found


@functools.cache
def _table() -> dict[str, str]:
    """The full driver table; built once (entry points are read from installed metadata)."""
    table = dict(BUILTIN_DRIVERS)
    origin = dict.fromkeys(BUILTIN_DRIVERS, "farmtel itself")
    for name, package, dist in _entry_points():
        if not _NAME_RE.fullmatch(name):
            raise DriverRegistryError(
                f"entry point {name!r} in group {ENTRY_POINT_GROUP} (from {dist}) is not a valid "
                f"driver name: it must match {_NAME_RE.pattern}; fix or uninstall {dist}"
            )
        if not _PACKAGE_RE.fullmatch(package):
            raise DriverRegistryError(
                f"entry point {name!r} in group {ENTRY_POINT_GROUP} (from {dist}) must name a "
                f"package as 'package.path', got {package!r}; fix or uninstall {dist}"
            )
        if name in table:
            raise DriverRegistryError(
                f"driver name {name!r} is claimed twice: by {origin[name]} ({table[name]}) and by "
                f"{dist} ({package}); uninstall one of them"
            )
        table[name] = package
        origin[name] = dist
    return table


def names() -> list[str]:
    """Every registered driver name, sorted."""
    return sorted(_table())


def package_of(name: str) -> str:
    """The package path of driver ``name``; raise :class:`UnknownDriver` if there is none."""
    table = _table()
    if not isinstance(name, str) or name not in table:
        raise UnknownDriver(name)
    return table[name]


def _import(name: str, module: str) -> ModuleType:
    path = f"{package_of(name)}.{module}" if module else package_of(name)
    try:
        return importlib.import_module(path)
    except ImportError as err:
        raise DriverLoadError(
            f"driver {name!r}: cannot import {path}: {err}; "
            "install the package that provides it (and its dependencies)"
        ) from err


def config_class(name: str) -> type[SensorConfig]:
    """The Config model of driver ``name``. Imports only ``<package>.config``.

    Raises :class:`UnknownDriver` or :class:`DriverLoadError`.
    """
    module = _import(name, "config")
    cls: Any = getattr(module, "Config", None)
    if not (isinstance(cls, type) and issubclass(cls, SensorConfig)):
        raise DriverLoadError(
            f"driver {name!r}: {module.__name__}.Config must be a subclass of SensorConfig"
        )
    field = cls.model_fields.get("driver")
    if field is None or get_args(field.annotation) != (name,):
        raise DriverLoadError(
            f'driver {name!r}: {module.__name__}.Config.driver must be Literal["{name}"]'
        )
    return cls


def driver_class(name: str) -> type[Driver]:
    """The Driver class of driver ``name``; imports ``<package>.driver`` and its libraries.

    Raises :class:`UnknownDriver` or :class:`DriverLoadError`.
    """
    module = _import(name, "driver")
    cls: Any = getattr(module, "Driver", None)
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DriverLoadError(
            f"driver {name!r}: {module.__name__}.Driver must be a subclass of sensors.base.Driver"
        )
    if getattr(cls, "name", None) != name:
        raise DriverLoadError(
            f"driver {name!r}: {module.__name__}.Driver.name is {getattr(cls, 'name', None)!r}, "
            f"must be {name!r}"
        )
    return cls


def _resource_text(name: str, filename: str) -> str:
    package = package_of(name)
    try:
        return importlib.resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    except (ImportError, OSError) as err:
        raise DriverLoadError(
            f"driver {name!r}: cannot read {filename} of {package}: {err}"
        ) from err


def sample_config(name: str) -> str:
    """The driver's commented ``[[sensors]]`` example (TOML text)."""
    return _resource_text(name, "sample.toml")


def summary(name: str) -> str:
    """One line saying what the driver reads: the first line of its package docstring."""
    doc = _import(name, "").__doc__ or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else "(no summary)"


def info(name: str) -> DriverInfo:
    """Name, package and summary of driver ``name`` (imports only its package ``__init__``)."""
    return DriverInfo(name=name, package=package_of(name), summary=summary(name))


def load_sensor_config(raw: dict[str, Any], source: str, index: int) -> SensorConfig:
    """Validate one ``[[sensors]]`` table with its driver's Config.

    Raises :class:`contract.settings.ConfigError` (from ``source``) whose keys start with
    ``sensors[index].``; an unknown or missing ``driver`` is reported with the known drivers.
    """
    prefix: list[str | int] = ["sensors", index]
    where = f"sensors[{index}].driver"
    driver = raw.get("driver")
    if driver is None:
        raise ConfigError(
            source, [(where, f"is required but missing; known drivers: {', '.join(names())}")]
        )
    try:
        cls = config_class(driver)
    except UnknownDriver as err:
        raise ConfigError(source, [(where, str(err))]) from None
    except DriverLoadError as err:
        raise ConfigError(source, [(where, str(err))]) from None
    return validate(cls, raw, source, prefix)


def make_driver(config: SensorConfig) -> Driver:
    """A driver object for ``config`` (not opened yet).

    A config that is not already an instance of the driver's Config (e.g. a bare
    SensorConfig) is validated again with it; raises ConfigError, UnknownDriver or
    DriverLoadError.
    """
    cls = config_class(config.driver)
    if not isinstance(config, cls):
        config = validate(cls, config.model_dump(), f"sensor {config.id}")
    return driver_class(config.driver)(config)
