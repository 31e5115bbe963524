"""What verify says about a changed bundle: each root cause named once, in the certifier's
terms (the organisation's seal, bag-info.txt's fields, the CSV column that differs).

The bundle is the genuine export of tests/certify/conftest.py (two gateways, 178 readings
in 8 batches, 2 declared gaps); each change is made in memory, resealed with the genuine
organisation key unless the seal itself is the point.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certify import verify
from certify.bag import FolderBundle, MemoryBundle
from certify.export import export_bundle
from certify.orgkey import SEAL_FILE, load_org_key
from certify.source import Span
from certify.verify import MAX_LISTED, Verdict, verify_bundle
from contract import signing
from ingest.influx import InfluxQuery
from tests.certify.bundles import PERIOD, PLANTATION, Built, reseal
from tests.certify.synth import DAY_NS
from tests.certify.test_verify_fast import Shape, build, sequential

Files = dict[str, bytes]
START = "2026-05-28T00:00:00.000000000Z"
END = "2026-05-29T00:00:00.000000000Z"


def _verdict(built: Built, files: Files, key: object = None) -> Verdict:
    pinned = built.org_key.public_key() if key is None else key
    return verify_bundle(MemoryBundle(files), pinned)  # type: ignore[arg-type]


def _bag_info(files: Files, field: str, value: str) -> Files:
    info = re.sub(
        rf"^{field}: .*$".encode(), f"{field}: {value}".encode(), files["bag-info.txt"], flags=re.M
    )
    assert info != files["bag-info.txt"], field
    return {**files, "bag-info.txt": info}


def _lines(files: Files, name: str) -> list[bytes]:
    return files[name].split(b"\n")


# -- 1. the seal speaks of the organisation's key and the manifests ------------------------


def test_a_seal_by_another_key_names_both_keys(built: Built) -> None:
    other = Ed25519PrivateKey.generate()
    org_id = signing.key_id(built.org_key.public_key())
    other_id = signing.key_id(other.public_key())
    verdict = _verdict(built, reseal(built.memory().files, other))
    assert verdict.failures == [
        f"the seal was made with key {other_id}, not the organisation key you gave ({org_id}): "
        "the bundle was not sealed by the holder of that key, or --pubkey is not the "
        "exporting organisation's key"
    ]


def test_a_seal_that_does_not_match_the_key_inside_the_bundle(built: Built) -> None:
    """No --pubkey: the key in org-public-key.pem is the one the seal must be made with."""
    files = built.memory().files
    forged = reseal(files, Ed25519PrivateKey.generate())
    forged["org-public-key.pem"] = files["org-public-key.pem"]
    verdict = verify_bundle(MemoryBundle(forged), None)
    seal = [f for f in verdict.failures if "seal" in f]
    assert seal == [
        f"the seal was made with key {forged[SEAL_FILE].decode().split(':')[1]}, not "
        f"the key in org-public-key.pem ({signing.key_id(built.org_key.public_key())})"
    ]


@pytest.mark.parametrize(
    "name", ["manifest-sha256.txt", "tagmanifest-sha256.txt", "manifest-sha256.txt.sig"]
)
def test_a_swapped_manifest_or_seal_is_named_as_such(built: Built, name: str) -> None:
    files = built.memory().files
    other = reseal({**files, "data/report.html": files["data/report.html"] + b" "}, built.org_key)
    verdict = _verdict(built, {**files, name: other[name]})
    seal = [f for f in verdict.failures if "seal" in f]
    assert seal == [
        "the seal does not match manifest-sha256.txt and tagmanifest-sha256.txt: they were "
        "changed after sealing (or the seal comes from another bundle)"
    ]
    assert not any("gateway" in f or "batch" in f for f in verdict.failures)


def test_the_org_key_id_in_bag_info_is_the_seals(built: Built) -> None:
    files = reseal(_bag_info(built.memory().files, "Farmtel-Org-Key-Id", "0" * 16), built.org_key)
    assert _verdict(built, files).failures == [
        f"bag-info.txt Farmtel-Org-Key-Id is {'0' * 16}, but the seal was made with key "
        f"{signing.key_id(built.org_key.public_key())}"
    ]


# -- 2. bag-info.txt: counts, period, plantation; the VALID line ---------------------------


def test_the_valid_verdict_names_plantation_period_and_seq_ranges(built: Built) -> None:
    text = _verdict(built, built.memory().files).render()
    assert text.startswith(
        f"VERDICT: VALID. Plantation {PLANTATION}, {START} to {END} (end excluded): 178 "
        "readings in 8 batches, every batch signature checks (8), 2 declared gaps cover every "
        "hole in the sequence numbers. Sequence numbers per gateway: gw-01 0..89, gw-02 "
        "0..89.\n"
    )


@pytest.mark.parametrize(
    ("field", "value", "failure"),
    [
        (
            "Farmtel-Readings",
            "999",
            "bag-info.txt Farmtel-Readings is 999, but data/readings.jsonl holds 178 readings",
        ),
        (
            "Farmtel-Batches",
            "7",
            "bag-info.txt Farmtel-Batches is 7, but data/batches.jsonl holds 8 batch records",
        ),
        ("Farmtel-Gaps", "0", "bag-info.txt Farmtel-Gaps is 0, but data/gaps.csv holds 2 gaps"),
        ("Farmtel-Gaps", "two", "bag-info.txt Farmtel-Gaps is 'two', not a whole number"),
        (
            "Farmtel-Quarantined",
            "3",
            "bag-info.txt Farmtel-Quarantined is 3, but data/quarantined.jsonl holds 0 "
            "quarantined readings",
        ),
        (
            "Farmtel-Quarantined",
            "-1",
            "bag-info.txt Farmtel-Quarantined is '-1', not a whole number",
        ),
        (
            "Farmtel-Period-End",
            "tomorrow",
            "bag-info.txt Farmtel-Period-End is 'tomorrow', not a time as export writes it "
            "(2026-01-01T00:00:00.000000000Z)",
        ),
        (
            "Farmtel-Period-End",
            START,
            f"bag-info.txt Farmtel-Period-Start {START} is not before Farmtel-Period-End {START}",
        ),
        (
            "Farmtel-Plantation",
            "",
            "bag-info.txt has no Farmtel-Plantation (every export writes it)",
        ),
    ],
)
def test_a_resealed_bag_info_field_is_checked(
    built: Built, field: str, value: str, failure: str
) -> None:
    files = reseal(_bag_info(built.memory().files, field, value), built.org_key)
    assert _verdict(built, files).failures == [failure]


def test_a_bundle_from_before_farmtel_quarantined_still_verifies(built: Built) -> None:
    """Exports before the field was written have no Farmtel-Quarantined line: not a failure."""
    files = built.memory().files
    info = re.sub(rb"^Farmtel-Quarantined: .*\n", b"", files["bag-info.txt"], flags=re.M)
    assert info != files["bag-info.txt"]
    old = reseal({**files, "bag-info.txt": info}, built.org_key)
    assert _verdict(built, old).failures == []


def test_readings_before_the_period_that_no_edge_batch_explains(built: Built) -> None:
    """The period's start moved past gw-01's first 40 minutes: its first batches are not cut
    by the period, so their readings have no business in the bundle."""
    files = built.memory().files
    moved = reseal(
        _bag_info(files, "Farmtel-Period-Start", "2026-05-28T00:10:00.000000000Z"), built.org_key
    )
    failures = _verdict(built, moved).failures
    assert failures[0] == (
        "batch gw-01-b1 (gateway gw-01, seq 0..25) has 25 reading(s) dated outside the period "
        f"2026-05-28T00:10:00.000000000Z to {END} (the first at {START}), and the period does "
        "not cut it: gw-01's readings in the period are seq 30..89, and it declares no gap in "
        "the period"
    )
    # gw-01-b2 (seq 26..51) holds readings before and in the period: an edge batch, allowed.
    assert all("gw-01-b2" not in f and "gw-02-b2" not in f for f in failures), failures
    assert len(failures) == 2 and "batch gw-02-b1 (gateway gw-02, seq 0..24)" in failures[1]


def test_readings_after_the_period_that_no_edge_batch_explains(built: Built) -> None:
    files = built.memory().files
    cut = reseal(
        _bag_info(files, "Farmtel-Period-End", "2026-05-28T00:20:00.000000000Z"), built.org_key
    )
    assert _verdict(built, cut).failures == [
        "batch gw-01-b4 (gateway gw-01, seq 77..89) has 13 reading(s) dated outside the period "
        f"{START} to 2026-05-28T00:20:00.000000000Z (the first at "
        "2026-05-28T00:25:40.000000000Z), and the period does not cut it: gw-01's readings in "
        "the period are seq 0..59, and it declares no gap in the period"
    ]


def test_a_registry_of_another_plantation(built: Built) -> None:
    files = built.memory().files
    reg = orjson.loads(files["data/registry.json"])
    reg["plantation"] = "zzz"
    files = reseal({**files, "data/registry.json": orjson.dumps(reg)}, built.org_key)
    assert _verdict(built, files).failures == [
        f"data/registry.json is for plantation 'zzz', the bundle (bag-info.txt "
        f"Farmtel-Plantation) for {PLANTATION!r}"
    ]


def test_the_fast_path_checks_the_period_and_counts_as_the_sequential_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A synthetic bundle whose period cuts each gateway's first batch: the fast path shows
    it clean; with the period moved so that a batch is wholly before it, the fast path does
    not, and both ways give the same verdict."""
    monkeypatch.setattr(verify, "FAST_FROM_BYTES", 0)
    syn = build(tmp_path, Shape())
    pinned = syn.org.public_key()
    fast = verify._FastPath.start(syn.memory())
    assert fast is not None and fast.run() is not None
    for field, value in [
        ("Farmtel-Period-Start", "2026-05-28T00:20:00.000000000Z"),
        ("Farmtel-Readings", "7"),
    ]:
        files = reseal(_bag_info(syn.files, field, value), syn.org)
        reference = sequential(MemoryBundle(files), pinned)
        assert reference.startswith("VERDICT: NOT VALID. "), reference
        assert ("dated outside the period" if "Period" in field else field) in reference
        assert verify_bundle(MemoryBundle(files), pinned).render() == reference
    files = reseal(
        _bag_info(syn.files, "Farmtel-Period-Start", "2026-05-28T00:20:00.000000000Z"), syn.org
    )
    fast = verify._FastPath.start(MemoryBundle(files))
    assert fast is not None and fast.run() is None


