"""How many readings a new batch takes: ``[outbox] batch_size``, never a payload over the
contract's 1 MiB (wide readings), and fewer after connections lost with batches in flight."""

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.outbox import BATCH_READINGS_BYTES, NewReading, Outbox
from agent.service import GROW_AFTER_RECEIPTS, MIN_BATCH_AFTER_LOSS, Agent, BatchLimit
from contract.topics import receipt_topic, telemetry_topic
from contract.wire import (
    MAX_BATCH_BYTES,
    ClockQuality,
    Receipt,
    ReceiptStatus,
    decode_batch,
    encode_receipt,
    encode_wire_batch,
)
from devstack import StackInfo
from tests.support.agents import make_agent
from tests.support.mqtt import TestClient

T0 = 1_767_225_600 * 10**9


def _readings(n: int, values: dict[str, float]) -> list[NewReading]:
    return [
        NewReading(
            sensor="logger-1",
            field="north",
            kind="soil",
            ts=T0 + i * 10**9,
            clock=ClockQuality.SYNCED,
            values=values,
        )
        for i in range(n)
    ]


def _wide(n: int) -> list[NewReading]:
    """Readings of 64 values with long names: ~3.5 KB each as a record."""
    return _readings(n, {f"channel_{k:02d}_{'x' * 30}_mv": 1234.5678 + k for k in range(64)})


def _narrow(n: int) -> list[NewReading]:
    return _readings(n, {"moisture_pct": 31.25, "temp_c": 14.5, "ec_us_cm": 412.0})


@pytest.mark.parametrize("raw", [True, False], ids=["next_raw_batch", "next_wire_batch"])
def test_wide_readings_never_make_a_batch_over_the_contract_limit(
    tmp_path: Path, raw: bool
) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", "gw-1")
    try:
        ob.add(_wide(1000))
        seen: list[int] = []
        sizes: list[int] = []
        while True:
            batch_id = uuid.uuid4().hex
            if raw:
                count, body, gaps = ob.next_raw_batch(batch_id, 5000)
                readings = orjson.loads(body)
                payload = encode_wire_batch(
                    "gw-1", "boot", batch_id, T0, orjson.Fragment(body), gaps, None
                )
            else:
                readings, gaps = ob.next_wire_batch(batch_id, 5000)
                count = len(readings)
                payload = encode_wire_batch("gw-1", "boot", batch_id, T0, readings, gaps, None)
            if not count:
                break
            # Every batch is one the ingest takes (decode_batch refuses > MAX_BATCH_BYTES).
            assert len(payload) <= MAX_BATCH_BYTES
            assert len(decode_batch(payload).readings) == count
            sizes.append(count)
            seen += [r["seq"] for r in readings]
            assert ob.has_unassigned_readings() is (len(seen) < 1000)
        # The 1,000 readings would be ~3.5 MB in one batch: the budget cut it, and every
        # reading went out once, in order.
        assert sum(sizes) == 1000 and len(sizes) >= 4
        assert all(s < 5000 for s in sizes)
        assert seen == list(range(1000))
    finally:
        ob.close()


def test_narrow_readings_fill_the_batch_size(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "outbox.sqlite", "gw-1")
    try:
        ob.add(_narrow(4500))
        count, body, _ = ob.next_raw_batch("b1", 2000)
        assert count == 2000 and len(body) < BATCH_READINGS_BYTES
        assert ob.has_unassigned_readings()
        assert ob.next_raw_batch("b2", 5000)[0] == 2500
        assert not ob.has_unassigned_readings()
    finally:
        ob.close()


def test_batch_limit_halves_on_loss_and_grows_back_on_receipts() -> None:
    limit = BatchLimit(2000)
    assert limit.now == 2000
    assert limit.lost() == 1000
    assert limit.lost() == 500
    for _ in range(10):
        limit.lost()
    assert limit.now == MIN_BATCH_AFTER_LOSS
    # Receipts in a row double it, every GROW_AFTER_RECEIPTS, up to batch_size.
    for _ in range(GROW_AFTER_RECEIPTS - 1):
        assert limit.receipted() == MIN_BATCH_AFTER_LOSS
    assert limit.receipted() == 2 * MIN_BATCH_AFTER_LOSS
    # A loss in between starts the count again.
    for _ in range(GROW_AFTER_RECEIPTS - 1):
        limit.receipted()
    assert limit.lost() == MIN_BATCH_AFTER_LOSS
    for _ in range(GROW_AFTER_RECEIPTS - 1):
        assert limit.receipted() == MIN_BATCH_AFTER_LOSS
    for _ in range(100 * GROW_AFTER_RECEIPTS):
        limit.receipted()
    assert limit.now == 2000
    # A batch_size under the floor is never raised to it.
    small = BatchLimit(40)
    assert small.lost() == 40 and small.receipted() == 40


def _agent(tmp_path: Path, stack: StackInfo, gateway: str, **outbox: Any) -> Agent:
    agent = make_agent(
        tmp_path,
        "p-lim",
        gateway,
        mqtt={"host": stack.mqtt_host, "port": stack.mqtt_port},
        outbox={"receipt_timeout": 600.0, "send_delay": 0, **outbox},
        status={"interval": 600.0},
    )
    agent.workers = []  # only the outbox feeds it
    return agent


def _batches(watch: TestClient, count: int) -> list[tuple[str, int]]:
    msgs = watch.wait_for(count, timeout=30)
    assert len(msgs) >= count, f"saw {len(msgs)} batches, waited for {count}"
    out = []
    for m in msgs:
        batch = decode_batch(bytes(m.payload))
        out.append((batch.batch, len(batch.readings)))
    return out


