"""Export from the real InfluxDB, then verify: the round trip, edges, paging, unsigned data."""

from __future__ import annotations

from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

import cli
from certify.bag import FolderBundle, MemoryBundle
from certify.export import export_bundle
from certify.orgkey import load_org_key, load_pubkey_file
from certify.source import Span
from certify.verify import verify_bundle
from ingest.influx import InfluxQuery
from tests.certify.bundles import PERIOD, PLANTATION, READINGS_PER_GATEWAY, Built, reseal
from tests.certify.synth import START_NS, GatewayPlan, make_batches, registry_json, write_batches

runner = CliRunner()


def _query_and_org(history: dict[str, object]) -> tuple[InfluxQuery, Ed25519PrivateKey]:
    """The history fixture's InfluxDB client and the organisation's signing key."""
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    return query, load_org_key(Path(str(history["org"])))


def test_round_trip_through_the_cli(history: dict[str, object], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    res = runner.invoke(
        cli.app,
        [
            "export",
            "--plantation",
            PLANTATION,
            "--from",
            "2026-05-28T00:00:00+00:00",
            "--to",
            "2026-05-29T00:00:00+00:00",
            "--out",
            str(out),
            "--key",
            str(history["org"]),
            "--registry",
            str(history["registry"]),
            "--url",
            str(history["url"]),
            "--database",
            str(history["database"]),
        ],
    )
    assert res.exit_code == 0, res.output
    lost = 2  # gw-01 lost two readings, declared as gaps
    assert f"wrote {out}: {2 * READINGS_PER_GATEWAY - lost} readings" in res.output
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "bagit.txt",
        "bag-info.txt",
        "manifest-sha256.txt",
        "tagmanifest-sha256.txt",
        "manifest-sha256.txt.sig",
        "org-public-key.pem",
        "data/readings.csv",
        "data/readings.jsonl",
        "data/gaps.csv",
        "data/batches.jsonl",
        "data/registry.json",
        "data/completeness.csv",
        "data/report.html",
        "data/quarantined.jsonl",
    } == names
    assert (out / "data/quarantined.jsonl").read_bytes() == b""  # nothing was quarantined
    assert "Farmtel-Quarantined: 0\n" in (out / "bag-info.txt").read_text()

    pinned = runner.invoke(cli.app, ["verify", str(out), "--pubkey", str(history["pub"])])
    assert pinned.exit_code == 0, pinned.output
    assert pinned.output.startswith("VERDICT: VALID")
    embedded = runner.invoke(cli.app, ["verify", str(out)])
    assert embedded.exit_code == 0
    assert "CHECKED WITH THE KEY INSIDE THE BUNDLE" in embedded.output

    registry = orjson.loads((out / "data/registry.json").read_bytes())
    assert {g["gateway"] for g in registry["gateways"]} == {"gw-01", "gw-02"}
    cal = [(c["sensor"], c["cal"]) for c in registry["calibrations"]]
    assert cal == [("s-0", "v1"), ("s-0", "v2")]
    gaps = (out / "data/gaps.csv").read_text().splitlines()
    assert len(gaps) == 3 and all(",outbox_full," in g for g in gaps[1:])
    row = orjson.loads((out / "data/readings.jsonl").read_bytes().split(b"\n")[0])
    assert row["time_utc"] == "2026-05-28T00:00:00.000000000Z" and row["batch"]
    header = (out / "data/readings.csv").read_text().splitlines()[0]
    assert header.endswith(",batch,moisture_pct,temp_c,wind_ms")


def test_completeness_follows_the_documented_rule(built: Built) -> None:
    lines = (built.root / "data/completeness.csv").read_text().splitlines()
    rows = {tuple(line.split(",")[:2]): line.split(",") for line in lines[1:]}
    # gw-02/s-0: every 30 s, 45 readings in the day -> expected 2880.
    gw2 = rows[("gw-02", "s-0")]
    assert gw2[5:] == ["45", "2880", "30.0", repr(round(100 * 45 / 2880, 1))]
    # gw-01/s-0 lost none of its 30 readings (s-1 and s-2 lost one each); median 60 s.
    assert rows[("gw-01", "s-0")][5:8] == ["30", "1440", "60.0"]
    assert rows[("gw-01", "s-1")][5:8] == ["29", "1440", "60.0"]


