"""Alert rules: when they fire and resolve, what they emit, and configs that make no sense."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from contract.settings import ConfigError
from contract.wire import Batch, Reading
from ingest.alerts import AlertEngine, AlertRule
from ingest.config import parse_ingest_config

S = 1_000_000_000
P = "hlj-al-001"


def _batch(points: list[tuple[str, int, float]], value: str = "moisture_pct") -> Batch:
    return Batch(
        gateway="gw-1",
        boot="b",
        batch="x",
        sent=1,
        readings=[
            Reading(
                sensor=sensor,
                field="north",
                kind="soil",
                ts=ts,
                clock="synced",
                seq=i,
                values={value: v},
            )
            for i, (sensor, ts, v) in enumerate(points)
        ],
    )


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.recorded: list[bytes] = []
        self.fail = fail

    def publish(self, topic: str, payload: bytes) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.published.append((topic, payload))

    def record(self, lines: bytes) -> None:
        if self.fail:
            raise OSError("influxdb gone")
        self.recorded.append(lines)


def _engine(sink: Sink, **rule: Any) -> AlertEngine:
    base: dict[str, Any] = {"name": "dry", "value": "moisture_pct", "op": "<", "threshold": 18.0}
    return AlertEngine([AlertRule(**{**base, **rule})], sink.publish, sink.record)


def test_fires_only_after_holding_for_s_and_resolves_once() -> None:
    sink = Sink()
    engine = _engine(sink, for_s=600)
    # Under 18 % from t=0; at t=300 still not 10 minutes; at t=600 it fires (once).
    got = engine.observe(P, _batch([("s-1", 0, 17.0), ("s-1", 300 * S, 16.0)]))
    assert got == []
    got = engine.observe(P, _batch([("s-1", 600 * S, 15.0), ("s-1", 700 * S, 14.0)]))
    assert [(a.state, a.ts, a.since_ns) for a in got] == [("firing", 600 * S, 0)]
    got = engine.observe(P, _batch([("s-1", 800 * S, 25.0), ("s-1", 900 * S, 26.0)]))
    assert [(a.state, a.value) for a in got] == [("resolved", 25.0)]
    assert engine.fired == 1 and engine.resolved == 1
    topic, payload = sink.published[0]
    assert topic == f"farmtel/v1/{P}/gw-1/alerts"
    assert orjson.loads(payload)["rule"] == "dry"
    assert sink.recorded[0].startswith(b"farmtel_alert,")
    assert b"state=firing" in sink.recorded[0]


def test_a_break_restarts_the_count() -> None:
    engine = _engine(Sink(), for_s=600)
    points = [("s-1", 0, 10.0), ("s-1", 500 * S, 30.0), ("s-1", 900 * S, 10.0)]
    assert engine.observe(P, _batch(points)) == []  # 900 s in all, never 600 s in one stretch
    [alert] = engine.observe(P, _batch([("s-1", 1500 * S, 10.0)]))
    assert alert.since_ns == 900 * S


def test_sensor_glob_plantation_and_value_filter() -> None:
    engine = _engine(Sink(), sensor="soil-*", plantation=P)
    assert engine.observe("other", _batch([("soil-1", 1, 1.0)])) == []
    assert engine.observe(P, _batch([("air-1", 1, 1.0)])) == []
    assert engine.observe(P, _batch([("soil-1", 1, 1.0)], value="temp_c")) == []
    [alert] = engine.observe(P, _batch([("soil-1", 2, 1.0)]))
    assert alert.sensor == "soil-1"


def test_each_sensor_has_its_own_state_and_old_readings_are_ignored() -> None:
    engine = _engine(Sink())
    got = engine.observe(P, _batch([("s-1", 10, 1.0), ("s-2", 10, 1.0)]))
    assert sorted(a.sensor for a in got) == ["s-1", "s-2"]
    # A redelivered older reading above the threshold must not resolve it.
    assert engine.observe(P, _batch([("s-1", 5, 99.0)])) == []
    [resolved] = engine.observe(P, _batch([("s-1", 11, 99.0)]))
    assert resolved.state == "resolved"


@pytest.mark.parametrize(("op", "value", "fires"), [("<=", 0.0, True), (">", 0.0, False)])
def test_operators(op: str, value: float, fires: bool) -> None:
    engine = _engine(Sink(), op=op, threshold=0.0)
    assert bool(engine.observe(P, _batch([("s-1", 1, value)]))) is fires


def test_failing_publish_and_record_are_counted_not_raised() -> None:
    engine = _engine(Sink(fail=True))
    [alert] = engine.observe(P, _batch([("s-1", 1, 1.0)]))
    assert alert.state == "firing" and engine.errors == 2


def test_frost_rule_from_toml_shape() -> None:
    cfg = parse_ingest_config(
        {
            "alerts": [
                {
                    "name": "frost",
                    "value": "air_temp_c",
                    "op": "<",
                    "threshold": 0,
                    "severity": "critical",
                }
            ]
        },
        "test",
        environ={},
    )
    assert cfg.alerts[0].name == "frost" and cfg.alerts[0].for_s == 0


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ({"op": "=="}, "alerts[0].op"),
        ({"value": "Temp C"}, "alerts[0].value"),
        ({"name": "Frost!"}, "alerts[0].name"),
        ({"threshold": "cold"}, "alerts[0].threshold"),
        ({"threshold": float("nan")}, "finite"),
        ({"for_s": -1}, "alerts[0].for_s"),
        ({"severity": "panic"}, "alerts[0].severity"),
        ({"colour": "red"}, "unknown key"),
        ({"plantation": "Bad Id"}, "alerts[0].plantation"),
    ],
)
def test_bad_rules_are_refused_with_their_key(rule: dict[str, Any], needle: str) -> None:
    base = {"name": "frost", "value": "air_temp_c", "op": "<", "threshold": 0.0}
    with pytest.raises(ConfigError) as err:
        parse_ingest_config({"alerts": [{**base, **rule}]}, "ingest.toml", environ={})
    assert needle in str(err.value)


def test_duplicate_rule_names_are_refused() -> None:
    rule = {"name": "frost", "value": "air_temp_c", "op": "<", "threshold": 0.0}
    with pytest.raises(ConfigError) as err:
        parse_ingest_config({"alerts": [rule, rule]}, "ingest.toml", environ={})
    assert "'frost' is used twice" in str(err.value)


def test_bad_metrics_listen_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        parse_ingest_config({"metrics": {"listen": "9108"}}, "ingest.toml", environ={})
    assert "metrics.listen" in str(err.value) and "host:port" in str(err.value)


def test_ingest_example_shows_every_alert_key() -> None:
    from tests.support.procs import REPO

    text = (REPO / "examples" / "ingest.toml").read_text()
    block = text[text.index("# [[alerts]]") :]
    missing = [k for k in AlertRule.model_fields if f"# {k} = " not in block]
    assert missing == [], f"examples/ingest.toml [[alerts]] does not show {missing}"
    # Uncommented, the example rules are a valid config.
    import tomllib

    toml = "\n".join(line[2:] for line in block.splitlines() if line.startswith("# "))
    cfg = parse_ingest_config(tomllib.loads(toml), "example", environ={})
    assert [r.name for r in cfg.alerts] == ["dry-soil", "frost"]


def test_an_alert_is_recorded_before_it_is_published() -> None:
    """Whoever acts on the MQTT alert finds it in `farmtel alerts list` already."""
    sink = Sink()
    recorded_at_publish: list[int] = []

    def publish(topic: str, payload: bytes) -> None:
        recorded_at_publish.append(len(sink.recorded))
        sink.publish(topic, payload)

    engine = AlertEngine(
        [AlertRule(name="dry", value="moisture_pct", op="<", threshold=18.0)],
        publish,
        sink.record,
    )
    got = engine.observe(P, _batch([("s-1", 0, 17.0)]))
    assert [a.state for a in got] == ["firing"]
    assert recorded_at_publish == [1]
