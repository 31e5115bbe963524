"""The operator's admin commands must not break a running broker or ingest by accident.

`farmtel broker config` against a missing registry, re-rendering files the operator handed
to mosquitto, rotation hints, revoked ids, exports of unknown plantations (no servers).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from cli import app
from contract.wire import iso_utc
from ingest.broker_auth import check_password, setup_ingest_user, write_private
from ingest.config import IngestConfig
from ingest.devices import add_gateway
from ingest.registry import Registry, RegistryError

ROOT = Path(__file__).resolve().parents[2]
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Path, Path]:
    """A registry with one gateway and the broker folder rendered from it."""
    reg = tmp_path / "real" / "registry.sqlite"
    with Registry(reg) as r:
        add_gateway(r, "p1", "g1", tmp_path / "bundle")
    broker = tmp_path / "broker"
    code, out = _run("broker", "config", "--out", str(broker), "--registry", str(reg))
    assert code == 0, out
    return reg, broker


def test_broker_config_refuses_a_missing_registry_and_leaves_the_broker_files(
    tmp_path: Path, rendered: tuple[Path, Path]
) -> None:
    _, broker = rendered
    before = {p.name: p.read_bytes() for p in broker.iterdir()}
    wrong = tmp_path / "ingest.toml"
    wrong.write_text(f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n')
    code, out = _run("broker", "config", "--out", str(broker), "-c", str(wrong))
    assert code == 2, out
    assert "does not exist; create it with" in out
    assert not (tmp_path / "state").exists()  # no empty registry made
    assert {p.name: p.read_bytes() for p in broker.iterdir()} == before


def test_the_default_registry_path_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "default" / "registry.sqlite"
    monkeypatch.setattr(IngestConfig, "registry_path", lambda self: default)
    code, out = _run("broker", "config", "--out", str(tmp_path / "broker"))
    assert code == 2, out
    assert str(default) in out and "default path" in out and "--registry FILE" in out
    assert not default.exists() and not (tmp_path / "broker").exists()


def test_an_existing_ingest_password_is_never_overwritten(tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    broker.mkdir()
    pw_file = broker / "farmtel-ingest.password"
    write_private(pw_file, "the-running-ingests-password\n")
    reg = tmp_path / "registry.sqlite"
    with Registry(reg) as r:  # a rebuilt registry: no ingest user in it
        add_gateway(r, "p1", "g1", tmp_path / "bundle")
    code, out = _run("broker", "config", "--out", str(broker), "--registry", str(reg))
    assert code == 0, out
    assert "already in" in out and "created broker user" not in out
    assert pw_file.read_text() == "the-running-ingests-password\n"
    user, _, hashed = next(
        line for line in (broker / "passwd").read_text().splitlines() if line.startswith("farm")
    ).partition(":")
    assert user == "farmtel-ingest" and check_password("the-running-ingests-password", hashed)
    # The registry has the user now, the file holds another password: warn, keep the file.
    write_private(pw_file, "another\n")
    code, out = _run("broker", "config", "--out", str(broker), "--registry", str(reg))
    assert code == 0 and "warning:" in out and "does not hold the password" in out, out
    assert pw_file.read_text() == "another\n"


def test_an_unusable_ingest_password_file_is_refused(tmp_path: Path) -> None:
    write_private(tmp_path / "farmtel-ingest.password", "two words\n")
    with Registry(tmp_path / "registry.sqlite") as reg:
        with pytest.raises(ValueError) as err:
            setup_ingest_user(reg, tmp_path, "farmtel-ingest")
        assert reg.service_users() == []
    assert "does not hold one password" in str(err.value)


@as_root
def test_rerendered_broker_files_keep_the_owner_the_operator_gave_them(
    tmp_path: Path, rendered: tuple[Path, Path]
) -> None:
    reg, broker = rendered
    os.chown(broker / "passwd", 4321, 4322)  # chown mosquitto: DIR
    os.chown(broker / "acl", 0, 4322)  # or root:mosquitto with mode 0640
    (broker / "acl").chmod(0o644)  # ... never more than that for others
    code, out = _run("broker", "config", "--out", str(broker), "--registry", str(reg))
    assert code == 0, out
    assert _owner_mode(broker / "passwd") == (4321, 4322, 0o600)
    assert _owner_mode(broker / "acl") == (0, 4322, 0o640)
    assert "p1.g1:" in (broker / "passwd").read_text()
    # A file written for the first time is ours, mode 0600; a public one keeps its mode.
    write_private(tmp_path / "new", "x")
    assert _owner_mode(tmp_path / "new") == (0, 0, 0o600)
    write_private(tmp_path / "cert.pem", "a", mode=0o644)
    os.chown(tmp_path / "cert.pem", 4321, 4321)
    write_private(tmp_path / "cert.pem", "b", mode=0o644)
    assert _owner_mode(tmp_path / "cert.pem") == (4321, 4321, 0o644)


def test_rotate_says_to_install_the_bundle_before_the_broker_reload(
    rendered: tuple[Path, Path], tmp_path: Path
) -> None:
    reg, _ = rendered
    code, out = _run(
        "devices", "rotate", "--plantation", "p1", "--gateway", "g1",
        "--out", str(tmp_path / "b2"), "--registry", str(reg),
    )  # fmt: skip
    assert code == 0, out
    assert "signing key only" in out and "broker password changed" in out
    (hint,) = [line for line in out.splitlines() if line.startswith("next:")]
    assert hint.index("install the bundle") < hint.index("farmtel broker config")
    assert f"--registry {reg}" in hint


def test_a_revoked_gateway_id_is_refused_as_revoked_with_an_iso_time(
    rendered: tuple[Path, Path], tmp_path: Path
) -> None:
    reg, _ = rendered
    assert _run("devices", "revoke", "--plantation", "p1", "--gateway", "g1",
                "--registry", str(reg))[0] == 0  # fmt: skip
    code, out = _run(
        "devices", "add", "--plantation", "p1", "--gateway", "g1",
        "--out", str(tmp_path / "b2"), "--registry", str(reg),
    )  # fmt: skip
    assert code == 2, out
    assert "was revoked at" in out and "new --gateway id" in out and "rotate" not in out
    assert ISO_UTC.search(out), out
    assert not (tmp_path / "b2").exists()
    code, out = _run(
        "devices", "rotate", "--plantation", "p1", "--gateway", "g1",
        "--out", str(tmp_path / "b3"), "--registry", str(reg),
    )  # fmt: skip
    assert code == 2 and ISO_UTC.search(out) and " ns" not in out, out
    # The registry itself says the same to its Python callers.
    with Registry(reg) as r:
        record = r.gateway("p1", "g1")
        assert record is not None and record.revoked_at_ns is not None
        with pytest.raises(RegistryError, match=r"was revoked at .*new --gateway id"):
            r.add_gateway(
                "p1", "g1", Ed25519PrivateKey.generate().public_key(), "$7$x", "pw:sha256:0"
            )
    assert iso_utc(record.revoked_at_ns) in out


def test_export_of_an_unknown_plantation_is_an_error(
    rendered: tuple[Path, Path], tmp_path: Path
) -> None:
    reg, _ = rendered
    code, out = _run("devices", "export", "--plantation", "nope", "--registry", str(reg))
    assert code == 2, out
    assert "'nope'" in out and "p1" in out and "{" not in out
    # A plantation the registry knows without any gateway exports fine (empty list).
    with Registry(reg) as r:
        r.add_field("p2", "north")
    code, out = _run("devices", "export", "--plantation", "p2", "--registry", str(reg))
    assert code == 0 and '"gateways": []' in out and '"north"' in out, out


def test_broker_config_help_names_the_conf_with_password_file() -> None:
    code, out = _run("broker", "config", "--help")
    assert code == 0
    conf = (ROOT / "broker_config" / "mosquitto-security.conf").read_text()
    assert "\npassword_file " in conf and "broker_config/mosquitto-security.conf" in out
    assert "broker_config/mosquitto.conf" not in out


def _doc_commands() -> list[list[str]]:
    """The shell commands of docs/security.md's "Registering a gateway" block."""
    text = (ROOT / "docs" / "security.md").read_text()
    block = text.split("## Registering a gateway", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]


def test_the_docs_put_the_tls_and_broker_files_where_the_conf_reads_them() -> None:
    conf = dict(
        line.split(None, 1)
        for line in (ROOT / "broker_config" / "mosquitto-security.conf").read_text().splitlines()
        if line and not line.startswith("#") and " " in line
    )
    commands = _doc_commands()
    (pki_broker,) = [c for c in commands if c[:3] == ["farmtel", "pki", "broker"]]
    tls_dir = Path(pki_broker[pki_broker.index("--out") + 1])
    assert Path(conf["certfile"]) == tls_dir / "broker.crt"
    assert Path(conf["keyfile"]) == tls_dir / "broker.key"
    assert ["cp", "/etc/farmtel/pki/ca.crt", f"{tls_dir}/"] in commands
    assert Path(conf["cafile"]) == tls_dir / "ca.crt"
    (broker_config,) = [c for c in commands if c[:3] == ["farmtel", "broker", "config"]]
    out = Path(broker_config[broker_config.index("--out") + 1])
    assert Path(conf["password_file"]) == out / "passwd"
    assert Path(conf["acl_file"]) == out / "acl"