# -- 3. readings.csv: what differs, once ---------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            b",sensor,",
            b",SENSOR,",
            "data/readings.csv header differs from the export's: column 4 is 'SENSOR', "
            "expected 'sensor' (found plantation,field,gateway,SENSOR,kind,time_utc,ts_ns,clock,"
            "seq,cal,batch; expected plantation,field,gateway,sensor,kind,time_utc,ts_ns,clock,"
            "seq,cal,batch, then one column per value): its lines were not compared with "
            "data/readings.jsonl",
        ),
        (
            b",temp_c,",
            b",temp_f,",
            "data/readings.csv has no column temp_c, which data/readings.jsonl line 1 has (its "
            "value columns are moisture_pct,temp_f,wind_ms): its lines were not compared further",
        ),
    ],
    ids=["fixed-column", "value-column"],
)
def test_a_changed_csv_header_is_named_once(
    built: Built, old: bytes, new: bytes, expected: str
) -> None:
    files = built.memory().files
    lines = _lines(files, "data/readings.csv")
    lines[0] = lines[0].replace(old, new)
    files = reseal({**files, "data/readings.csv": b"\n".join(lines)}, built.org_key)
    assert _verdict(built, files).failures == [expected]


def test_lf_line_endings_are_named_once(built: Built) -> None:
    files = built.memory().files
    lf = files["data/readings.csv"].replace(b"\r\n", b"\n")
    assert _verdict(built, reseal({**files, "data/readings.csv": lf}, built.org_key)).failures == [
        "data/readings.csv has LF line endings; the export writes CRLF: was it opened and "
        "saved in an editor?"
    ]
    # ... and a value changed as well is still named.
    lf = lf.replace(b",11.0,", b",11.5,", 1)
    failures = _verdict(built, reseal({**files, "data/readings.csv": lf}, built.org_key)).failures
    assert (
        len(failures) == 2
        and "temp_c is '11.5' in the CSV, '11.0' in the JSON Lines" in failures[1]
    )