def test_a_period_that_cuts_batches_still_verifies(
    history: dict[str, object], tmp_path: Path
) -> None:
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    reg = orjson.loads(
        orjson.dumps(registry_json(PLANTATION, history["plans"]))  # type: ignore[arg-type]
    )
    # 10 readings into gw-01's first batch, to the middle of its third.
    span = Span(START_NS + 10 * 20 * 10**9, START_NS + 60 * 20 * 10**9)
    org = load_org_key(Path(str(history["org"])))
    summary = export_bundle(query, PLANTATION, span, tmp_path / "b", org, reg)
    assert summary.outside_period > 0
    verdict = verify_bundle(FolderBundle(tmp_path / "b"), org.public_key())
    assert verdict.ok, verdict.render()


def test_small_pages_give_the_same_rows(
    history: dict[str, object], built: Built, tmp_path: Path
) -> None:
    """Pages of 1 and 7 rows (many share a timestamp) lose and double nothing."""
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    reg = orjson.loads((built.root / "data/registry.json").read_bytes())
    reg.pop("calibrations")
    want = (built.root / "data/readings.jsonl").read_bytes()
    for rows in (1, 7):
        out = tmp_path / f"p{rows}"
        export_bundle(query, PLANTATION, Span(*PERIOD), out, built.org_key, reg, page_rows=rows)
        assert (out / "data/readings.jsonl").read_bytes() == want


def test_unsigned_batches_are_named(history: dict[str, object], tmp_path: Path) -> None:
    plan = GatewayPlan("gw-09", sensors=1)
    write_batches(
        str(history["url"]),
        str(history["database"]),
        "cert-unsigned",
        make_batches("cert-unsigned", plan, 30, batch_size=10, signed=False),
    )
    query, org = _query_and_org(history)
    summary = export_bundle(
        query,
        "cert-unsigned",
        Span(*PERIOD),
        tmp_path / "u",
        org,
        registry_json("cert-unsigned", [plan]),
    )
    assert summary.unsigned_batches == 3
    assert "not signed" in summary.warnings[0]
    verdict = verify_bundle(FolderBundle(tmp_path / "u"), org.public_key())
    assert not verdict.ok
    assert sum("batch is not signed" in f for f in verdict.failures) == 3


def test_a_hole_without_a_declared_gap_is_named(built: Built) -> None:
    """A dishonest exporter drops a whole batch and reseals: continuity catches it."""
    files = built.memory().files
    batches = files["data/batches.jsonl"].split(b"\n")
    victim = orjson.loads(batches[2])
    assert victim["gateway"] == "gw-01" and victim["gaps"] == 0
    files["data/batches.jsonl"] = b"\n".join(batches[:2] + batches[3:])
    bid = victim["batch"].encode()
    for name in ("data/readings.jsonl", "data/readings.csv"):
        files[name] = b"\n".join(
            line
            for line in files[name].split(b"\n")
            if f'"{victim["batch"]}"'.encode() not in line and b"," + bid + b"," not in line
        )
    verdict = verify_bundle(MemoryBundle(reseal(files, built.org_key)), built.org_key.public_key())
    first, last = victim["first_seq"], victim["last_seq"]
    assert [f for f in verdict.failures if "missing and no declared gap" in f] == [
        f"gateway gw-01: seq {first}..{last} ({last - first + 1} reading(s)) are missing and "
        "no declared gap accounts for them"
    ]


def test_the_pinned_key_file_loads(built: Built) -> None:
    key = load_pubkey_file(built.pub_path)
    assert verify_bundle(FolderBundle(built.root), key).ok


def test_a_stepped_clock_does_not_break_a_batch(history: dict[str, object], tmp_path: Path) -> None:
    """A reading in the middle of the period dated a day early (the gateway clock stepped):
    the export still carries it, so its batch's signature checks."""
    from contract import signing

    plan = GatewayPlan("gw-07", sensors=2)
    batches = list(make_batches("cert-step", plan, 60, batch_size=20, signed=False))
    middle = batches[1]
    stepped = middle.readings[5].model_copy(update={"ts": middle.readings[5].ts - 86_400 * 10**9})
    readings = [*middle.readings[:5], stepped, *middle.readings[6:]]
    middle = middle.model_copy(update={"readings": readings})
    batches[1] = middle.model_copy(
        update={"sig": signing.sign(plan.key, signing.batch_message("cert-step", middle))}
    )
    for i in (0, 2):
        batches[i] = batches[i].model_copy(
            update={"sig": signing.sign(plan.key, signing.batch_message("cert-step", batches[i]))}
        )
    write_batches(str(history["url"]), str(history["database"]), "cert-step", iter(batches))
    query, org = _query_and_org(history)
    summary = export_bundle(
        query, "cert-step", Span(*PERIOD), tmp_path / "s", org, registry_json("cert-step", [plan])
    )
    assert summary.readings == 60 and summary.outside_period == 1
    assert verify_bundle(FolderBundle(tmp_path / "s"), org.public_key()).ok


