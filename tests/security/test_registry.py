"""The device registry, provisioning and the `farmtel devices|broker|pki` commands (no servers)."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from cli import app
from contract.ids import InvalidIdentifier
from contract.signing import key_id, load_private_key, load_public_key
from ingest.broker_auth import check_password, render_acl, render_password_file
from ingest.devices import BrokerAddress, add_gateway, rotate_gateway
from ingest.pki import PkiError, issue, make_ca, parse_hosts
from ingest.registry import Registry, RegistryError

SECRET_FILES = ("mqtt.password", "signing.key", "gateway.toml")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _secrets_of(bundle: Path) -> list[str]:
    """The password and the private key's base64 body: what must never leak."""
    key_lines = (bundle / "signing.key").read_text().splitlines()
    return [(bundle / "mqtt.password").read_text().strip(), *key_lines[1:-1]]


def test_add_writes_a_private_bundle_and_registers_only_public_parts(tmp_path: Path) -> None:
    path = tmp_path / "state" / "registry.sqlite"
    with Registry(path) as reg:
        bundle = add_gateway(reg, "hlj-001", "gw-01", tmp_path / "b", actor="alice")
        record = reg.gateway("hlj-001", "gw-01")
        assert record is not None
        export = reg.export("hlj-001")
        passwd = render_password_file(reg)
    assert _mode(path) == 0o600
    assert _mode(bundle.path) == 0o700
    for name in SECRET_FILES:
        assert _mode(bundle.path / name) == 0o600, name
    key = load_private_key(bundle.path / "signing.key")
    assert record.keys == {key_id(key.public_key()): record.keys[bundle.key_id]}
    assert record.mqtt_username == "hlj-001.gw-01"
    assert record.revoked_at_ns is None
    password = (bundle.path / "mqtt.password").read_text().strip()
    assert len(password) >= 40
    user, _, hashed = passwd.strip().partition(":")
    assert user == "hlj-001.gw-01" and check_password(password, hashed)
    # The export is plain JSON, has the public key, and holds no secret, not even the hash.
    text = json.dumps(export)
    for secret in [*_secrets_of(bundle.path), hashed]:
        assert secret not in text
    (gw,) = export["gateways"]
    assert load_public_key(gw["keys"][0]["public_key"]).public_bytes_raw() == (
        key.public_key().public_bytes_raw()
    )
    assert [e["event"] for e in export["history"]] == ["plantation_add", "install"]
    assert export["history"][1]["actor"] == "alice"
    # The stub points at the bundle's files.
    stub = (bundle.path / "gateway.toml").read_text()
    assert f'signing_key_file = "{bundle.path.absolute() / "signing.key"}"' in stub
    assert 'username = "hlj-001.gw-01"' in stub
    # Secrets only in the secret files: not in the stub, the public key or the registry.
    registry_bytes = path.read_bytes()
    for secret in _secrets_of(bundle.path):
        assert secret not in stub
        assert secret not in (bundle.path / "signing.pub").read_text()
        assert secret.encode() not in registry_bytes


