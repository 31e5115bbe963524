"""The ingest config (``ingest.toml``): the broker, InfluxDB, state and batching."""

import os
import socket
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator

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
from contract.topics import INGEST_SHARE_GROUP
from ingest.alerts import AlertRule, check_rule_names
from ingest.influx import InfluxSettings


class IngestSection(Strict):
    """How this ingest process behaves."""

    state_dir: Path = Path("/var/lib/farmtel/ingest")
    """Folder for the dead-letter store and other state."""
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = INGEST_SHARE_GROUP
    """MQTT shared-subscription group; ingests in one group split the telemetry between them."""
    session_expiry: Annotated[int, Field(ge=0, le=2**32 - 1)] = 86_400
    """Seconds the broker keeps this ingest's queue while it is away (restart, crash)."""
    receive_maximum: Annotated[int, Field(ge=1, le=65_535)] = 200
    """Unacknowledged messages the broker may hand us at once; bounds ingest memory."""
    write_max_readings: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    """Lines (readings, and their batches' gap and batch records) gathered into one InfluxDB
    write at most; a batch with more is written alone. Counted as decoded, not estimated."""
    write_max_wait: Annotated[float, Field(gt=0, le=10)] = 0.1
    """Seconds to wait for more messages before writing what is gathered."""
    write_concurrency: Annotated[int, Field(ge=1, le=8)] = 2
    """InfluxDB writes this ingest keeps in flight at once. InfluxDB takes one write on
    about one core, so one write at a time left a 2-core box a quarter idle. Acks and
    receipts still follow each write, in the order the messages came in."""
    retry_max_backoff: Annotated[float, Field(gt=0, le=600)] = 10.0
    """Seconds between write retries at most while InfluxDB is unavailable."""
    deadletter_path: Path | None = None
    """SQLite file for refused messages; default <state_dir>/deadletter.sqlite."""
    registry_path: Path | None = None
    """Device registry (SQLite, written by `farmtel devices`); default
    <state_dir>/registry.sqlite. When it exists, only registered, unrevoked gateways with a
    valid batch signature are stored (see require_signatures and docs/security.md)."""
    require_signatures: bool | None = None
    """Check every batch against the device registry. Unset: when the registry file exists
    (dev mode without one: unsigned batches accepted, with a warning). true: always; the
    ingest refuses to start without a registry. false: never (tests and migrations only)."""
    max_future_skew: Annotated[float, Field(ge=0, le=86_400 * 366)] = 300.0
    """Seconds a reading may be dated ahead of the ingest clock; later ones are quarantined
    (measurement farmtel_quarantine), not stored as data."""
    not_before: date | None = None
    """Readings dated before this day (UTC) are quarantined as before_registration; used for
    gateways the device registry has no registration time for. Unset: no lower bound."""
    metrics_interval: Annotated[float, Field(ge=1, le=3600)] = 10.0
    """Seconds between farmtel_ingest self-metric points (see docs/storage.md)."""


class IngestConfig(Strict):
    """The whole ingest.toml."""

    ingest: IngestSection = IngestSection()
    mqtt: MqttSettings = MqttSettings()
    influxdb: InfluxSettings = InfluxSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    alerts: list[AlertRule] = Field(default_factory=list)
    """One [[alerts]] table per threshold rule, checked on every stored reading."""

    @field_validator("alerts")
    @classmethod
    def _unique_alert_names(cls, alerts: list[AlertRule]) -> list[AlertRule]:
        check_rule_names(alerts)
        return alerts

    def client_id(self) -> str:
        return self.mqtt.client_id or f"farmtel-ingest-{socket.gethostname().lower()}"

    def deadletter_path(self) -> Path:
        return self.ingest.deadletter_path or self.ingest.state_dir / "deadletter.sqlite"

    def registry_path(self) -> Path:
        return self.ingest.registry_path or self.ingest.state_dir / "registry.sqlite"


SECTIONS = ("ingest", "mqtt", "influxdb", "log", "metrics", "alerts")


def parse_ingest_config(
    raw: dict[str, Any], source: str, environ: dict[str, str] | None = None
) -> IngestConfig:
    origins: dict[str, str] = {}
    raw = apply_env(raw, SECTIONS, os.environ if environ is None else environ, origins)
    try:
        return validate(IngestConfig, raw, source)
    except ConfigError as err:
        raise err.naming_env(origins) from None


def load_ingest_config(path: Path, environ: dict[str, str] | None = None) -> IngestConfig:
    return parse_ingest_config(read_toml(path), str(path), environ)