def test_quarantined_readings_are_exported_and_verify(
    history: dict[str, object], tmp_path: Path
) -> None:
    """A signed batch with one future-dated reading, split and stored the way the ingest
    does: the bundle puts that reading in quarantined.jsonl (not in readings), verify
    rebuilds the signed message from both files and says VALID, and an edit of the
    quarantined row is caught."""
    from contract import signing
    from ingest.influx import InfluxSettings, V1Writer
    from ingest.mapping import batch_to_lines
    from ingest.quarantine import split_batch

    plan = GatewayPlan("gw-05", sensors=1)
    batches = list(make_batches("cert-q", plan, 20, batch_size=10))
    rs = list(batches[1].readings)
    rs[3] = rs[3].model_copy(update={"ts": rs[3].ts + 10**15})  # 11.6 days ahead
    bad = batches[1].model_copy(update={"readings": rs, "sig": None})
    bad = bad.model_copy(
        update={"sig": signing.sign(plan.key, signing.batch_message("cert-q", bad))}
    )
    kept, quarantine = split_batch("cert-q", bad, rs[-1].ts + 1, None, 0)
    assert len(quarantine) == 1 and len(kept.readings) == 9
    write_batches(str(history["url"]), str(history["database"]), "cert-q", iter([batches[0]]))
    writer = V1Writer(InfluxSettings(url=str(history["url"]), database=str(history["database"])))
    writer.write(("\n".join(batch_to_lines("cert-q", kept, signed=bad) + quarantine)).encode())
    writer.close()
    query, org = _query_and_org(history)
    out = tmp_path / "q"
    summary = export_bundle(
        query, "cert-q", Span(*PERIOD), out, org, registry_json("cert-q", [plan])
    )
    assert summary.warnings == []
    assert summary.readings == 19 and summary.quarantined == 1
    held = (out / "data/quarantined.jsonl").read_bytes().splitlines()
    assert len(held) == 1
    row = orjson.loads(held[0])
    assert row["seq"] == rs[3].seq and row["ts_ns"] == rs[3].ts
    assert row["quarantine_reason"] == "future" and row["batch"] == bad.batch
    assert row["values"] == dict(rs[3].values)
    seqs = [orjson.loads(line)["seq"] for line in (out / "data/readings.jsonl").open("rb")]
    assert rs[3].seq not in seqs and len(seqs) == 19
    record = next(
        orjson.loads(line)
        for line in (out / "data/batches.jsonl").open("rb")
        if orjson.loads(line)["batch"] == bad.batch
    )
    assert (record["readings"], record["quarantined"]) == (10, 1)
    assert (record["first_seq"], record["last_seq"]) == (rs[0].seq, rs[-1].seq)
    assert "data/quarantined.jsonl" in (out / "manifest-sha256.txt").read_text()
    assert "Farmtel-Quarantined: 1\n" in (out / "bag-info.txt").read_text()
    report = (out / "data/report.html").read_text()
    assert "Quarantined readings (not data)" in report and "19 readings" in report
    completeness = (out / "data/completeness.csv").read_text().splitlines()[1:]
    assert sum(int(line.split(",")[5]) for line in completeness) == 19

    verdict = verify_bundle(FolderBundle(out), org.public_key())
    assert verdict.ok, verdict.render()
    assert verdict.readings == 19 and verdict.quarantined == 1
    assert "1 quarantined reading(s)" in verdict.render()

    files = MemoryBundle.load(FolderBundle(out)).files
    value = next(iter(row["values"]))
    row["values"][value] += 1.0
    tampered = dict(files)
    tampered["data/quarantined.jsonl"] = orjson.dumps(row) + b"\n"
    verdict = verify_bundle(MemoryBundle(reseal(tampered, org)), org.public_key())
    assert not verdict.ok
    assert any(f"batch {bad.batch}" in f and "does not match" in f for f in verdict.failures)

    dropped = dict(files)
    dropped["data/quarantined.jsonl"] = b""
    text = verify_bundle(MemoryBundle(reseal(dropped, org)), org.public_key()).render()
    assert "NOT VALID" in text and "quarantined reading(s) of it" in text


