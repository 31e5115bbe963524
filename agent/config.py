"""The gateway config (``gateway.toml``): who the gateway is, the broker, the outbox, the sensors.

Every key is documented by the docstring under it; ``examples/gateway.toml`` and the
configuration reference are kept in step with these models by a test.
"""

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from contract.ids import Ident
from contract.metrics import MetricsSettings
from contract.settings import (
    ConfigError,
    LogSettings,
    MqttSettings,
    Strict,
    apply_env,
    read_toml,
    validate,
)
from sensors.base import SensorConfig


class GatewaySection(Strict):
    """Who this gateway is."""

    plantation: Ident
    """Plantation id this gateway belongs to (given when the gateway is registered)."""
    id: Ident
    """Gateway id, unique within the plantation."""
    state_dir: Path = Path("/var/lib/farmtel/agent")
    """Folder for the outbox and other state; must be on persistent storage."""
    signing_key_file: Path | None = None
    """Ed25519 private key (PEM, mode 0600) that signs every batch; written by `farmtel
    devices add`. Required when the ingest has a device registry; unset: batches go unsigned."""


class OutboxSettings(Strict):
    """The on-disk outbox every reading goes through before it is published."""

    path: Path | None = None
    """SQLite file; default <state_dir>/outbox.sqlite."""
    max_bytes: Annotated[int, Field(ge=1_048_576)] = 384 * 1_048_576
    """Disk cap in bytes; 384 MiB holds ~2 million readings of 3 values (~200 bytes each).
    Past it new readings are dropped and declared as an outbox_full gap."""
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 2000
    """Readings per published batch at most (~400 KB at 2,000 readings of 3 values; fewer if
    their records pass 640 KB). After a connection lost with batches in flight, new batches
    take half as many, down to 100, and twice as many again after every 4 receipts in a row.
    Over a slow link (2G, ~50 kbit/s) set 200-500: 2,000 readings take over a minute to send
    there. Bigger batches cost the ingest, broker and InfluxDB less per reading
    (docs/performance.md)."""
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = 16
    """Batches published and not yet receipted at most; bounds what a reconnect resends."""
    receipt_timeout: Annotated[float, Field(gt=0, le=86_400)] = 30.0
    """Seconds to wait for the ingest's receipt before publishing a batch again (then backing off,
    doubling up to 10 x this)."""
    commit_interval: Annotated[float, Field(gt=0, le=10)] = 0.2
    """Seconds between outbox commits; readings arriving meanwhile are committed together."""
    send_delay: Annotated[float, Field(ge=0, le=60)] = 1.0
    """Seconds a committed reading may wait for more to fill its batch before it is published
    (it is safe on disk meanwhile). A full batch, and a backlog, go at once; 0 publishes after
    every commit. Fewer, fuller batches cost the gateway and the ingest less CPU per reading."""
    prune_on: Literal["receipt", "puback"] = "receipt"
    """FOR TESTING ONLY. "receipt" deletes a batch when the ingest says InfluxDB has it;
    "puback" deletes it on the broker's PUBACK, which loses data when the broker crashes
    (the fault tests use it as the control run that must show loss)."""


class StatusSettings(Strict):
    """The retained status message on farmtel/v1/<plantation>/<gateway>/status."""

    interval: Annotated[float, Field(ge=1, le=3600)] = 30.0
    """Seconds between status updates."""


class GatewayConfig(Strict):
    """The whole gateway.toml."""

    gateway: GatewaySection
    mqtt: MqttSettings = MqttSettings()
    outbox: OutboxSettings = OutboxSettings()
    status: StatusSettings = StatusSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    sensors: list[SensorConfig] = Field(default_factory=list)
    """One [[sensors]] table per sensor; the keys depend on its driver."""

    def outbox_path(self) -> Path:
        return self.outbox.path or self.gateway.state_dir / "outbox.sqlite"

    def client_id(self) -> str:
        return self.mqtt.client_id or f"farmtel-agent-{self.gateway.plantation}-{self.gateway.id}"


SECTIONS = ("gateway", "mqtt", "outbox", "status", "log", "metrics", "sensors")


def parse_gateway_config(
    raw: dict[str, Any], source: str, environ: dict[str, str] | None = None
) -> GatewayConfig:
    """Validate a gateway config read from TOML; raise ConfigError listing every problem."""
    from sensors.registry import load_sensor_config

    origins: dict[str, str] = {}
    raw = apply_env(raw, SECTIONS, os.environ if environ is None else environ, origins)
    raw_sensors = raw.pop("sensors", [])
    problems: list[tuple[str, str]] = []
    base: GatewayConfig | None = None
    try:
        base = validate(GatewayConfig, raw, source)
    except ConfigError as err:
        problems += err.problems
    sensors: list[SensorConfig] = []
    if not isinstance(raw_sensors, list):
        problems.append(("sensors", "must be a list of [[sensors]] tables"))
        raw_sensors = []
    for i, item in enumerate(raw_sensors):
        if not isinstance(item, dict):
            problems.append((f"sensors[{i}]", "must be a table"))
            continue
        try:
            sensors.append(load_sensor_config(item, source, i))
        except ConfigError as err:
            problems += err.problems
    seen: dict[str, int] = {}
    for i, sensor in enumerate(sensors):
        if sensor.id in seen:
            problems.append(
                (f"sensors[{i}].id", f"{sensor.id!r} is already used by sensors[{seen[sensor.id]}]")
            )
        seen.setdefault(sensor.id, i)
    if not raw_sensors:
        problems.append(("sensors", "no [[sensors]] configured; the agent would read nothing"))
    if problems or base is None:
        raise ConfigError(source, problems).naming_env(origins)
    return base.model_copy(update={"sensors": sensors})


def load_gateway_config(path: Path, environ: dict[str, str] | None = None) -> GatewayConfig:
    return parse_gateway_config(read_toml(path), str(path), environ)
