"""verify's fast path (certify.verify_chunks) against its sequential pass.

The fast path may only confirm a bundle faster: for every bundle, genuine or changed, the
verdict with it must be the verdict of the sequential pass alone, word for word. The bundles
here are written directly with certify.rows and certify.bag (no InfluxDB), so they can hold
rows export rarely writes: calibrations with commas, non-ASCII names, values whose JSON text
is not their repr, batches whose readings are out of seq order, quarantined readings.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certify import verify, verify_chunks
from certify.bag import BagWriter, BundleSource, FolderBundle, MemoryBundle
from certify.rows import (
    GAP_COLUMNS,
    BatchRow,
    GapRow,
    ReadingRow,
    batch_json_line,
    csv_line,
    gap_csv_line,
    parse_gap_cells,
    parse_reading_json,
    quarantine_json_line,
    reading_csv_header,
    reading_csv_line,
    reading_json_line,
    rfc3339_ns,
)
from certify.verify import Verdict, verify_bundle
from contract import signing
from tests.certify.bundles import Built, reseal
from tests.certify.synth import START_NS, GatewayPlan, registry_json

PLANT = "fast-p"


@dataclass
class Shape:
    gateways: int = 2
    per_gateway: int = 120
    batch_size: int = 17
    sensors: int = 3
    odd: bool = False
    """Unusual but valid rows: cal with a comma, exponent values, a stepped clock that puts
    a batch's readings out of seq order, quarantined readings."""
    unicode: bool = False
    """A sensor with a non-ASCII name."""
    edge: bool = True
    """The period cuts each gateway's first batch: its first reading is dated before it
    (the chunk holding it is checked the JSON way). False: the period holds every reading."""


@dataclass
class Synthetic:
    files: dict[str, bytes]
    org: Ed25519PrivateKey
    gateway_keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)

    def memory(self) -> MemoryBundle:
        return MemoryBundle(dict(self.files))

    def folder(self, root: Path) -> FolderBundle:
        for name, data in self.files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return FolderBundle(root)


def build(tmp: Path, shape: Shape, seed: int = 1) -> Synthetic:
    """A sealed bundle of signed batches, as export would write it."""
    rng = random.Random(seed)
    org = Ed25519PrivateKey.generate()
    plans = [GatewayPlan(f"gw-{g}") for g in range(shape.gateways)]
    rows: list[ReadingRow] = []
    quarantined: list[tuple[ReadingRow, str]] = []
    gaps: list[GapRow] = []
    batches: list[BatchRow] = []
    for plan in plans:
        seq = 0
        n = 0
        while n < shape.per_gateway:
            batch_id = f"{plan.gateway}-b{len(batches)}"
            first = seq
            members: list[ReadingRow] = []
            held: list[ReadingRow] = []
            batch_gaps: list[GapRow] = []
            for _ in range(shape.batch_size):
                sensor_no = n % shape.sensors
                ts = START_NS + n * 20_000_000_000 + rng.randrange(1_000_000_000)
                if shape.odd and n % 41 == 7:
                    ts -= 60_000_000_000  # a stepped clock: earlier time, later seq
                values = {"moisture_pct": round(30 + rng.random() * 5, 3), "temp_c": 11.0}
                if shape.odd and n % 13 == 5:
                    values = {"temp_c": rng.choice([1e-05, 1e16, -0.0, 0.0, 123456.789, 1e22])}
                sensor = f"s-{sensor_no}"
                if shape.unicode and sensor_no == 1:
                    sensor = "sonde-ü"
                cal = None
                if sensor_no == 0:
                    cal = "v1,beta" if shape.odd and n % 2 else "v1"
                r = ReadingRow(
                    PLANT,
                    "north" if sensor_no % 2 else "south",
                    plan.gateway,
                    sensor,
                    "soil",
                    ts,
                    "synced" if n % 7 else "unsynced",
                    seq,
                    cal,
                    batch_id,
                    values,
                )
                if n % 29 == 11:  # lost: a declared gap skips its seq
                    batch_gaps.append(
                        GapRow(plan.gateway, "*", ts, ts + 1, "outbox_full", seq, 1, batch_id, "x")
                    )
                elif shape.odd and n % 37 == 3:
                    held.append(r)
                else:
                    members.append(r)
                seq += 1
                n += 1
            message = signing.canonical_message(
                PLANT,
                plan.gateway,
                batch_id,
                [*members, *held],  # type: ignore[list-item]
                verify._signed_gaps(batch_gaps),
            )
            batches.append(
                BatchRow(
                    batch_id,
                    plan.gateway,
                    "boot-1",
                    START_NS,
                    first,
                    seq - 1,
                    len(members) + len(held),
                    len(batch_gaps),
                    signing.sign(plan.key, message),
                    len(held),
                )
            )
            rows.extend(members)
            quarantined.extend((r, "future") for r in held)
            gaps.extend(batch_gaps)
    rows.sort(key=lambda r: (r.ts, r.gateway, r.sensor))
    names = sorted({k for r in rows for k in r.values})
    files = {
        "data/readings.jsonl": b"".join(reading_json_line(r) for r in rows),
        "data/readings.csv": (
            reading_csv_header(names) + "".join(reading_csv_line(r, names) for r in rows)
        ).encode(),
        "data/gaps.csv": (csv_line(GAP_COLUMNS) + "".join(gap_csv_line(g) for g in gaps)).encode(),
        "data/batches.jsonl": b"".join(batch_json_line(b) for b in batches),
        "data/registry.json": orjson.dumps(registry_json(PLANT, plans)),
        "data/completeness.csv": b"day\n",
        "data/report.html": b"<html></html>\n",
        "data/quarantined.jsonl": b"".join(quarantine_json_line(r, q) for r, q in quarantined),
    }
    root = tmp / f"built-{seed}-{shape.odd}-{shape.unicode}"
    writer = BagWriter(root)
    for name, data in files.items():
        writer.add_payload(name.removeprefix("data/"), data)
    second = 1_000_000_000
    period = (
        START_NS + (second if shape.edge else 0),
        max(r.ts for r in rows) // second * second + second,
    )
    writer.finish(
        {
            "Farmtel-Plantation": PLANT,
            "Farmtel-Period-Start": rfc3339_ns(period[0]),
            "Farmtel-Period-End": rfc3339_ns(period[1]),
            "Farmtel-Readings": str(len(rows)),
            "Farmtel-Batches": str(len(batches)),
            "Farmtel-Gaps": str(len(gaps)),
        },
        org,
    )
    return Synthetic(
        MemoryBundle.load(FolderBundle(root)).files, org, {p.gateway: p.key for p in plans}
    )


