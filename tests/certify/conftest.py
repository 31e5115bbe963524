"""Fixtures for the certification tests: one signed history in InfluxDB per module, and its
bundle, built once (the tamper suite copies it in memory)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from certify.export import export_bundle
from certify.orgkey import load_org_key, new_key_file, public_pem
from certify.source import Span
from devstack import StackInfo
from ingest.influx import InfluxQuery, InfluxSettings
from ingest.registry import Registry
from tests.certify.bundles import (
    BATCH_SIZE,
    PERIOD,
    PLANTATION,
    READINGS_PER_GATEWAY,
    Built,
    plans,
)
from tests.certify.synth import make_batches, write_batches


@pytest.fixture(scope="module")
def history(
    stack: StackInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    """A signed history of two gateways in a fresh database, and a registry file with the
    gateways' keys (the real ingest.registry.Registry)."""
    database = f"test_cert_{uuid.uuid4().hex[:10]}"
    tmp = tmp_path_factory.mktemp("history")
    gateway_plans = plans()
    for p in gateway_plans:
        write_batches(
            stack.influx_url,
            database,
            PLANTATION,
            make_batches(PLANTATION, p, READINGS_PER_GATEWAY, batch_size=BATCH_SIZE),
        )
    registry_path = tmp / "registry.sqlite"
    with Registry(registry_path) as reg:
        for p in gateway_plans:
            reg.add_gateway(PLANTATION, p.gateway, p.key.public_key(), None, f"fp-{p.gateway}")
    org_path = tmp / "org.pem"
    pub = new_key_file(org_path)
    pub_path = tmp / "org.pem.pub"
    pub_path.write_bytes(public_pem(pub))
    query = InfluxQuery(InfluxSettings(url=stack.influx_url, database=database))
    yield {
        "url": stack.influx_url,
        "database": database,
        "registry": registry_path,
        "org": org_path,
        "pub": pub_path,
        "plans": gateway_plans,
        "query": query,
        "tmp": tmp,
    }
    query.drop_database(database)
    query.close()


@pytest.fixture(scope="module")
def built(history: dict[str, object]) -> Built:
    """The genuine bundle of the whole history."""
    from certify.devices import load_registry_file

    tmp = history["tmp"]
    assert isinstance(tmp, Path)
    org = load_org_key(Path(str(history["org"])))
    reg = load_registry_file(Path(str(history["registry"])), PLANTATION)
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    export_bundle(query, PLANTATION, Span(*PERIOD), tmp / "bundle", org, reg)
    return Built(tmp / "bundle", org, Path(str(history["pub"])))
