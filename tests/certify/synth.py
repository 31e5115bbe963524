"""Signed batches of synthetic readings, written into InfluxDB the way ingest stores them.

For the certification tests and bench/export.py: the points go through the real mapping
(ingest.mapping.batch_to_lines) and the real v1 writer, and each batch is signed over
contract.signing.batch_message with the gateway's test key, exactly as a signing agent does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract import signing
from contract.wire import Batch, ClockQuality, Gap, Reading
from ingest.influx import InfluxSettings, V1Writer
from ingest.mapping import batch_to_lines

DAY_NS = 86_400 * 1_000_000_000
START_NS = 1_780_000_000 * 1_000_000_000 // DAY_NS * DAY_NS  # a UTC midnight in 2026


@dataclass
class GatewayPlan:
    gateway: str
    sensors: int = 3
    interval_s: int = 60
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    lost_seq: tuple[int, ...] = ()
    """Reading numbers (per gateway) that are lost and declared as an outbox_full gap."""
    cal_switch_at: int | None = None
    """Reading number from which sensor s-0 reports calibration v2 instead of v1."""


def make_batches(
    plantation: str,
    plan: GatewayPlan,
    readings: int,
    start_ns: int = START_NS,
    batch_size: int = 100,
    signed: bool = True,
) -> Iterator[Batch]:
    """``readings`` readings of ``plan``'s sensors in round-robin, batched and signed."""
    seq = 0
    n = 0
    batch_no = 0
    pending: list[Reading] = []
    gaps: list[Gap] = []
    step_ns = plan.interval_s * 1_000_000_000 // plan.sensors
    while n < readings:
        ts = start_ns + n * step_ns
        sensor_no = n % plan.sensors
        if n in plan.lost_seq:
            gaps.append(
                Gap.model_construct(
                    sensor=None,
                    start=ts,
                    end=ts + step_ns,
                    reason="outbox_full",
                    detail="outbox over its cap, oldest dropped",
                    seq=seq,
                    count=1,
                )
            )
        else:
            cal = None
            if sensor_no == 0 and plan.cal_switch_at is not None:
                cal = "v2" if n >= plan.cal_switch_at else "v1"
            pending.append(
                Reading.model_construct(
                    sensor=f"s-{sensor_no}",
                    field="north" if sensor_no % 2 == 0 else "south",
                    kind="soil" if sensor_no % 3 else "weather",
                    ts=ts,
                    clock=ClockQuality.SYNCED if n % 50 else ClockQuality.UNSYNCED,
                    seq=seq,
                    values={
                        "moisture_pct": round(30 + 5 * math.sin(n / 500) + sensor_no, 3),
                        "temp_c": round(12.5 + 8 * math.sin(n / 1440), 2),
                    }
                    if sensor_no % 3
                    else {"wind_ms": round(3 + 2 * math.cos(n / 300), 2), "temp_c": 11.0},
                    cal=cal,
                )
            )
        seq += 1
        n += 1
        if len(pending) >= batch_size or n == readings:
            batch_no += 1
            batch = Batch.model_construct(
                v=1,
                gateway=plan.gateway,
                boot="boot-1",
                batch=f"{plan.gateway}-b{batch_no}",
                sent=ts + 1_000_000_000,
                readings=pending,
                gaps=gaps,
                sig=None,
            )
            if signed:
                sig = signing.sign(plan.key, signing.batch_message(plantation, batch))
                batch = batch.model_copy(update={"sig": sig})
            yield batch
            pending, gaps = [], []


def write_batches(url: str, database: str, plantation: str, batches: Iterator[Batch]) -> int:
    """Store ``batches`` as ingest does; returns the number of readings written."""
    writer = V1Writer(InfluxSettings(url=url, database=database))
    lines: list[str] = []
    count = 0
    try:
        for b in batches:
            lines.extend(batch_to_lines(plantation, b))
            count += len(b.readings)
            if len(lines) >= 20_000:
                writer.write(("\n".join(lines) + "\n").encode())
                lines = []
        if lines:
            writer.write(("\n".join(lines) + "\n").encode())
    finally:
        writer.close()
    return count


def registry_json(plantation: str, plans: list[GatewayPlan]) -> dict[str, object]:
    """A registry export (farmtel-registry-v1 shape) holding the plans' public keys."""
    from certify.devices import public_key_b64

    return {
        "format": "farmtel-registry-v1",
        "plantation": plantation,
        "gateways": [
            {
                "gateway": p.gateway,
                "keys": [
                    {
                        "key_id": signing.key_id(p.key.public_key()),
                        "public_key": public_key_b64(p.key.public_key()),
                        "valid_from_ns": 0,
                        "valid_until_ns": None,
                    }
                ],
            }
            for p in plans
        ],
        "history": [{"at_ns": 0, "gateway": p.gateway, "event": "install"} for p in plans],
    }