def sequential(src: BundleSource, pinned: object) -> str:
    """The verdict of the sequential pass alone."""
    saved = verify._FastPath.start
    verify._FastPath.start = classmethod(lambda cls, src: None)  # type: ignore[assignment]
    try:
        return verify_bundle(src, pinned).render()  # type: ignore[arg-type]
    finally:
        verify._FastPath.start = saved  # type: ignore[method-assign]


def fast_counts(src: BundleSource, chunk_bytes: int | None = None) -> Verdict | None:
    """What the fast path alone says: the counts when it shows the readings clean."""
    fast = verify._FastPath.start(src)
    if fast is None:
        return None
    fast.chunk_bytes = chunk_bytes
    try:
        clean = fast.run()
    finally:
        fast.close()
    if clean is None:
        return None
    return Verdict(
        readings=clean.readings,
        quarantined=clean.quarantined,
        batches=clean.batches,
        batches_verified=clean.batches_verified,
        gaps=clean.gaps,
    )


@pytest.fixture(autouse=True)
def fast_for_small_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast way even for the small bundles here (verify skips it below 1 MB)."""
    monkeypatch.setattr(verify, "FAST_FROM_BYTES", 0)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Worker processes even for a small bundle, in small chunks."""
    monkeypatch.setenv("FARMTEL_VERIFY_WORKERS", "2")
    monkeypatch.setattr(verify, "PARALLEL_FROM_BYTES", 0)
    monkeypatch.setattr(verify_chunks, "CHUNK_BYTES", 3000)
    yield


SHAPES = [Shape(), Shape(odd=True), Shape(odd=True, unicode=True)]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_fast_path_shows_genuine_bundles_clean(tmp_path: Path, shape: Shape) -> None:
    syn = build(tmp_path, shape)
    pinned = syn.org.public_key()
    reference = verify_bundle(syn.memory(), pinned)
    assert reference.ok, reference.render()
    assert sequential(syn.memory(), pinned) == reference.render()
    if shape.odd:
        assert reference.quarantined > 0
    for chunk in (None, 200, 1500):
        got = fast_counts(syn.memory(), chunk)
        assert got is not None, chunk
        assert (got.readings, got.quarantined, got.batches, got.batches_verified, got.gaps) == (
            reference.readings,
            reference.quarantined,
            reference.batches,
            reference.batches_verified,
            reference.gaps,
        )


