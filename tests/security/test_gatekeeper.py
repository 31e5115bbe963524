"""The ingest refuses batches its registry does not vouch for: real broker, ingest, InfluxDB."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.settings import ConfigError
from contract.signing import batch_message, sign
from contract.topics import telemetry_topic
from contract.wire import encode_batch
from devstack import StackInfo
from ingest.config import parse_ingest_config
from ingest.devices import BrokerAddress, add_gateway, rotate_gateway
from ingest.gatekeeper import BatchRefused, Gatekeeper
from ingest.influx import InfluxQuery, InfluxSettings
from ingest.registry import Registry
from ingest.service import Ingest
from tests.security.batches import make_batch, signed
from tests.support.mqtt import TestClient
from tests.support.procs import wait_until


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.sqlite"
    with Registry(path) as reg:
        for p, g in (("farm-a", "gw-1"), ("farm-b", "gw-1"), ("farm-a", "gw-gone")):
            add_gateway(reg, p, g, tmp_path / f"bundle-{p}-{g}", broker=BrokerAddress(tls=False))
        reg.revoke("farm-a", "gw-gone", actor="test")
    return path


def _key(tmp: Path, p: str, g: str) -> Path:
    return tmp / f"bundle-{p}-{g}" / "signing.key"


def test_ingest_refuses_forged_altered_replayed_unknown_revoked_and_unsigned(
    stack: StackInfo, influx_db: str, registry: Path, tmp_path: Path
) -> None:
    cfg = parse_ingest_config(
        {
            "ingest": {
                "state_dir": str(tmp_path / "ingest"),
                "share_group": f"g-{influx_db}",
                "registry_path": str(registry),
            },
            "mqtt": {"host": stack.mqtt_host, "port": stack.mqtt_port, "client_id": influx_db},
            "influxdb": {"url": stack.influx_url, "database": influx_db},
        },
        "test",
        environ={},
    )
    q = InfluxQuery(InfluxSettings(url=stack.influx_url, database=influx_db))
    q.create_database(influx_db)
    ingest = Ingest(cfg)
    assert ingest.gatekeeper.enabled  # the registry exists: checks are on by default
    ingest.start()
    pub = TestClient(stack.mqtt_host, stack.mqtt_port)
    key_a = _key(tmp_path, "farm-a", "gw-1")
    topic_a = telemetry_topic("farm-a", "gw-1")
    topic_b = telemetry_topic("farm-b", "gw-1")
    try:
        wait_until(ingest.connected.is_set, 15, "the ingest to connect")
        good = signed(make_batch("gw-1", "s-good"), "farm-a", key_a)
        forged_key = Ed25519PrivateKey.generate()
        forged = make_batch("gw-1", "s-forged")
        forged = forged.model_copy(
            update={"sig": sign(forged_key, batch_message("farm-a", forged))}
        )
        altered_src = signed(make_batch("gw-1", "s-altered"), "farm-a", key_a)
        raw = orjson.loads(encode_batch(altered_src))
        raw["readings"][0]["values"]["moisture_pct"] = 99.0
        altered = orjson.dumps(raw)
        # A batch correctly signed for farm-a, replayed on farm-b's topic (same gateway id).
        replayed = signed(make_batch("gw-1", "s-replayed"), "farm-a", key_a)
        claims = orjson.loads(encode_batch(signed(make_batch("gw-1", "s-claim"), "farm-a", key_a)))
        claims["plantation"] = "farm-b"
        cases: list[tuple[str, bytes, str]] = [
            ("forged", encode_batch(forged), "not registered"),
            ("altered", altered, "does not match"),
            ("replayed", encode_batch(replayed), "not registered for this gateway"),
            ("claims plantation", orjson.dumps(claims), "plantation"),
            (
                "unknown",
                encode_batch(signed(make_batch("gw-9", "s-unknown"), "farm-a", key_a)),
                "not registered for plantation 'farm-a'",
            ),
            (
                "revoked",
                encode_batch(
                    signed(
                        make_batch("gw-gone", "s-revoked"),
                        "farm-a",
                        _key(tmp_path, "farm-a", "gw-gone"),
                    )
                ),
                "revoked",
            ),
            ("unsigned", encode_batch(make_batch("gw-1", "s-unsigned")), "not signed"),
        ]
        for name, payload, _ in cases:
            topic = topic_b if name == "replayed" else topic_a
            if name in ("unknown",):
                topic = telemetry_topic("farm-a", "gw-9")
            if name == "revoked":
                topic = telemetry_topic("farm-a", "gw-gone")
            pub.publish(topic, payload)
        pub.publish(topic_a, encode_batch(good))
        wait_until(
            lambda: (
                ingest.counters["batches_stored"] >= 1
                and ingest.counters["dead_letters"] >= len(cases)
            ),
            20,
            "the good batch stored and every bad one dead-lettered",
        )
    finally:
        pub.close()
        ingest.stop()
    assert ingest.counters["batches_stored"] == 1
    assert ingest.counters["refused_batches"] == len(cases) - 1  # "claims" fails the schema
    with sqlite3.connect(tmp_path / "ingest" / "deadletter.sqlite") as db:
        reasons = [r[0] for r in db.execute("SELECT reason FROM dead_letters ORDER BY id")]
    assert len(reasons) == len(cases)
    for (name, _, expected), reason in zip(cases, reasons, strict=True):
        assert expected in reason, (name, reason)
        if name == "revoked":  # a time a person reads, not ns since the epoch
            assert re.search(r"was revoked at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reason), reason
    series = q.query('SELECT * FROM "soil"')
    sensors = {dict(zip(s.columns, v, strict=True))["sensor"] for s in series for v in s.values}
    assert sensors == {"s-good"}, "a refused batch was stored"
    batches = q.query('SELECT count("readings") FROM "farmtel_batch"')
    assert batches[0].values[0][1] == 1


def test_rotation_grace_then_old_key_refused_for_new_batches(
    registry: Path, tmp_path: Path
) -> None:
    old_key = _key(tmp_path, "farm-a", "gw-1")
    now = [10**18]
    with Registry(registry) as reg:
        rotated = rotate_gateway(
            reg, "farm-a", "gw-1", tmp_path / "new", grace_ns=60 * 10**9, broker=BrokerAddress()
        )
    gate = Gatekeeper(Registry(registry, create=False), clock=lambda: now[0])
    record = gate.gateway("farm-a", "gw-1")
    assert record is not None and len(record.keys) == 2
    new_key = tmp_path / "new" / "signing.key"
    old_batch = signed(make_batch("gw-1", "s"), "farm-a", old_key)
    new_batch = signed(make_batch("gw-1", "s"), "farm-a", new_key)
    now[0] = record.registered_at_ns + 10**9
    valid_until = record.key_records[0].valid_until_ns
    assert valid_until is not None
    now[0] = valid_until - 1
    gate.check("farm-a", old_batch)  # within the grace period
    gate.check("farm-a", new_batch)
    now[0] = valid_until
    with pytest.raises(BatchRefused, match="rotated out") as err:
        gate.check("farm-a", old_batch)
    assert err.value.kind == "expired_key"
    gate.check("farm-a", new_batch)
    # The old key is still there for checking data stored before the rotation.
    assert rotated.record.keys.keys() == record.keys.keys()
    assert gate.refused == {"expired_key": 1}
    gate.close()


def test_revocation_in_another_process_takes_effect_on_the_next_batch(
    registry: Path, tmp_path: Path
) -> None:
    gate = Gatekeeper(Registry(registry, create=False))
    batch = signed(make_batch("gw-1", "s"), "farm-b", _key(tmp_path, "farm-b", "gw-1"))
    gate.check("farm-b", batch)
    with Registry(registry) as other:
        other.revoke("farm-b", "gw-1", "lost", actor="test")
    with pytest.raises(BatchRefused, match="revoked"):
        gate.check("farm-b", batch)
    gate.close()


def test_require_signatures_modes(tmp_path: Path, registry: Path) -> None:
    missing = tmp_path / "none.sqlite"
    assert not Gatekeeper.open(missing, None).enabled  # dev mode
    with pytest.raises(ConfigError, match="require_signatures"):
        Gatekeeper.open(missing, True)
    assert not missing.exists(), "opening must not create an empty registry"
    assert Gatekeeper.open(registry, None).enabled
    assert not Gatekeeper.open(registry, False).enabled
    unsigned = make_batch("gw-x", "s")
    Gatekeeper.open(missing, None).check("any", unsigned)  # accepted in dev mode


def test_unknown_gateway_message_names_where_it_is_registered(
    registry: Path, tmp_path: Path
) -> None:
    gate = Gatekeeper(Registry(registry, create=False))
    batch = signed(make_batch("gw-1", "s"), "farm-c", _key(tmp_path, "farm-a", "gw-1"))
    with pytest.raises(BatchRefused, match="registered under farm-a, farm-b"):
        gate.check("farm-c", batch)
    gate.close()


def test_batch_replayed_under_another_plantation_fails_even_with_the_same_key(
    registry: Path, tmp_path: Path
) -> None:
    """The plantation is part of the signed message: even a gateway registered in two
    plantations with one key cannot have its farm-a batches stored under farm-x."""
    from contract.signing import load_private_key

    key_file = _key(tmp_path, "farm-a", "gw-1")
    with Registry(registry) as reg:
        reg.add_gateway(
            "farm-x", "gw-1", load_private_key(key_file).public_key(), None, "pw:sha256:0", "t"
        )
    gate = Gatekeeper(Registry(registry, create=False))
    batch = signed(make_batch("gw-1", "s"), "farm-a", key_file)
    gate.check("farm-a", batch)
    with pytest.raises(BatchRefused, match="does not match the batch"):
        gate.check("farm-x", batch)
    gate.close()