def test_a_byte_order_mark_is_named(built: Built) -> None:
    files = built.memory().files
    bom = b"\xef\xbb\xbf" + files["data/readings.csv"]
    assert _verdict(built, reseal({**files, "data/readings.csv": bom}, built.org_key)).failures == [
        "data/readings.csv starts with a byte order mark (BOM); the export writes none: was it "
        "opened and saved in an editor?"
    ]


def test_a_csv_line_that_differs_names_the_column_and_both_values(built: Built) -> None:
    files = built.memory().files
    lines = _lines(files, "data/readings.csv")
    cells = lines[5].split(b",")
    clock = cells[7].decode()
    cells[7] = b"stepped"
    lines[5] = b",".join(cells)
    files = reseal({**files, "data/readings.csv": b"\n".join(lines)}, built.org_key)
    assert _verdict(built, files).failures == [
        "data/readings.csv line 6 differs from data/readings.jsonl line 5: clock is 'stepped' "
        f"in the CSV, {clock!r} in the JSON Lines"
    ]


def test_many_differing_lines_are_listed_then_counted(built: Built) -> None:
    files = built.memory().files
    changed = files["data/readings.csv"].replace(b",11.0,", b",12.0,")
    differing = changed.count(b",12.0,")
    assert differing > MAX_LISTED
    verdict = _verdict(built, reseal({**files, "data/readings.csv": changed}, built.org_key))
    assert len(verdict.failures) == MAX_LISTED + 1
    assert verdict.failures[-1] == (
        f"... and {differing - MAX_LISTED} more data/readings.csv lines that differ from "
        "data/readings.jsonl"
    )
    assert verdict.render().startswith(f"VERDICT: NOT VALID. {differing} failure(s):")


