"""The provisioned Grafana dashboard: its JSON parses, every measurement, field and tag it
names is one the ingest writes, and every query runs on the real InfluxDB.

The allowed names are not listed by hand: they come from the lines the ingest's own code
produces (mapping.batch_to_lines, the self-metrics, the alert records) for sample input,
plus the value names the drivers' sample configs read.
"""

from __future__ import annotations

import json
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.wire import Batch, Gap, Reading
from ingest.alerts import Alert
from ingest.config import IngestConfig
from ingest.influx import InfluxQuery, InfluxSettings, make_writer
from ingest.mapping import batch_to_lines
from ingest.selfmetrics import SelfMetrics, agent_line, ingest_line
from ingest.service import Ingest
from sensors import registry

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Template variables stand for names chosen at view time; they are checked by running.
VARIABLE = re.compile(r"\$\{?\w+\}?")


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur += text[i : i + 2]
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    return parts


def _parse_line(line: str) -> tuple[str, set[str], set[str]]:
    """(measurement, tag keys, field keys) of one line of line protocol."""
    head, fields, *_ = _split_unescaped(line, " ")
    measurement, *tags = _split_unescaped(head, ",")
    field_keys = {f.split("=", 1)[0] for f in _split_unescaped(fields, ",")}
    return measurement, {t.split("=", 1)[0] for t in tags}, field_keys


def _driver_samples() -> list[dict[str, Any]]:
    out = []
    for name in registry.names():
        for sensor in tomllib.loads(registry.sample_config(name)).get("sensors", []):
            out.append(sensor)
    return out


def _written_schema(tmp: Path) -> dict[str, tuple[set[str], set[str]]]:
    """measurement -> (tag keys, field keys) of everything the ingest writes."""
    now = time.time_ns()
    lines: list[str] = []
    for sample in _driver_samples():
        config = registry.config_class(sample["driver"]).model_validate(sample)
        names = getattr(config, "value_names", lambda: None)() or ["x_value"]
        reading = Reading(
            sensor=config.id,
            field=config.field,
            kind=config.kind,
            ts=now,
            clock="synced",
            seq=1,
            values=dict.fromkeys(names, 1.0),
            cal="v1",
        )
        gap = Gap(sensor=config.id, start=now, end=now + 1, reason="sensor_silent", seq=1, count=1)
        batch = Batch(
            gateway="gw-1", boot="b", batch="b1", sent=now, readings=[reading], gaps=[gap]
        )
        lines += batch_to_lines("p-1", batch)
    status = {
        "state": "online",
        "ts": now,
        "outbox": {"readings": 1, "oldest_age_s": 1.0, "inflight_batches": 1, "dropped": 0},
        "counters": dict.fromkeys(
            ("readings_in", "readings_acked", "batches_sent", "batches_resent", "receipts", "gaps"),
            1,
        ),
    }
    agent = agent_line("p-1", "gw-1", json.dumps(status).encode())
    assert agent is not None
    lines.append(agent)
    ingest = Ingest(
        IngestConfig.model_validate({"ingest": {"state_dir": str(tmp)}}), writer=_NoWriter()
    )
    try:
        selfmetrics = next(v for v in vars(ingest).values() if isinstance(v, SelfMetrics))
        lines.append(ingest_line("h", "c", selfmetrics.ingest_fields(), now))
    finally:
        ingest.dead.close()
    alert = Alert("r", "warning", "firing", "p", "g", "s", "v", 1.0, "<", 2.0, 0.0, now, now)
    lines.append(alert.line())
    schema: dict[str, tuple[set[str], set[str]]] = {}
    for line in lines:
        m, tags, fields = _parse_line(line)
        known = schema.setdefault(m, (set(), set()))
        known[0].update(tags)
        known[1].update(fields)
    return schema


class _NoWriter:
    def write(self, lines: bytes) -> None:
        raise AssertionError("nothing is written here")

    def close(self) -> None:
        pass