@pytest.mark.parametrize("shape", SHAPES)
def test_worker_processes_give_the_same_verdict(
    tmp_path: Path, workers: None, shape: Shape
) -> None:
    syn = build(tmp_path, Shape(odd=shape.odd, unicode=shape.unicode, per_gateway=300))
    src = syn.folder(tmp_path / "bundle")
    pinned = syn.org.public_key()
    fast = verify._FastPath.start(src)
    assert fast is not None and fast.pool is not None  # the workers are really used
    fast.close()
    assert fast_counts(src) is not None
    verdict = verify_bundle(src, pinned)
    assert verdict.ok and verdict.render() == sequential(src, pinned)


def test_the_readings_lines_are_the_signed_text(tmp_path: Path) -> None:
    """Both ways of rebuilding reading lines give canonical_message's text."""
    syn = build(tmp_path, Shape(odd=True, unicode=True))
    fast = verify._FastPath.start(syn.memory())
    assert fast is not None
    scanner = verify_chunks._Scanner(fast.ctx)
    data = syn.files["data/readings.jsonl"]
    csv = syn.files["data/readings.csv"].split(b"\n", 1)[1]
    lines, by_json = scanner._from_json(data, csv, True)
    assert lines == data.count(b"\n")
    rows = [parse_reading_json(line)[0] for line in data.splitlines()]
    for batch, (_gw, seqs, texts) in by_json.items():
        mine = [r for r in rows if r.batch == batch]
        head = signing.canonical_message(PLANT, mine[0].gateway, batch, [], [])
        for r, seq, text in zip(mine, seqs, texts, strict=True):
            assert seq == r.seq
            one = signing.canonical_message(PLANT, r.gateway, batch, [r], [])  # type: ignore[list-item]
            assert text.encode() == one[len(head) :]
    plain = build(tmp_path, Shape(odd=False, edge=False), seed=2)
    fast = verify._FastPath.start(plain.memory())
    assert fast is not None
    scanner = verify_chunks._Scanner(fast.ctx)
    data = plain.files["data/readings.jsonl"]
    csv = plain.files["data/readings.csv"].split(b"\n", 1)[1]
    by_csv = scanner._from_csv(data, csv, True)
    assert by_csv is not None  # export's plain form takes the quick way
    assert by_csv == scanner._from_json(data, csv, True)


def _mutate(rng: random.Random, files: dict[str, bytes]) -> dict[str, bytes]:
    """One random change to the readings (or what they are checked against)."""
    out = dict(files)
    name = rng.choice(
        ["data/readings.jsonl"] * 4
        + ["data/readings.csv"] * 4
        + ["data/quarantined.jsonl", "data/batches.jsonl", "data/gaps.csv"]
    )
    data = out[name]
    lines = data.split(b"\n")
    kind = rng.randrange(9)
    if kind == 0 and data:  # one byte changed
        i = rng.randrange(len(data))
        c = rng.choice(b'0123456789,."\\ \r\nax{}-e+\xc3')
        out[name] = data[:i] + bytes([c]) + data[i + 1 :]
    elif kind == 1 and len(lines) > 2:  # two lines swapped
        i, j = rng.sample(range(len(lines) - 1), 2)
        lines[i], lines[j] = lines[j], lines[i]
        out[name] = b"\n".join(lines)
    elif kind == 2 and len(lines) > 1:  # a line twice
        i = rng.randrange(len(lines) - 1)
        lines.insert(i, lines[i])
        out[name] = b"\n".join(lines)
    elif kind == 3 and len(lines) > 1:  # a line gone
        del lines[rng.randrange(len(lines) - 1)]
        out[name] = b"\n".join(lines)
    elif kind == 4:  # the same reading line gone, duplicated or swapped in both files
        jl = out["data/readings.jsonl"].split(b"\n")
        cl = out["data/readings.csv"].split(b"\n")
        i = rng.randrange(len(jl) - 1)
        if rng.random() < 0.5:
            del jl[i], cl[i + 1]
        else:
            jl.insert(i, jl[i])
            cl.insert(i + 1, cl[i + 1])
        out["data/readings.jsonl"] = b"\n".join(jl)
        out["data/readings.csv"] = b"\n".join(cl)
    elif kind == 5:  # trailing newlines
        out[name] = data + b"\n" * rng.randrange(1, 3) if rng.random() < 0.5 else data.rstrip(b"\n")
    elif kind == 6 and data:  # cut short
        out[name] = data[: rng.randrange(len(data))]
    elif kind == 7:  # a digit of a number changed in both files alike
        jl = out["data/readings.jsonl"].split(b"\n")
        cl = out["data/readings.csv"].split(b"\n")
        i = rng.randrange(len(jl) - 1)
        row = orjson.loads(jl[i])
        key = rng.choice(["ts_ns", "seq", "values"])
        if key == "values":
            k = rng.choice(sorted(row["values"]))
            old = repr(row["values"][k]).encode()
            row["values"][k] += rng.choice([0.5, -1.0, 1e-9])
            new = repr(row["values"][k]).encode()
        else:
            old = str(row[key]).encode()
            row[key] += rng.choice([1, -1])
            new = str(row[key]).encode()
        jl[i] = orjson.dumps(row)
        cl[i + 1] = cl[i + 1].replace(old, new, 1)
        out["data/readings.jsonl"] = b"\n".join(jl)
        out["data/readings.csv"] = b"\n".join(cl)
    else:  # JSON re-encoded: same meaning, other text (spaces, key order)
        jl = out["data/readings.jsonl"].split(b"\n")
        i = rng.randrange(len(jl) - 1)
        row = orjson.loads(jl[i])
        if rng.random() < 0.5:
            jl[i] = orjson.dumps(dict(reversed(row.items())))
        else:
            jl[i] = orjson.dumps(row).replace(b":", b": ", 1)
        out["data/readings.jsonl"] = b"\n".join(jl)
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_changed_bundles_get_the_sequential_verdict(tmp_path: Path, shape: Shape) -> None:
    """Resealed changes (so the bag checks pass and only the readings can tell): the
    verdict with the fast path is the sequential verdict, word for word."""
    syn = build(tmp_path, Shape(odd=shape.odd, unicode=shape.unicode, per_gateway=60, batch_size=9))
    pinned = syn.org.public_key()
    rng = random.Random(7 + shape.odd + 2 * shape.unicode)
    kept_valid = 0
    for _ in range(100):
        files = reseal(_mutate(rng, syn.files), syn.org)
        reference = sequential(MemoryBundle(files), pinned)
        for chunk in (None, 150, 900):
            fast = verify._FastPath.start(MemoryBundle(files))
            if fast is not None:
                fast.chunk_bytes = chunk
                if fast.run() is not None:
                    assert reference.startswith("VERDICT: VALID"), reference
            got = verify_bundle(MemoryBundle(files), pinned).render()
            assert got == reference
        kept_valid += reference.startswith("VERDICT: VALID")
    assert kept_valid < 100  # most changes are caught