# -- 4. one root cause, one failure --------------------------------------------------------


def test_a_duplicated_reading_is_named_once(built: Built) -> None:
    files = built.memory().files
    jl, cl = _lines(files, "data/readings.jsonl"), _lines(files, "data/readings.csv")
    jl.insert(100, jl[100])
    cl.insert(101, cl[101])
    seq = orjson.loads(jl[100])["seq"]
    files = {**files, "data/readings.jsonl": b"\n".join(jl), "data/readings.csv": b"\n".join(cl)}
    assert _verdict(built, reseal(files, built.org_key)).failures == [
        f"data/readings.jsonl line 102: gateway gw-01 seq {seq} appears twice"
    ]


def test_a_wrong_time_utc_is_named_once(built: Built) -> None:
    files = built.memory().files
    jl = _lines(files, "data/readings.jsonl")
    row = orjson.loads(jl[42])
    row["time_utc"] = row["time_utc"][:-3] + "01Z"
    jl[42] = orjson.dumps(row)
    files = reseal({**files, "data/readings.jsonl": b"\n".join(jl)}, built.org_key)
    assert _verdict(built, files).failures == [
        f"data/readings.jsonl line 43: time_utc {row['time_utc']!r} does not match ts_ns "
        f"{row['ts_ns']}"
    ]


