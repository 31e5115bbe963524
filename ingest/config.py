"""The ingest config (``ingest.toml``): the broker, InfluxDB, state and batching."""

import os
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from contract.settings import (
    LogSettings,
    MqttSettings,
    Strict,
    apply_env,
    read_toml,
    validate,
)
from contract.topics import INGEST_SHARE_GROUP
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
    """Readings gathered into one InfluxDB write at most."""
    write_max_wait: Annotated[float, Field(gt=0, le=10)] = 0.1
    """Seconds to wait for more messages before writing what is gathered."""
    retry_max_backoff: Annotated[float, Field(gt=0, le=600)] = 10.0
    """Seconds between write retries at most while InfluxDB is unavailable."""
    deadletter_path: Path | None = None
    """SQLite file for refused messages; default <state_dir>/deadletter.sqlite."""


class IngestConfig(Strict):
    """The whole ingest.toml."""

    ingest: IngestSection = IngestSection()
    mqtt: MqttSettings = MqttSettings()
    influxdb: InfluxSettings = InfluxSettings()
    log: LogSettings = LogSettings()

    def client_id(self) -> str:
        return self.mqtt.client_id or f"farmtel-ingest-{socket.gethostname().lower()}"

    def deadletter_path(self) -> Path:
        return self.ingest.deadletter_path or self.ingest.state_dir / "deadletter.sqlite"


SECTIONS = ("ingest", "mqtt", "influxdb", "log")


def parse_ingest_config(
    raw: dict[str, Any], source: str, environ: dict[str, str] | None = None
) -> IngestConfig:
    raw = apply_env(raw, SECTIONS, os.environ if environ is None else environ)
    return validate(IngestConfig, raw, source)


def load_ingest_config(path: Path, environ: dict[str, str] | None = None) -> IngestConfig:
    return parse_ingest_config(read_toml(path), str(path), environ)
