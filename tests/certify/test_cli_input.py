"""Bad input to export, verify and keys new: a clear error naming the option, exit 2."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

import cli
from certify.orgkey import new_key_file
from certify.report import ExportStats, SensorStats
from certify.rows import rfc3339_ns
from certify.verify import _SeqSet
from tests.certify.synth import GatewayPlan, registry_json

runner = CliRunner()


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(cli.app, list(args))
    return res.exit_code, res.output


@pytest.fixture
def org(tmp_path: Path) -> Path:
    path = tmp_path / "org.pem"
    new_key_file(path)
    return path


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    path = tmp_path / "reg.json"
    path.write_bytes(orjson.dumps(registry_json("p1", [GatewayPlan("gw-01")])))
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _export(tmp_path: Path, org: Path, reg: Path, *extra: str, **opts: str) -> tuple[int, str]:
    args = {
        "--plantation": "p1",
        "--from": "2026-05-01",
        "--to": "2026-05-02",
        "--out": str(tmp_path / "out"),
        "--key": str(org),
        "--registry": str(reg),
        "--url": f"http://127.0.0.1:{_closed_port()}",
    }
    args.update({f"--{k.replace('_', '-')}": v for k, v in opts.items()})
    flat = [x for kv in args.items() for x in kv]
    return _run("export", *flat, *extra, "--no-progress")


@pytest.mark.parametrize(
    ("opts", "said"),
    [
        ({"plantation": "P 1"}, "--plantation"),
        ({"to": "2026-04-01"}, "must be after --from"),
        ({"from": "yesterday"}, "--from 'yesterday' is not a date"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, org: Path, reg: Path, opts: dict[str, str], said: str
) -> None:
    code, out = _export(tmp_path, org, reg, **opts)
    assert code == 2, out
    assert said in out


def test_bad_org_key(tmp_path: Path, reg: Path) -> None:
    code, out = _export(tmp_path, tmp_path / "none.pem", reg)
    assert code == 2 and "--key" in out and "farmtel keys new" in out
    text = tmp_path / "text.pem"
    text.write_text("not a key\n")
    code, out = _export(tmp_path, text, reg)
    assert code == 2 and "not a readable PEM private key" in out


def test_bad_registry(tmp_path: Path, org: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    code, out = _export(tmp_path, org, bad)
    assert code == 2 and "--registry" in out and "not JSON" in out
    other = tmp_path / "other.json"
    other.write_bytes(orjson.dumps(registry_json("p2", [GatewayPlan("gw-01")])))
    code, out = _export(tmp_path, org, other)
    assert code == 2 and "is for plantation 'p2', not 'p1'" in out
    broken = registry_json("p1", [GatewayPlan("gw-01")])
    broken["gateways"][0]["keys"][0]["public_key"] = "AAAA"  # type: ignore[index]
    bad.write_bytes(orjson.dumps(broken))
    code, out = _export(tmp_path, org, bad)
    assert code == 2 and "not base64 of a 32-byte Ed25519 key" in out
    code, out = _export(tmp_path, org, tmp_path / "missing.json")
    assert code == 2 and "cannot read it" in out


def test_out_must_be_new_or_empty(tmp_path: Path, org: Path, reg: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    code, out = _export(tmp_path, org, reg)
    assert code == 2 and "not an empty folder" in out


def test_influxdb_down_is_a_runtime_error(tmp_path: Path, org: Path, reg: Path) -> None:
    code, out = _export(tmp_path, org, reg)
    assert code == 1 and "error:" in out and "InfluxDB" in out
    assert not (tmp_path / "out").exists(), "a failed export left a half bundle"


def test_verify_bad_input(tmp_path: Path) -> None:
    code, out = _run("verify", str(tmp_path / "nothing"))
    assert code == 2 and "is not a folder" in out
    (tmp_path / "b").mkdir()
    (tmp_path / "k.pub").write_text("garbage")
    code, out = _run("verify", str(tmp_path / "b"), "--pubkey", str(tmp_path / "k.pub"))
    assert code == 2 and "--pubkey" in out
    code, out = _run("verify", str(tmp_path / "b"))
    # Bad input, said once (not once per file it lacks).
    assert code == 2 and out.count("\n") == 1
    assert f"{tmp_path / 'b'} is not a bundle (no bagit.txt)" in out


def test_keys_new(tmp_path: Path) -> None:
    code, out = _run("keys", "new", "--out", str(tmp_path / "org.pem"))
    assert code == 0 and "org.pem.pub" in out
    assert stat.S_IMODE((tmp_path / "org.pem").stat().st_mode) == 0o600
    assert (tmp_path / "org.pem.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    code, out = _run("keys", "new", "--out", str(tmp_path / "org.pem"))
    assert code == 2 and "exists" in out


def test_seq_set_finds_holes_and_repeats() -> None:
    s = _SeqSet()
    for n in (5, 6, 7, 10, 9, 3, 12, 4):
        assert s.add(n)
    assert not s.add(6) and not s.add(3)
    assert list(s.holes()) == [(8, 8), (11, 11)]
    assert s.add(8) and s.add(11)
    assert list(s.holes()) == []


def test_median_interval_and_expected_count() -> None:
    day = 86_400 * 10**9
    stats = ExportStats(0, day // 2)
    s = SensorStats("gw", "s", "f", "soil", intervals_ms={60_000: 5, 120_000: 2, 1_000: 1})
    stats.sensors[("gw", "s")] = s
    s.per_day[0] = 300
    assert s.median_interval_s() == 60.0
    [(_, _, count, expected, pct)] = stats.completeness()
    assert (count, expected, pct) == (300, 720, 41.7)


def test_rfc3339_with_nanoseconds() -> None:
    assert rfc3339_ns(1_780_000_000_123_456_789) == "2026-05-28T20:26:40.123456789Z"
    assert rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
