"""examples/*.toml document every config key, so installers never meet an undocumented one."""

import re
from pathlib import Path

from pydantic import BaseModel

from agent.config import GatewayConfig
from ingest.config import IngestConfig
from sensors.base import SensorConfig
from sensors.registry import config_class
from tests.support.procs import REPO


def _keys_by_table(text: str) -> dict[str, set[str]]:
    tables: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        m = re.match(r"^\s*\[\[?([a-z_]+)\]\]?\s*$", line)
        if m:
            current = m.group(1)
            tables.setdefault(current, set())
            continue
        m = re.match(r"^\s*#?\s?([a-z_]+) = ", line)
        if m:
            tables.setdefault(current, set()).add(m.group(1))
    return tables


def _check(model: type[BaseModel], example: Path, skip: set[str]) -> None:
    tables = _keys_by_table(example.read_text())
    for section, field in model.model_fields.items():
        if section in skip:
            continue
        sub = field.annotation
        assert isinstance(sub, type) and issubclass(sub, BaseModel), section
        missing = set(sub.model_fields) - tables.get(section, set())
        assert not missing, f"{example.name} [{section}] does not document {sorted(missing)}"


def test_gateway_example_documents_every_key() -> None:
    _check(GatewayConfig, REPO / "examples" / "gateway.toml", skip={"sensors"})
    sensor_keys = _keys_by_table((REPO / "examples" / "gateway.toml").read_text())["sensors"]
    missing = set(SensorConfig.model_fields) - sensor_keys
    assert not missing, f"gateway.toml [[sensors]] does not document {sorted(missing)}"


def test_ingest_example_documents_every_key() -> None:
    # [[alerts]] is a list of rules, shown commented out (tests/ingest/test_alerts.py).
    _check(IngestConfig, REPO / "examples" / "ingest.toml", skip={"alerts"})


def test_text_line_sample_documents_every_key() -> None:
    sample = (REPO / "sensors" / "text_line" / "sample.toml").read_text()
    keys = _keys_by_table(sample)["sensors"]
    missing = set(config_class("text_line").model_fields) - keys
    assert not missing, f"text_line sample.toml does not document {sorted(missing)}"