def test_a_signed_minus_zero_survives_export_and_verify(
    history: dict[str, object], tmp_path: Path
) -> None:
    """A sensor near 0 °C prints -0.0 and the gateway signs it so. InfluxDB answers the
    stored -0.0 as ``-0``; read as the int 0 it became 0.0 in the export, and verify
    failed the honest batch's signature."""
    import math

    from contract import signing

    plan = GatewayPlan("gw-08", sensors=2)
    batches = list(make_batches("cert-nz", plan, 40, batch_size=20, signed=False))
    first = batches[0]
    first.readings[3].values["temp_c"] = -0.0
    batches = [
        b.model_copy(update={"sig": signing.sign(plan.key, signing.batch_message("cert-nz", b))})
        for b in batches
    ]
    write_batches(str(history["url"]), str(history["database"]), "cert-nz", iter(batches))
    query, org = _query_and_org(history)
    out = tmp_path / "nz"
    summary = export_bundle(
        query, "cert-nz", Span(*PERIOD), out, org, registry_json("cert-nz", [plan])
    )
    assert summary.readings == 40
    rows = [orjson.loads(line) for line in (out / "data/readings.jsonl").read_bytes().splitlines()]
    zeros = [r for r in rows if r["seq"] == first.readings[3].seq]
    assert len(zeros) == 1
    assert math.copysign(1.0, zeros[0]["values"]["temp_c"]) == -1.0
    verdict = verify_bundle(FolderBundle(out), org.public_key())
    assert verdict.ok, verdict.render()


def test_an_empty_export_says_so(history: dict[str, object], tmp_path: Path) -> None:
    """A plantation with nothing stored in the period: the bundle is written (and verifies),
    but the exporter is told it is empty and what to check."""
    query, org = _query_and_org(history)
    plan = GatewayPlan("gw-09", sensors=1)
    summary = export_bundle(
        query, "cert-empty", Span(*PERIOD), tmp_path / "e", org, registry_json("cert-empty", [plan])
    )
    assert summary.readings == 0 and summary.gaps == 0
    (warning,) = [w for w in summary.warnings if "empty" in w]
    assert warning.startswith(
        "the bundle is empty: InfluxDB holds no readings and no gaps of plantation 'cert-empty'"
    )
    assert "check --plantation, --from and --to" in warning


def test_a_batch_declaring_a_long_downtime_in_pieces_verifies(
    history: dict[str, object], tmp_path: Path
) -> None:
    """The agent declares a downtime of 40 days in day-long pieces (agent/downtime.py), all in
    the batch sent after it. An export of a week at its end, or of a day inside it, must carry
    every piece the batch signed: those starting before the 31-day lookback, and those
    starting after the period."""
    from agent.downtime import in_pieces
    from contract import signing
    from contract.wire import Gap

    day = 86_400 * 10**9
    plan = GatewayPlan("gw-08", sensors=2)
    back = START_NS + 40 * day
    before, after = list(make_batches("cert-down", plan, 40, batch_size=20, signed=False))[:2]
    late = list(make_batches("cert-down", plan, 20, start_ns=back, batch_size=20, signed=False))
    down = Gap(
        start=before.readings[-1].ts + 1,
        end=back - 1,
        reason="agent_down",
        detail="the agent was not running: it was stopped",
    )
    pieces = in_pieces(down)
    assert len(pieces) == 40
    readings = [r.model_copy(update={"seq": 40 + i}) for i, r in enumerate(late[0].readings)]
    resumed = late[0].model_copy(update={"batch": "gw-08-b3", "readings": readings, "gaps": pieces})
    batches = [before, after, resumed]
    batches = [
        b.model_copy(update={"sig": signing.sign(plan.key, signing.batch_message("cert-down", b))})
        for b in batches
    ]
    write_batches(str(history["url"]), str(history["database"]), "cert-down", iter(batches))
    query, org = _query_and_org(history)
    registry = registry_json("cert-down", [plan])
    for name, span in (
        ("last-week", Span(back - 7 * day, back + day)),
        ("a-day-inside", Span(START_NS + 20 * day, START_NS + 21 * day)),
    ):
        export_bundle(query, "cert-down", span, tmp_path / name, org, registry)
        verdict = verify_bundle(FolderBundle(tmp_path / name), org.public_key())
        assert verdict.ok, (name, verdict.render())
        gaps_csv = (tmp_path / name / "data" / "gaps.csv").read_text().splitlines()
        assert len(gaps_csv) == 1 + 40, name