@pytest.mark.parametrize("line", [b'{"garbage', b'{"plantation": "cert-p1"}'])
def test_an_unreadable_reading_line_is_named_once(built: Built, line: bytes) -> None:
    """The readings.csv line beside it still tells its gateway, seq and batch: neither the
    batch nor the seqs are named again."""
    files = built.memory().files
    jl = _lines(files, "data/readings.jsonl")
    jl[42] = line
    failures = _verdict(
        built, reseal({**files, "data/readings.jsonl": b"\n".join(jl)}, built.org_key)
    ).failures
    assert len(failures) == 1 and failures[0].startswith("data/readings.jsonl line 43: ")


def test_readings_of_another_plantation_are_counted(built: Built) -> None:
    files = built.memory().files
    files = {
        **files,
        "data/readings.jsonl": files["data/readings.jsonl"].replace(b'"cert-p1"', b'"cert-p9"'),
        "data/readings.csv": files["data/readings.csv"].replace(b"cert-p1,", b"cert-p9,"),
    }
    failures = _verdict(built, reseal(files, built.org_key)).failures
    other = [f for f in failures if "plantation cert-p9, the bundle is for cert-p1" in f]
    assert len(other) == MAX_LISTED
    assert f"... and {178 - MAX_LISTED} more readings of another plantation" in failures


def test_a_deleted_file_is_named_once(built: Built) -> None:
    files = built.memory().files
    del files["data/gaps.csv"]
    assert _verdict(built, files).failures == [
        "data/gaps.csv is missing (listed in manifest-sha256.txt)"
    ]


# -- 5. a folder that is not a bundle -------------------------------------------------------


def test_a_folder_of_bundles_is_not_a_bundle(built: Built, tmp_path: Path) -> None:
    for name in ("2025", "2026"):
        shutil.copytree(built.root, tmp_path / name)
    verdict = verify_bundle(FolderBundle(tmp_path), built.org_key.public_key())
    assert verdict.not_a_bundle and not verdict.ok
    assert verdict.render() == (
        f"VERDICT: NOT VALID. {tmp_path} is not a bundle (no bagit.txt); it holds bundles "
        "(2025, 2026): verify each one\n"
    )
    inner = verify_bundle(FolderBundle(tmp_path / "2025" / "data"), None)
    assert inner.not_a_bundle and "it looks like a bundle's data/ folder" in inner.failures[0]


def test_a_bundle_without_bagit_txt_is_a_bundle_that_fails(built: Built) -> None:
    """Only bagit.txt gone: a damaged bundle (its tampering is a failure), not bad input."""
    files = built.memory().files
    del files["bagit.txt"]
    verdict = _verdict(built, files)
    assert not verdict.not_a_bundle and verdict.failures == ["bagit.txt is missing"]


# -- 6. a bundle without readings ------------------------------------------------------------


def test_an_empty_bundle_says_so(history: dict[str, object], tmp_path: Path) -> None:
    """The day after the history: no reading, batch or gap. Valid, and said plainly."""
    query = history["query"]
    assert isinstance(query, InfluxQuery)
    org = load_org_key(Path(str(history["org"])))
    from certify.devices import load_registry_file

    reg = load_registry_file(Path(str(history["registry"])), PLANTATION)
    span = Span(PERIOD[1], PERIOD[1] + DAY_NS)
    export_bundle(query, PLANTATION, span, tmp_path / "empty", org, reg)
    verdict = verify_bundle(FolderBundle(tmp_path / "empty"), org.public_key())
    assert verdict.ok and verdict.readings == 0
    assert verdict.render().startswith(
        f"VERDICT: VALID. THE BUNDLE HOLDS NO READINGS. Plantation {PLANTATION}, {END} to "
        "2026-05-30T00:00:00.000000000Z (end excluded): 0 batches, 0 declared gaps.\n"
    )
