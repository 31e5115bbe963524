"""Times outside what InfluxDB stores (ns since the epoch in a signed 64-bit int), given to
the query and export commands: exit 2 and one line naming the option, the value and the
allowed range, never a traceback. All but the last test fail before any server is asked
(the URL is a closed port: reaching it would be exit 1, not 2)."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from certify.commands import _export_span
from certify.orgkey import new_key_file
from ingest.influx import InfluxSettings, make_writer
from ingest.line_protocol import MAX_TIME_NS, MIN_TIME_NS, encode_point
from ingest.queries import (
    EARLIEST,
    LATEST,
    QueryInputError,
    TimeRange,
    format_duration,
    parse_duration,
    parse_time,
    time_range,
    utc_text,
)
from tests.certify.synth import GatewayPlan, registry_json
from tests.support.cli_inproc import invoke

P = "hlj-tl-001"
E, L = utc_text(EARLIEST), utc_text(LATEST)
DAY = timedelta(days=1)


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _refused(args: list[str], *needles: str) -> str:
    res = invoke([*args, "--url", _closed_url()])
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "Traceback" not in out
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- the audit's cases, through the real CLI ---------------------------------------------------


def test_gaps_since_reaching_before_influxdb() -> None:
    _refused(
        ["query", "gaps", "--plantation", P, "--since", "99999999d"],
        "--since '99999999d' reaches back before " + E,
        "the longest --since allowed now is ",
    )


def test_summary_since_with_a_huge_number() -> None:
    line = _refused(
        ["query", "summary", "--plantation", P, "--since", "9999999999999999999999w"],
        "--since '9999999999999999999999w'",
        "the earliest time InfluxDB stores",
    )
    assert line.endswith("w")  # the longest --since, in the unit the user wrote


def test_since_with_more_digits_than_int_takes() -> None:
    _refused(["query", "summary", "--plantation", P, "--since", "9" * 5000 + "s"], "--since '999")


def test_gaps_from_year_1() -> None:
    _refused(
        ["query", "gaps", "--plantation", P, "--from", "0001-01-01"],
        "--from '0001-01-01' is before the earliest time InfluxDB stores",
        f"between {E} and {L}",
    )


def test_summary_from_1500() -> None:
    _refused(
        ["query", "summary", "--plantation", P, "--from", "1500-01-01"],
        "--from '1500-01-01' is before the earliest time InfluxDB stores",
        f"between {E} and {L}",
    )


def test_summary_range_after_2262() -> None:
    _refused(
        ["query", "summary", "--plantation", P, "--from", "2300-01-01", "--to", "2301-01-01"],
        "--from '2300-01-01' is after the latest time InfluxDB stores",
        f"between {E} and {L}",
    )
    _refused(
        ["query", "summary", "--plantation", P, "--from", "2026-01-01", "--to", "2301-01-01"],
        "--to '2301-01-01' is after the latest time InfluxDB stores",
    )


def test_history_since_100000w() -> None:
    _refused(
        ["query", "history", "--plantation", P, "--since", "100000w"],
        "--since '100000w' reaches back before",
    )


def test_history_windows_message_writes_the_span_as_a_duration() -> None:
    line = _refused(
        ["query", "history", "--plantation", P, "--since", "15000w", "--every", "1h"],
        "--every 1h over 105000d gives 2520000 windows",
    )
    assert "days," not in line and "0:00:00" not in line


def test_history_every_too_long_for_influxdb() -> None:
    _refused(
        ["query", "history", "--plantation", P, "--since", "1d", "--every", "99999999999w"],
        "--every '99999999999w' is too long",
        "15250w",
    )


@pytest.fixture
def export_args(tmp_path: Path) -> list[str]:
    key, reg = tmp_path / "org.pem", tmp_path / "reg.json"
    new_key_file(key)
    reg.write_bytes(orjson.dumps(registry_json("p1", [GatewayPlan("gw-01")])))
    return ["export", "--plantation", "p1", "--out", str(tmp_path / "out"), "--key", str(key),
            "--registry", str(reg), "--no-progress"]  # fmt: skip


def test_export_from_year_1(export_args: list[str]) -> None:
    _refused(
        [*export_args, "--from", "0001-01-01", "--to", "2026-01-01"],
        "--from '0001-01-01' is before the earliest time InfluxDB stores",
        f"between {E} and {L}",
    )


def test_export_to_after_2262(export_args: list[str]) -> None:
    _refused(
        [*export_args, "--from", "2026-01-01", "--to", "2300-01-01"],
        "--to '2300-01-01' is after the latest time InfluxDB stores",
    )


def test_export_period_whose_lookback_leaves_influxdb(export_args: list[str]) -> None:
    """export also reads 31 days before --from and after --to (batches sent late)."""
    _refused(
        [*export_args, "--from", E, "--to", "1677-12-01T00:00Z"],
        f"--from '{E}' is too early",
        f"give a --from of {utc_text(EARLIEST + 31 * DAY)} or later",
    )
    _refused(
        [*export_args, "--from", "2262-03-01T00:00Z", "--to", L],
        f"--to '{L}' is too late",
        f"give a --to of {utc_text(LATEST - 31 * DAY)} or earlier",
    )


def test_from_at_the_limit_reaches_the_server() -> None:
    """The earliest time is accepted: the command goes on and finds no server (exit 1)."""
    res = invoke(["query", "summary", "--plantation", P, "--from", E, "--url", _closed_url()])
    assert res.returncode == 1, res.stderr
    assert "could not be reached" in res.stderr


# -- the limits themselves ---------------------------------------------------------------------


def test_limits_are_influxdbs() -> None:
    assert (MIN_TIME_NS, MAX_TIME_NS) == (-9223372036854775806, 9223372036854775806)
    span = TimeRange(EARLIEST, LATEST)
    assert MIN_TIME_NS <= span.start_ns < MIN_TIME_NS + 1000
    assert MAX_TIME_NS - 1000 < span.end_ns <= MAX_TIME_NS
    assert (E, L) == ("1677-09-21T00:12:43.145225Z", "2262-04-11T23:47:16.854775Z")


def test_ns_are_exact() -> None:
    """Whole microseconds as ns, exactly: a float timestamp misses some near the limits."""
    t = datetime(2026, 5, 1, 6, 0, 0, 123457, tzinfo=UTC)
    assert TimeRange(t, t).start_ns == 1777615200_123457_000
    span = TimeRange(EARLIEST, LATEST)
    assert (span.start_ns, span.end_ns) == (-9223372036854775000, 9223372036854775000)


def test_parse_time_boundaries() -> None:
    assert parse_time(E, "--from") == EARLIEST
    assert parse_time(L, "--to") == LATEST
    for text in (utc_text(EARLIEST - DAY), utc_text(EARLIEST - timedelta(microseconds=1))):
        with pytest.raises(QueryInputError, match="before the earliest"):
            parse_time(text, "--from")
    for text in (utc_text(LATEST + DAY), utc_text(LATEST + timedelta(microseconds=1))):
        with pytest.raises(QueryInputError, match="after the latest"):
            parse_time(text, "--to")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("0001-01-01", "before"),
        ("0001-01-01T00:00+05:00", "before"),
        ("9999-12-31T23:59:59", "after"),
        ("9999-12-31T23:59-05:00", "after"),
    ],
)
def test_parse_time_at_the_ends_of_datetime(text: str, said: str) -> None:
    """Local or offset times that datetime cannot move to UTC are refused, not raised."""
    with pytest.raises(QueryInputError, match=re.escape(f"--from '{text}' is {said} the")):
        parse_time(text, "--from")


def test_since_boundaries() -> None:
    now = EARLIEST + 100_000 * DAY
    assert time_range("100000d", None, None, now=now).start == EARLIEST
    with pytest.raises(QueryInputError, match="longest --since allowed now is 100000d"):
        time_range("100001d", None, None, now=now)
    with pytest.raises(QueryInputError, match="longest --since allowed now is 14285w"):
        time_range("14286w", None, None, now=now)


def test_duration_boundaries() -> None:
    assert parse_duration("15250w", "--every") == timedelta(weeks=15250)
    assert parse_duration("106751d", "--every") == timedelta(days=106751)
    for text in ("15251w", "106752d", "9" * 40 + "s"):
        with pytest.raises(QueryInputError, match=f"--every '{text[:10]}"):
            parse_duration(text, "--every")


def test_export_span_boundaries() -> None:
    first, last = EARLIEST + 31 * DAY, LATEST - 31 * DAY
    assert _export_span(utc_text(first), utc_text(first + DAY)).start == first
    assert _export_span(utc_text(last - DAY), utc_text(last)).end == last
    with pytest.raises(QueryInputError, match=r"--from .* is too early"):
        _export_span(utc_text(first - DAY), utc_text(first + DAY))
    with pytest.raises(QueryInputError, match=r"--to .* is too late"):
        _export_span(utc_text(last - DAY), utc_text(last + DAY))


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(weeks=100_000), "700000d"),
        (timedelta(hours=36), "36h"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=90), "90m"),
        (timedelta(days=120) - timedelta(seconds=0.5), "about 120d"),
    ],
)
def test_format_duration(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


# -- on the real InfluxDB ----------------------------------------------------------------------


def test_points_at_the_limits_are_found(stack: Any, influx_db: str) -> None:
    """The whole allowed range is one InfluxDB accepts, and it holds points at both ends."""
    writer = make_writer(InfluxSettings(url=stack.influx_url, database=influx_db))
    tags = {"plantation": P, "field": "f", "gateway": "gw-1", "sensor": "s-1"}
    span = TimeRange(EARLIEST, LATEST)
    lines = [
        encode_point("soil", tags, {"moisture_pct": 1.0}, span.start_ns),
        encode_point("soil", tags, {"moisture_pct": 3.0}, span.end_ns - 1000),
    ]
    writer.write("\n".join(lines).encode())
    res = invoke(["query", "summary", "--plantation", P, "--from", E, "--to", L, "-f", "json",
                  "--url", stack.influx_url, "--database", influx_db])  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert [(r["count"], r["min"], r["max"]) for r in rows] == [(2, 1.0, 3.0)]
