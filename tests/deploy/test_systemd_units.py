"""The systemd units in deploy/systemd pass ``systemd-analyze verify`` with no warnings,
and ``systemd-analyze security`` rates their sandboxing as exposure 3.0 or lower.

The units start a program in /opt/farmtel/venv/bin (``farmtel``, or ``python -m agent``),
which verify requires to exist; the test verifies a copy pointing at this checkout's
virtualenv instead (the only change).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
INSTALLED = "/opt/farmtel/venv/bin/"
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is missing (Debian package systemd; scripts/setup.sh installs it)",
)


def _local_copy(unit: Path, tmp: Path) -> Path:
    farmtel = Path(sys.executable).with_name("farmtel")
    if not farmtel.exists():
        pytest.skip(f"{farmtel} is missing: pip install -e . creates it")
    text = unit.read_text()
    assert f"ExecStart={INSTALLED}" in text, f"{unit.name} must start a program in {INSTALLED}"
    copy = tmp / unit.name
    copy.write_text(text.replace(INSTALLED, f"{farmtel.parent}/"))
    return copy


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
    )


def test_both_units_are_there() -> None:
    assert [u.name for u in UNITS] == ["farmtel-agent.service", "farmtel-ingest.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_without_warnings(unit: Path, tmp_path: Path) -> None:
    res = _verify(_local_copy(unit, tmp_path))
    if res.returncode != 0 and "Failed to initialize" in res.stderr:
        pytest.skip(f"systemd-analyze cannot run in this container: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    # verify exits 0 for unknown keys and bad values; it only warns about them.
    own = [line for line in res.stderr.splitlines() if unit.name in line]
    assert own == [], "\n".join(own)
    text = unit.read_text()
    for needed in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert needed in text


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_sandboxing_exposure_is_low(unit: Path, tmp_path: Path) -> None:
    assert ANALYZE is not None
    res = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(_local_copy(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline is not available: {res.stderr.strip()}")
    assert float(found.group(1)) <= 3.0, res.stdout


def test_a_broken_unit_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a typo in a key is reported against the unit."""
    bad = tmp_path / "farmtel-bad.service"
    bad.write_text("[Service]\nExecStart=/bin/true\nRestart=sometimes\nProtectSistem=strict\n")
    res = _verify(bad)
    assert "farmtel-bad.service" in res.stderr and "ProtectSistem" in res.stderr


def test_agent_unit_reaches_serial_ports_only() -> None:
    text = (REPO / "deploy" / "systemd" / "farmtel-agent.service").read_text()
    assert "SupplementaryGroups=dialout" in text
    assert "DevicePolicy=closed" in text
    for dev in ("ttyUSB", "ttyACM", "ttyAMA"):
        assert f"DeviceAllow=char-{dev} rw" in text
    assert "StateDirectory=farmtel/agent" in text
    # The clock-quality flag needs adjtimex(modes=0): ProtectClock would block it.
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert not any(line.startswith("ProtectClock") for line in settings)
    assert "SystemCallFilter=@system-service adjtimex" in settings
