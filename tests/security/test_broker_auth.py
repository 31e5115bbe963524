"""Broker logins and TLS on the real Mosquitto running broker_config/mosquitto-security.conf."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ingest.broker_auth import PasswordHashError, check_password, hash_password
from ingest.pki import Issued, issue, save
from ingest.registry import Registry
from tests.security.conftest import SecureBroker, Session

pytestmark = pytest.mark.integration


def test_our_hash_is_the_format_mosquitto_passwd_writes(tmp_path: Path) -> None:
    pwfile = tmp_path / "pw"
    try:
        subprocess.run(
            ["mosquitto_passwd", "-c", "-b", str(pwfile), "alice", "s3cret:x"], check=True
        )
    except FileNotFoundError:
        pytest.skip("mosquitto_passwd is not installed (Debian package mosquitto)")
    user, _, theirs = pwfile.read_text().strip().partition(":")
    assert user == "alice"
    assert check_password("s3cret:x", theirs)
    assert not check_password("s3cret:y", theirs)
    ours = hash_password("s3cret:x")
    assert ours.split("$")[:3] == theirs.split("$")[:3]  # "", "7", iterations
    assert len(ours) == len(theirs)
    with pytest.raises(PasswordHashError, match=r"\$7\$"):
        check_password("x", "$6$abc$def")
    with pytest.raises(PasswordHashError, match="empty"):
        hash_password("")


def test_registered_gateways_and_ingest_log_in(secure_broker: SecureBroker) -> None:
    b = secure_broker
    for creds in b.gateways:
        s = Session(b.settings(creds.username, creds.password_file))
        try:
            assert not s.wait_connack().is_failure, creds.username
        finally:
            s.close()
    s = Session(b.settings("farmtel-ingest", b.ingest_password_file))
    try:
        assert not s.wait_connack().is_failure
    finally:
        s.close()


def _refused(b: SecureBroker, username: str | None, password: str | None, tmp: Path) -> str:
    pw_file = None
    if password is not None:
        pw_file = tmp / f"pw-{username}"
        pw_file.write_text(password)
        pw_file.chmod(0o600)
    s = Session(b.settings(username, pw_file))
    try:
        rc = s.wait_connack()
        assert rc.is_failure, f"{username!r} was let in"
        return str(rc)
    finally:
        s.close()


def test_anonymous_wrong_password_unknown_user_and_revoked_are_refused(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    b = secure_broker
    gw = b.gateways[0]
    reasons = {
        "anonymous": _refused(b, None, None, tmp_path),
        "wrong password": _refused(b, gw.username, gw.password + "x", tmp_path),
        "another gateway's password": _refused(b, gw.username, b.gateways[1].password, tmp_path),
        "unknown user": _refused(b, "plant-a.gw-9", gw.password, tmp_path),
        "revoked": _refused(b, b.revoked.username, b.revoked.password, tmp_path),
    }
    for what, reason in reasons.items():
        assert reason in ("Not authorized", "Bad user name or password"), (what, reason)


def test_revoke_and_reload_drops_the_open_session_and_the_login(
    secure_broker: SecureBroker,
) -> None:
    b = secure_broker
    gw = b.spare
    s = Session(b.settings(gw.username, gw.password_file))
    try:
        assert not s.wait_connack().is_failure
        with Registry(b.registry_path) as reg:
            reg.revoke(gw.plantation, gw.gateway, "test", actor="test")
        b.reload()
        # Mosquitto 2.0 re-checks connected clients against the reloaded password file.
        assert s.disconnected.wait(10), "the revoked gateway's open session survived a reload"
    finally:
        s.close()
    again = Session(b.settings(gw.username, gw.password_file))
    try:
        assert again.wait_connack().is_failure
    finally:
        again.close()


# -- TLS -------------------------------------------------------------------------------------


def _tls_connect(b: SecureBroker, port: int, ca: Path, host: str = "127.0.0.1") -> Session:
    gw = b.gateways[0]
    return Session(
        b.settings(gw.username, gw.password_file, tls=True, ca_file=ca, host=host, port=port)
    )


def test_tls_with_our_ca_and_the_right_host_name_works(secure_broker: SecureBroker) -> None:
    b = secure_broker
    for host in ("127.0.0.1", "localhost"):
        s = _tls_connect(b, b.tls_port, b.ca_file, host)
        try:
            assert not s.wait_connack().is_failure
        finally:
            s.close()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("untrusted CA", "certificate verify failed: self-signed certificate in certificate chain"),
        ("host name mismatch", "IP address mismatch"),
        ("expired certificate", "certificate has expired"),
    ],
)
def test_tls_refusals(secure_broker: SecureBroker, case: str, expected: str) -> None:
    b = secure_broker
    port, ca = {
        "untrusted CA": (b.tls_port, b.other_ca_file),
        "host name mismatch": (b.wrong_name_port, b.ca_file),
        "expired certificate": (b.expired_port, b.ca_file),
    }[case]
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        _tls_connect(b, port, ca)
    assert expected.split(":")[-1].strip() in str(err.value), str(err.value)


def test_tls_host_name_mismatch_by_dns_name(secure_broker: SecureBroker) -> None:
    b = secure_broker
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _tls_connect(b, b.wrong_name_port, b.ca_file, host="localhost")


def test_listener_requiring_a_client_certificate(secure_broker: SecureBroker) -> None:
    """`farmtel devices add --client-cert` certificates open a require_certificate listener;
    without one the handshake fails."""
    b = secure_broker
    tls = b.ca_file.parent
    ca = Issued(
        serialization.load_pem_private_key((tls / "ca.key").read_bytes(), None),  # type: ignore[arg-type]
        x509.load_pem_x509_certificate((tls / "ca.crt").read_bytes()),
    )
    gw = b.gateways[0]
    client = issue(ca, gw.username, server=False)
    save(client, b.dir / "client.crt", b.dir / "client.key")
    settings = b.settings(
        gw.username,
        gw.password_file,
        tls=True,
        ca_file=b.ca_file,
        port=b.client_cert_port,
        cert_file=b.dir / "client.crt",
        key_file=b.dir / "client.key",
    )
    s = Session(settings)
    try:
        assert not s.wait_connack().is_failure
    finally:
        s.close()
    without = settings.model_copy(update={"cert_file": None, "key_file": None})
    try:
        refused = Session(without)
    except (ssl.SSLError, OSError):
        return  # refused in the handshake (TLS 1.2)
    try:
        # TLS 1.3 finishes the client's side of the handshake first; the broker then drops
        # the connection, so no CONNACK ever accepts the client.
        got = refused.connected.wait(3)
        assert not got or refused.connack.is_failure
    finally:
        refused.close()


def test_user_name_is_the_client_id_on_the_tls_listener(secure_broker: SecureBroker) -> None:
    """use_username_as_clientid: a second login as the same gateway, whatever client id it
    asks for, takes over the first session instead of running beside it."""
    b = secure_broker
    gw = b.gateways[1]
    settings = b.settings(
        gw.username, gw.password_file, tls=True, ca_file=b.ca_file, port=b.tls_port
    )
    first = Session(settings, client_id="first-id")
    second = None
    try:
        assert not first.wait_connack().is_failure
        second = Session(settings, client_id="second-id")
        assert not second.wait_connack().is_failure
        assert first.disconnected.wait(10), "two sessions of one gateway ran side by side"
    finally:
        first.close()
        if second is not None:
            second.close()