def _receipt(client: TestClient, gateway: str, batch_id: str) -> None:
    client.publish(
        receipt_topic("p-lim", gateway),
        encode_receipt(Receipt(batch=batch_id, status=ReceiptStatus.STORED)),
    )


def test_a_connection_lost_with_batches_in_flight_makes_new_batches_smaller(
    tmp_path: Path, stack: StackInfo
) -> None:
    """Real Mosquitto. The broker drops the agent's connection (another client takes its
    client id) while two batches of 400 wait for receipts: new batches hold 200, and
    receipts in a row bring 400 back."""
    gateway = f"gw-lim-{uuid.uuid4().hex[:6]}"
    agent = _agent(tmp_path, stack, gateway, batch_size=400, max_inflight=2)
    # Commits of 40, as at 200 readings/s: rows of 40, and batches take whole rows.
    readings = _narrow(6000)
    for start in range(0, 6000, 40):
        agent.outbox.add(readings[start : start + 40])
    watch = TestClient(stack.mqtt_host, stack.mqtt_port)
    watch.subscribe(telemetry_topic("p-lim", gateway))
    agent.start()
    stopped = False
    try:
        first = _batches(watch, 2)
        assert [n for _, n in first] == [400, 400]
        # Take the agent's client id: the broker disconnects the agent.
        TestClient(stack.mqtt_host, stack.mqtt_port, client_id=agent.config.client_id()).close()
        deadline = time.monotonic() + 30
        while agent.batch_limit.now != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.batch_limit.now == 200
        assert agent.publisher.disconnects >= 1
        deadline = time.monotonic() + 30
        while not agent.publisher.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.publisher.connected.is_set()
        # The two in flight keep their 400 readings each: receipt them.
        for batch_id, _ in first:
            _receipt(watch, gateway, batch_id)
        seen = _batches(watch, 3)
        new = [(b, n) for b, n in seen if b not in {f for f, _ in first}]
        assert new and new[0][1] == 200, seen
        # Receipts in a row, and new batches are 400 again. The first batch of 400 gets no
        # receipt: it stays in flight (receipt_timeout 600 s) for the stop below.
        counted = {b for b, _ in first}
        deadline = time.monotonic() + 60
        sizes: list[int] = []
        while time.monotonic() < deadline and 400 not in sizes:
            for batch_id, n in _batches(watch, len(watch.messages)):
                if batch_id in counted or 400 in sizes:
                    continue
                counted.add(batch_id)
                sizes.append(n)
                if n != 400:
                    _receipt(watch, gateway, batch_id)
            time.sleep(0.05)
        # The receipts of the two batches of 400 count in the row: the next two batches hold
        # 200, and the limit is 400 again once the second of those is receipted. Whether a
        # third batch of 200 was taken before that receipt arrived is up to the threads.
        assert sizes[: GROW_AFTER_RECEIPTS - 2] == [200] * (GROW_AFTER_RECEIPTS - 2), sizes
        assert 400 in sizes, sizes
        assert sizes.index(400) <= GROW_AFTER_RECEIPTS - 1, sizes
        status = orjson.loads(agent.status_payload())
        assert status["outbox"]["batch_limit"] == 400
        # Stopping is not a lost connection, batches in flight or not: here the 400 one
        # (published, never receipted) is.
        assert agent.outbox.inflight_batches() > 0
        agent.stop()
        stopped = True
        assert agent.batch_limit.now == 400
    finally:
        watch.close()
        if not stopped:
            agent.stop()


def test_a_batch_cut_by_bytes_is_not_taken_for_a_drained_outbox(
    tmp_path: Path, stack: StackInfo
) -> None:
    """A part batch waits for send_delay only once the outbox is drained: a batch short of
    batch_size because of the byte budget leaves readings behind, which go at once."""
    agent = _agent(tmp_path, stack, "gw-cut", batch_size=2000, send_delay=5.0)
    try:
        agent.outbox.add(_wide(400))
        count, _, _ = agent.outbox.next_raw_batch("b1", 2000)
        assert 0 < count < 400
        agent._note_taken(count, 0, 2000)
        assert not agent._drained
        assert agent._note_committed(1) is True  # not held: a backlog goes at once
        while agent.outbox.has_unassigned_readings():
            agent.outbox.next_raw_batch(uuid.uuid4().hex, 2000)
        agent._note_taken(count, 0, 2000)  # as short, and nothing left behind: drained
        assert agent._drained
    finally:
        agent.outbox.close()


@pytest.mark.parametrize(("batch_size", "rows"), [(2000, 50), (100, 50), (30, 30), (1, 1)])
def test_no_outbox_row_holds_more_than_the_smallest_batch(
    tmp_path: Path, batch_size: int, rows: int
) -> None:
    """A batch takes whole rows: the agent's rows never hold more readings than a batch
    may, even shrunk after lost connections."""
    agent = make_agent(
        tmp_path, "p-lim", "gw-rows", mqtt={"port": 1}, outbox={"batch_size": batch_size}
    )
    try:
        assert agent.outbox.row_readings == rows
        assert rows <= agent.batch_limit.least
        agent.outbox.add(_narrow(120))
        stored = [n for (n,) in agent.outbox._conn.execute("SELECT n FROM readings")]
        assert sum(stored) == 120 and max(stored) <= rows
        got = agent.outbox.next_raw_batch("b1", agent.batch_limit.least)[0]
        assert 0 < got <= agent.batch_limit.least
    finally:
        agent.outbox.close()