def test_changed_bundles_in_worker_processes(tmp_path: Path, workers: None) -> None:
    syn = build(tmp_path, Shape(odd=True, per_gateway=150, batch_size=11))
    pinned = syn.org.public_key()
    rng = random.Random(11)
    for n in range(12):
        files = reseal(_mutate(rng, syn.files), syn.org)
        src = Synthetic(files, syn.org).folder(tmp_path / f"b{n}")
        assert verify_bundle(src, pinned).render() == sequential(src, pinned)


def _crash(*args: object) -> object:
    os._exit(3)


def test_a_worker_that_dies_costs_only_time(
    tmp_path: Path, workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    syn = build(tmp_path, Shape(per_gateway=200))
    src = syn.folder(tmp_path / "bundle")
    monkeypatch.setattr(verify_chunks, "_scan_in_worker", _crash)
    verdict = verify_bundle(src, syn.org.public_key())
    assert verdict.ok and verdict.render() == sequential(src, syn.org.public_key())


def _hang(*args: object) -> object:
    time.sleep(3600)
    return None


def test_a_worker_that_hangs_costs_only_time(
    tmp_path: Path, workers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    syn = build(tmp_path, Shape(per_gateway=200))
    src = syn.folder(tmp_path / "bundle")
    monkeypatch.setattr(verify_chunks, "_scan_in_worker", _hang)
    monkeypatch.setattr(verify_chunks, "RESULT_TIMEOUT_S", 2)
    started = time.monotonic()
    verdict = verify_bundle(src, syn.org.public_key())
    assert verdict.ok and verdict.render() == sequential(src, syn.org.public_key())
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()  # the stuck workers were ended


def test_one_cpu_checks_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARMTEL_VERIFY_WORKERS", "0")
    monkeypatch.setattr(verify, "PARALLEL_FROM_BYTES", 0)
    syn = build(tmp_path, Shape())
    src = syn.folder(tmp_path / "bundle")
    fast = verify._FastPath.start(src)
    assert fast is not None and fast.pool is None
    fast.close()
    assert verify_bundle(src, syn.org.public_key()).ok


def test_after_lines_finds_the_nth_line_end() -> None:
    buf = b"a\nbb\n\nccc\nd"
    ends = [i + 1 for i, c in enumerate(buf) if c == ord("\n")]
    for start in range(len(buf)):
        before = sum(1 for e in ends if e <= start)
        for n in range(6):
            want = ends[before + n - 1] if n and before + n - 1 < len(ends) else -1
            if n == 0:
                want = start
            for guess in (0, 1, 3, 50):
                assert verify_chunks._after_lines(buf, start, n, guess) == want, (start, n, guess)


def test_tamper_suite_changes_get_the_sequential_verdict(built: Built) -> None:
    """The tamper suite's changes to an exported bundle: same verdict either way."""
    from tests.certify.test_tamper import MUTATIONS

    genuine = built.memory()
    pinned = built.org_key.public_key()
    assert verify_bundle(genuine, pinned).render() == sequential(genuine, pinned)
    rng = random.Random(5)
    for _ in range(200):
        fn = rng.choice(MUTATIONS)
        files = fn(rng, genuine.files, built.org_key)
        got = verify_bundle(MemoryBundle(files), pinned).render()
        assert got == sequential(MemoryBundle(files), pinned), fn.__name__


def test_exported_bundles_take_the_quick_way(built: Built) -> None:
    """What export writes is the exact form the CSV-driven check expects (otherwise every
    chunk would be parsed as JSON: still right, but slower)."""
    files = built.memory().files
    fast = verify._FastPath.start(MemoryBundle(files))
    assert fast is not None
    scanner = verify_chunks._Scanner(fast.ctx)
    data = files["data/readings.jsonl"]
    csv = files["data/readings.csv"].split(b"\n", 1)[1]
    assert scanner._from_csv(data, csv, True) == scanner._from_json(data, csv, True)


@pytest.mark.parametrize("where", [-1, -12])
def test_digits_of_other_scripts_are_not_numbers(tmp_path: Path, where: int) -> None:
    """A ts_ns with an Arabic-Indic digit (str.isdigit() says yes, JSON says no) in both
    files alike, its batch signed over that text by the gateway's own key, resealed: not
    valid (readings.jsonl is not JSON there), whichever way it is checked."""
    syn = build(tmp_path, Shape(unicode=True))
    jl = syn.files["data/readings.jsonl"].split(b"\n")
    cl = syn.files["data/readings.csv"].split(b"\n")
    i = 5
    row = orjson.loads(jl[i])
    ts = str(row["ts_ns"])
    odd = ts[:where] + "\u0663" + (ts[where + 1 :] if where != -1 else "")
    # In the nanoseconds, time_utc holds the same text; in the seconds, time_utc is the time
    # that int() reads (it takes them for digits).
    new_time = row["time_utc"][:-2] + "\u0663Z" if where == -1 else rfc3339_ns(int(odd))
    jl[i] = jl[i].replace(f'"ts_ns":{ts}'.encode(), f'"ts_ns":{odd}'.encode())
    jl[i] = jl[i].replace(row["time_utc"].encode(), new_time.encode())
    cl[i + 1] = (
        cl[i + 1]
        .replace(ts.encode(), odd.encode())
        .replace(row["time_utc"].encode(), new_time.encode())
    )
    # The batch re-signed over the odd text, as a gateway that wrote it would have.
    members = []
    genuine = syn.files["data/readings.jsonl"].split(b"\n")[:-1]
    for n, line in enumerate(genuine):
        r = orjson.loads(line)
        if r["batch"] == row["batch"]:
            members.append(SimpleNamespace(**{**r, "ts": odd if n == i else r["ts_ns"]}))
    text = syn.files["data/gaps.csv"].decode()
    gaps = [parse_gap_cells(c) for c in list(csv.reader(io.StringIO(text, newline="")))[1:]]
    message = signing.canonical_message(
        PLANT,
        row["gateway"],
        row["batch"],
        members,  # type: ignore[arg-type]
        verify._signed_gaps(g for g in gaps if g.batch == row["batch"]),
    )
    bl = syn.files["data/batches.jsonl"].split(b"\n")
    for n, line in enumerate(bl[:-1]):
        record = orjson.loads(line)
        if record["batch"] == row["batch"]:
            record["sig"] = signing.sign(syn.gateway_keys[row["gateway"]], message)
            bl[n] = orjson.dumps(record)
    files = reseal(
        {
            **syn.files,
            "data/readings.jsonl": b"\n".join(jl),
            "data/readings.csv": b"\n".join(cl),
            "data/batches.jsonl": b"\n".join(bl),
        },
        syn.org,
    )
    pinned = syn.org.public_key()
    reference = sequential(MemoryBundle(files), pinned)
    assert reference.startswith("VERDICT: NOT VALID") and "line 6: not JSON" in reference
    assert verify_bundle(MemoryBundle(files), pinned).render() == reference
    fast = verify._FastPath.start(MemoryBundle(files))
    assert fast is not None and fast.run() is None
