"""Shared fixtures: the real Mosquitto + InfluxDB stack, and a fresh database per test.

The stack starts once per test session (well under a second) on free 127.0.0.1 ports.
To skip even that while developing, start one yourself and point the tests at it::

    python -m devstack start --state .state/teststack
    FARMTEL_TEST_STACK=.state/teststack/stack.json pytest ...

``private_stack`` gives a test servers of its own to stop, kill or pause. Tests that use
``stack`` or ``private_stack`` are marked ``integration`` automatically (``-m "not integration"``
deselects them). A missing mosquitto or influxd fails them with what to run; it never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import ServerNotInstalled, Stack, StackError, StackInfo, influx_ping, mqtt_connack
from ingest.influx import InfluxError, InfluxQuery, InfluxSettings

REUSE_ENV = "FARMTEL_TEST_STACK"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "stack" in names or "private_stack" in names:
            item.add_marker(pytest.mark.integration)


def _reused_stack(path: Path) -> StackInfo:
    try:
        info = StackInfo.load(path)
    except StackError as err:
        pytest.fail(f"{REUSE_ENV}={path}: {err}", pytrace=False)
    if not influx_ping(info.influx_url) or not mqtt_connack(info.mqtt_host, info.mqtt_port):
        pytest.fail(
            f"{REUSE_ENV}={path}: the stack there does not answer "
            f"(mqtt {info.mqtt_host}:{info.mqtt_port}, influxdb {info.influx_url}); "
            f"start it with: python -m devstack start --state {path.parent}, "
            f"or unset {REUSE_ENV}",
            pytrace=False,
        )
    return info


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """Where the session's Mosquitto and InfluxDB listen (started here, stopped at the end)."""
    reuse = os.environ.get(REUSE_ENV)
    if reuse:
        yield _reused_stack(Path(reuse))
        return
    servers = Stack(tmp_path_factory.mktemp("stack"))
    try:
        info = servers.start()
    except ServerNotInstalled as err:
        pytest.fail(f"{err}\nThe test script installs them: ./scripts/test.sh", pytrace=False)
    except StackError as err:
        pytest.fail(f"the test stack did not start: {err}", pytrace=False)
    try:
        yield info
    finally:
        servers.stop()


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[Stack]:
    """A Stack of this test's own, for tests that stop, kill or pause a server."""
    servers = Stack(tmp_path / "stack")
    try:
        servers.start()
    except ServerNotInstalled as err:
        pytest.fail(f"{err}\nThe test script installs them: ./scripts/test.sh", pytrace=False)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def influx_db(stack: StackInfo) -> Iterator[str]:
    """A database name no other test uses (not created: writers create it); dropped after."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    query = InfluxQuery(InfluxSettings(url=stack.influx_url, database=name))
    try:
        query.drop_database(name)
    except InfluxError:
        pass  # a test that stopped InfluxDB on purpose; the stack's tmp dir goes anyway
    finally:
        query.close()