def test_rotate_keeps_old_keys_and_revoke_drops_the_login(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite") as reg:
        first = add_gateway(reg, "p1", "g1", tmp_path / "b1")
        second = rotate_gateway(reg, "p1", "g1", tmp_path / "b2", grace_ns=0)
        record = reg.gateway("p1", "g1")
        assert record is not None
        assert set(record.keys) == {first.key_id, second.key_id}
        assert set(record.active_keys(record.key_records[-1].valid_from_ns + 1)) == {second.key_id}
        new_pw = (tmp_path / "b2" / "mqtt.password").read_text().strip()
        old_pw = (tmp_path / "b1" / "mqtt.password").read_text().strip()
        (entry,) = reg.password_entries()
        assert check_password(new_pw, entry[1]) and not check_password(old_pw, entry[1])
        reg.revoke("p1", "g1", "stolen")
        assert reg.password_entries() == []
        assert "p1.g1" not in render_acl(reg)
        record = reg.gateway("p1", "g1")
        assert record is not None and record.revoked_at_ns is not None
        assert len(record.keys) == 2  # still verifiable
        with pytest.raises(RegistryError, match="revoked"):
            rotate_gateway(reg, "p1", "g1", tmp_path / "b3")
        with pytest.raises(RegistryError, match="revoked"):
            reg.revoke("p1", "g1")
        events = [e.event for e in reg.history("p1")]
    assert events == ["plantation_add", "install", "rotate", "revoke"]
    assert not (tmp_path / "b3").exists()


def test_history_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with Registry(path) as reg:
        add_gateway(reg, "p1", "g1", tmp_path / "b1")
    with sqlite3.connect(path) as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE history SET actor = 'mallory'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM history")


def test_sensors_and_fields_are_in_the_export(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite") as reg:
        add_gateway(reg, "p1", "g1", tmp_path / "b1")
        reg.add_field("p1", "north")
        reg.install_sensor("p1", "g1", "soil-1", "north", "soil")
        reg.remove_sensor("p1", "g1", "soil-1")
        with pytest.raises(RegistryError, match="not installed"):
            reg.remove_sensor("p1", "g1", "soil-1")
        export = reg.export("p1")
    assert export["fields"] == ["north"]
    assert export["sensors"][0]["removed_at_ns"] is not None
    assert [e["event"] for e in export["history"]][-3:] == [
        "field_add",
        "sensor_install",
        "sensor_remove",
    ]


@pytest.mark.parametrize(
    ("plantation", "gateway"),
    [("P1", "g1"), ("p1", "g 1"), ("p1", "g1;DROP"), ("", "g1"), ("p1", "../etc")],
)
def test_bad_ids_are_refused_before_anything_is_written(
    tmp_path: Path, plantation: str, gateway: str
) -> None:
    with (
        Registry(tmp_path / "r.sqlite") as reg,
        pytest.raises(InvalidIdentifier, match="must match"),
    ):
        add_gateway(reg, plantation, gateway, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_add_refuses_duplicates_and_non_empty_bundle_folders(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite") as reg:
        add_gateway(reg, "p1", "g1", tmp_path / "b1")
        with pytest.raises(RegistryError, match="already registered"):
            add_gateway(reg, "p1", "g1", tmp_path / "b2")
        with pytest.raises(RegistryError, match="not empty"):
            add_gateway(reg, "p1", "g2", tmp_path / "b1")
        assert reg.gateway("p1", "g2") is None
        with pytest.raises(RegistryError, match="already registered"):
            reg.rotate(
                "p1",
                "g1",
                reg.gateway("p1", "g1").key_records[0].public_key,
                None,
                "x",  # type: ignore[union-attr]
            )


def test_missing_registry_is_not_created_when_reading(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="does not exist"):
        Registry(tmp_path / "nope.sqlite", create=False)
    assert not (tmp_path / "nope.sqlite").exists()


def test_pki_refusals() -> None:
    ca = make_ca()
    with pytest.raises(PkiError, match="at least one --host"):
        issue(ca, "broker", hosts=[], server=True)
    with pytest.raises(PkiError, match="not a host name"):
        parse_hosts(["bad host"])
    with pytest.raises(PkiError, match="1 to 64"):
        make_ca("x" * 65)
    assert len(parse_hosts(["::1", "10.0.0.1", "mqtt.example.org"])) == 3


# -- the commands ------------------------------------------------------------------------


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_flow_add_list_rotate_revoke_export_broker_config(tmp_path: Path) -> None:
    reg = str(tmp_path / "registry.sqlite")
    pki = tmp_path / "pki"
    assert _run("pki", "init", "--dir", str(pki))[0] == 0
    assert (
        _run("pki", "broker", "--dir", str(pki), "--host", "mqtt.farm", "--host", "10.1.1.1")[0]
        == 0
    )
    code, out = _run("pki", "init", "--dir", str(pki))
    assert code == 2 and "never overwritten" in out
    code, out = _run(
        "devices", "add", "--plantation", "p1", "--gateway", "g1", "--out", str(tmp_path / "b1"),
        "--registry", reg, "--pki", str(pki), "--client-cert", "--broker-host", "mqtt.farm",
    )  # fmt: skip
    assert code == 0, out
    assert _mode(tmp_path / "b1" / "client.key") == 0o600
    assert 'host = "mqtt.farm"' in (tmp_path / "b1" / "gateway.toml").read_text()
    code, out = _run("devices", "list", "--registry", reg)
    assert code == 0 and "p1" in out and "active" in out
    code, out = _run(
        "devices", "rotate", "--plantation", "p1", "--gateway", "g1", "--out",
        str(tmp_path / "b2"), "--registry", reg, "--grace", "1h",
    )  # fmt: skip
    assert code == 0, out
    code, out = _run("broker", "config", "--out", str(tmp_path / "broker"), "--registry", reg)
    assert code == 0, out
    broker = tmp_path / "broker"
    for name in ("passwd", "acl", "farmtel-ingest.password"):
        assert _mode(broker / name) == 0o600, name
    acl = (broker / "acl").read_text()
    assert "user p1.g1\ntopic write farmtel/v1/p1/g1/telemetry\n" in acl
    assert "%u" not in acl and "%c" not in acl
    code, out = _run(
        "devices", "revoke", "--plantation", "p1", "--gateway", "g1", "--registry", reg
    )
    assert code == 0, out
    code, out = _run("devices", "list", "--json", "--registry", reg)
    (entry,) = json.loads(out)
    assert entry["revoked_at_ns"] is not None and len(entry["keys"]) == 2
    code, out = _run("devices", "export", "--plantation", "p1", "--registry", reg)
    assert code == 0
    for bundle in (tmp_path / "b1", tmp_path / "b2"):
        for secret in _secrets_of(bundle):
            assert secret not in out
    for secret in _secrets_of(tmp_path / "b1")[1:]:  # the key stays out of the broker files
        assert secret not in acl and secret not in (broker / "passwd").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["devices", "add", "--plantation", "Bad", "--gateway", "g1"], "must match"),
        (["devices", "revoke", "--plantation", "p1", "--gateway", "nope"], "not registered"),
        (
            [
                "devices",
                "rotate",
                "--plantation",
                "p1",
                "--gateway",
                "g1",
                "--out",
                "x",
                "--grace",
                "soon",
            ],
            "not a duration",
        ),
        (["devices", "list", "--plantation", "p1;DROP"], "must match"),
        (["pki", "broker", "--dir", "NOPKI", "--host", "h"], "farmtel pki init"),
        (["pki", "client", "--dir", "NOPKI", "--name", "a b"], "--name"),
        (["devices", "add", "--plantation", "p1", "--gateway", "g2", "--client-cert"], "--pki"),
    ],
)
def test_cli_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    reg = tmp_path / "registry.sqlite"
    with Registry(reg) as r:
        add_gateway(r, "p1", "g1", tmp_path / "existing", broker=BrokerAddress())
    args = [str(tmp_path / a) if a in ("NOPKI", "x") else a for a in args]
    code, out = _run(*args, "--registry", str(reg)) if args[0] == "devices" else _run(*args)
    assert code == 2, out
    assert message in out


def test_private_key_is_ed25519_pkcs8(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite") as reg:
        bundle = add_gateway(reg, "p1", "g1", tmp_path / "b")
    key = load_private_key(bundle.path / "signing.key")
    assert isinstance(key, Ed25519PrivateKey)
    assert (bundle.path / "signing.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