def _queries(dash: dict[str, Any]) -> list[str]:
    out = [t["query"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [a["query"] for a in dash.get("annotations", {}).get("list", []) if "query" in a]
    return out


def _from_names(query: str) -> list[str]:
    return re.findall(r'FROM\s+("(?:[^"\\]|\\.)*"|/[^/]*/)', query)


def _select_fields(query: str) -> set[str]:
    select = query.split(" FROM ", 1)[0]
    select = re.sub(r'\s+AS\s+"[^"]*"', "", select)  # aliases are not stored names
    names = re.findall(r'"([^"]+)"', select)
    return {n for n in names if not VARIABLE.search(n)}


def _tag_refs(query: str) -> set[str]:
    refs = set(re.findall(r'"(\w+)"\s*(?:=~|!=|=)', query.split(" FROM ", 1)[-1]))
    group = re.search(r"GROUP BY (.*?)(?: fill\(|$)", query)
    if group:
        refs |= set(re.findall(r'"(\w+)"', group.group(1)))
    return refs


def test_there_is_a_dashboard_and_it_parses() -> None:
    assert DASHBOARDS, "deploy/grafana/dashboards/*.json is missing"
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["panels"]
        names = [v["name"] for v in dash["templating"]["list"]]
        assert {"plantation", "gateway", "sensor"} <= set(names)
        for panel in dash["panels"]:
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "farmtel-influxdb"
                assert target["rawQuery"] is True


def test_provisioning_files_point_at_the_dashboard_datasource() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "farmtel.yaml").read_text())
    [source] = ds["datasources"]
    assert source["type"] == "influxdb" and source["uid"] == "farmtel-influxdb"
    boards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "farmtel.yaml").read_text())
    assert boards["providers"][0]["type"] == "file"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_names_only_what_the_ingest_writes(path: Path, tmp_path: Path) -> None:
    schema = _written_schema(tmp_path)
    all_tags = set().union(*(tags for tags, _ in schema.values()))
    all_fields = set().union(*(fields for _, fields in schema.values()))
    dash = json.loads(path.read_text())
    problems = []
    for query in _queries(dash):
        sources = _from_names(query)
        assert sources, f"no FROM in {query!r}"
        for source in sources:
            if source.startswith("/"):
                assert VARIABLE.search(source), f"a regex FROM must be a variable: {query!r}"
                allowed_fields, allowed_tags = all_fields, all_tags
            else:
                name = source.strip('"')
                if name not in schema:
                    problems.append(f"measurement {name!r} is not written: {query}")
                    continue
                allowed_tags, allowed_fields = schema[name]
            bad = _select_fields(query) - allowed_fields - allowed_tags
            problems += [f"{source}: field {f!r} is not written: {query}" for f in sorted(bad)]
            bad_tags = _tag_refs(query) - allowed_tags - allowed_fields
            problems += [f"{source}: tag {t!r} is not written: {query}" for t in sorted(bad_tags)]
    assert problems == []


def test_the_checker_catches_a_wrong_name(tmp_path: Path) -> None:
    schema = _written_schema(tmp_path)
    assert "farmtel_gap" in schema and "duration_s" in schema["farmtel_gap"][1]
    assert "moisture_pct" not in schema["farmtel_agent"][1]
    assert _select_fields('SELECT mean("moisture_pcnt") FROM "soil"') == {"moisture_pcnt"}


def _substitute(query: str, plantation: str) -> str:
    values = {
        "plantation": plantation,
        "gateway": ".*",
        "sensor": ".*",
        "kind": "soil",
        "value": "moisture_pct",
    }
    query = query.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "1m")
    return VARIABLE.sub(lambda m: values[m.group(0).strip("${}")], query)


@pytest.mark.integration
@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_runs_on_real_influxdb(path: Path, stack: Any, influx_db: str) -> None:
    now = time.time_ns()
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    reading = Reading(
        sensor="s-1",
        field="north",
        kind="soil",
        ts=now,
        clock="unsynced",
        seq=1,
        values={"moisture_pct": 20.0},
    )
    gap = Gap(sensor="s-1", start=now - 10**9, end=now, reason="sensor_silent")
    batch = Batch(gateway="gw-1", boot="b", batch="b1", sent=now, readings=[reading], gaps=[gap])
    alert = Alert("dry", "warning", "firing", "p-1", "gw-1", "s-1", "moisture_pct", 20.0, "<",
                  30.0, 0.0, now, now)  # fmt: skip
    writer.write("\n".join([*batch_to_lines("p-1", batch), alert.line()]).encode())
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    dash = json.loads(path.read_text())
    answered = {}
    for query in _queries(dash) + [v["query"] for v in dash["templating"]["list"]]:
        answered[query] = q.query(_substitute(query, "p-1"))  # InfluxQueryError fails the test
    panel_queries = [t["query"] for p in dash["panels"] for t in p["targets"]]
    readings_panel = panel_queries[0]
    assert answered[readings_panel], "the readings panel found no data"
