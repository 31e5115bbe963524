"""The InfluxDB adapter against the real InfluxDB 1.6.7 of the test stack.

The v2 write path goes through tests/support/v2proxy.py (what 1.8's compatibility layer
does), since no 2.x/3.x server can be installed here. Status codes the real server will
not produce on demand (401, 429, 503) come from a canned HTTP server: fault injection.
"""

from __future__ import annotations

import json
import math
import random
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from contract.settings import ConfigError, validate
from devstack import Stack, StackInfo, free_port
from ingest.influx import (
    InfluxError,
    InfluxQuery,
    InfluxQueryError,
    InfluxRejected,
    InfluxSettings,
    InfluxUnavailable,
    Series,
    V1Writer,
    V2Writer,
    loads_answer,
    make_writer,
    quote_ident,
    quote_literal,
    redact_url,
)
from ingest.line_protocol import encode_points, float_text
from tests.support.v2proxy import V2WriteProxy

TS = 1_764_400_000_000_000_000


def _settings(stack: StackInfo, db: str, **extra: object) -> InfluxSettings:
    return InfluxSettings.model_validate({"url": stack.influx_url, "database": db, **extra})


def _rows(series: list[Series]) -> list[dict[str, object]]:
    return [dict(zip(s.columns, row, strict=True)) for s in series for row in s.values]


def _databases(query: InfluxQuery) -> list[str]:
    return [row[0] for s in query.query("SHOW DATABASES") for row in s.values]


# -- v1 writes ----------------------------------------------------------------------------------


def test_v1_write_creates_the_database_and_reads_back(stack: StackInfo, influx_db: str) -> None:
    settings = _settings(stack, influx_db)
    query = InfluxQuery(settings)
    assert influx_db not in _databases(query)
    body = encode_points(
        [
            ("soil", {"plantation": "hlj-001", "sensor": "s1"}, {"moisture_pct": 31.25}, TS),
            ("soil", {"plantation": "hlj-001", "sensor": "s2"}, {"moisture_pct": 0.1}, TS + 1),
            ("soil", {"plantation": "hlj-002", "sensor": "s1"}, {"seq": 2**62}, TS + 2),
        ]
    )
    writer = V1Writer(settings)
    writer.write(body)
    assert influx_db in _databases(query)
    rows = _rows(query.query("SELECT * FROM soil ORDER BY time"))
    assert rows == [
        {"time": TS, "moisture_pct": 31.25, "plantation": "hlj-001", "sensor": "s1", "seq": None},
        {"time": TS + 1, "moisture_pct": 0.1, "plantation": "hlj-001", "sensor": "s2", "seq": None},
        {
            "time": TS + 2,
            "moisture_pct": None,
            "plantation": "hlj-002",
            "sensor": "s1",
            "seq": 2**62,
        },
    ]
    # The same points again overwrite themselves: a replay stores nothing twice.
    writer.write(body)
    assert _rows(query.query("SELECT count(*) FROM soil"))[0]["count_moisture_pct"] == 2
    writer.close()
    query.close()


def test_every_float_form_the_encoder_writes_reads_back_exactly(
    stack: StackInfo, influx_db: str
) -> None:
    # orjson's forms ("1e-7", "0.00001", "1e+21", subnormals) are what InfluxDB 1.6.7 must
    # parse back to the same double; random bit patterns cover the rest.
    rng = random.Random(8)
    values = [1e-7, 1e-05, 1.5e-6, 1e21, 1e16, -2.5e-300, 5e-324, 1.7976931348623157e308]
    values += [0.1, -0.0, 123456789012345678.0, 0.0001, 999999999999999.9]
    while len(values) < 2_000:
        value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(value):
            values.append(value)
    texts = {float_text(v) for v in values}
    assert "1e-7" in texts and "0.00001" in texts  # the forms repr writes differently
    settings = _settings(stack, influx_db)
    writer = V1Writer(settings)
    writer.write(encode_points([("m", {}, {"v": v}, TS + i) for i, v in enumerate(values)]))
    query = InfluxQuery(settings)
    rows = _rows(query.query("SELECT v FROM m ORDER BY time"))
    # InfluxDB's JSON writes an integral float as an integer (-859495444819939300 for
    # -8.594954448199393e+17): float() of it is the same double. Compared bit for bit:
    # -0.0 == 0.0, and InfluxDB answers -0.0 as "-0" (see loads_answer).
    bits = struct.Struct("<d").pack
    assert [bits(float(row["v"])) for row in rows] == list(map(bits, values))  # type: ignore[arg-type]
    writer.close()
    query.close()


def test_empty_write_is_a_no_op(stack: StackInfo, influx_db: str) -> None:
    settings = _settings(stack, influx_db)
    V1Writer(settings).write(b"")
    assert influx_db not in _databases(InfluxQuery(settings))


def test_without_create_database_a_missing_database_is_rejected(
    stack: StackInfo, influx_db: str
) -> None:
    writer = V1Writer(_settings(stack, influx_db, create_database=False))
    with pytest.raises(InfluxRejected) as caught:
        writer.write(b"m f=1 1")
    assert caught.value.status == 404
    assert "database not found" in caught.value.server_message
    assert "create_database" in str(caught.value)
    assert not isinstance(caught.value, InfluxUnavailable)


def test_partial_write_is_rejected_and_the_good_lines_are_stored(
    stack: StackInfo, influx_db: str
) -> None:
    settings = _settings(stack, influx_db)
    writer = V1Writer(settings)
    with pytest.raises(InfluxRejected) as caught:
        writer.write(b"m f=1 1\nthis is not line protocol\nm f=2 2")
    assert caught.value.status == 400
    assert "partial write" in caught.value.server_message
    assert "unable to parse 'this is not line protocol'" in str(caught.value)
    assert _rows(InfluxQuery(settings).query("SELECT f FROM m")) == [
        {"time": 1, "f": 1},
        {"time": 2, "f": 2},
    ]


def test_field_type_conflict_is_rejected(stack: StackInfo, influx_db: str) -> None:
    writer = V1Writer(_settings(stack, influx_db))
    writer.write(b"m f=1.5 1")
    with pytest.raises(InfluxRejected, match="field type conflict"):
        writer.write(b'm f="text" 2')


def test_unreachable_server_is_unavailable_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    writer = V1Writer(InfluxSettings(url=url, timeout=2))
    with pytest.raises(InfluxUnavailable) as caught:
        writer.write(b"m f=1 1")
    message = str(caught.value)
    assert url in message
    assert "connection refused" in message
    assert "'farmtel'" in message
    assert caught.value.status is None
    assert caught.value.__cause__ is None  # no urllib3 exception chained


def test_stopped_influxdb_is_unavailable_and_a_restart_keeps_the_data(
    private_stack: Stack,
) -> None:
    settings = InfluxSettings(url=private_stack.influx_url, database="keep", timeout=2)
    writer = V1Writer(settings)
    writer.write(b"m f=1 1")
    private_stack.stop_influxdb()
    with pytest.raises(InfluxUnavailable, match="could not be reached"):
        writer.write(b"m f=2 2")
    with pytest.raises(InfluxUnavailable):
        InfluxQuery(settings).query("SELECT * FROM m")
    private_stack.start_influxdb()
    writer.write(b"m f=2 2")
    assert [r["f"] for r in _rows(InfluxQuery(settings).query("SELECT f FROM m"))] == [1, 2]


def test_paused_influxdb_times_out_as_unavailable(private_stack: Stack) -> None:
    settings = InfluxSettings(url=private_stack.influx_url, database="paused", timeout=0.3)
    writer = V1Writer(settings)
    writer.write(b"m f=1 1")
    private_stack.pause("influxdb")
    try:
        with pytest.raises(InfluxUnavailable, match="timed out"):
            writer.write(b"m f=2 2")
    finally:
        private_stack.resume("influxdb")
    writer.write(b"m f=3 3")


# -- queries ------------------------------------------------------------------------------------


def test_bound_parameters_stay_literal(stack: StackInfo, influx_db: str) -> None:
    settings = _settings(stack, influx_db)
    V1Writer(settings).write(
        encode_points(
            [
                ("soil", {"plantation": "hlj-001"}, {"v": 1.0}, TS),
                ("soil", {"plantation": "x' OR 1=1"}, {"v": 2.0}, TS),
                ("soil", {"plantation": "x"}, {"v": 3.0}, TS),
            ]
        )
    )
    query = InfluxQuery(settings)
    q = "SELECT v FROM soil WHERE plantation = $p"
    assert _rows(query.query(q, params={"p": "x' OR 1=1"})) == [{"time": TS, "v": 2}]
    assert query.query(q, params={"p": "x' OR '1'='1"}) == []
    assert _rows(query.query(q, params={"p": "hlj-001"})) == [{"time": TS, "v": 1}]
    # Integer parameters keep all their digits (a ns timestamp does not fit a double).
    both = "SELECT v FROM soil WHERE plantation = $p AND time = $t"
    assert len(query.query(both, params={"p": "x", "t": TS})) == 1
    assert query.query(both, params={"p": "x", "t": TS + 1}) == []


def test_quoted_identifiers_and_literals_reach_the_server_intact(
    stack: StackInfo, influx_db: str
) -> None:
    settings = _settings(stack, influx_db)
    measurement = 'we"ird,\\name'
    tag_value = "it's a\\back'slash"
    V1Writer(settings).write(encode_points([(measurement, {"k": tag_value}, {"v": 7}, TS)]))
    query = InfluxQuery(settings)
    series = query.query(
        f"SELECT v FROM {quote_ident(measurement)} WHERE k = {quote_literal(tag_value)}"
    )
    assert [(s.name, s.values) for s in series] == [(measurement, [[TS, 7]])]


def test_quote_helpers() -> None:
    assert quote_ident('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_literal("it's\\") == "'it\\'s\\\\'"
    assert quote_literal("two\nlines") == "'two\\nlines'"
    with pytest.raises(ValueError, match="NUL or CR"):
        quote_ident("a\0b")
    with pytest.raises(ValueError, match="NUL or CR"):
        quote_literal("a\rb")


def test_query_errors(stack: StackInfo, influx_db: str) -> None:
    query = InfluxQuery(_settings(stack, influx_db))
    with pytest.raises(InfluxQueryError, match="error parsing query") as parse_error:
        query.query("SELECT FROM WHERE")
    assert parse_error.value.status == 400
    with pytest.raises(InfluxQueryError, match="database not found"):
        query.query("SELECT * FROM m")
    assert isinstance(parse_error.value, InfluxRejected)


def test_multiple_statements_and_tags_of_grouped_series(stack: StackInfo, influx_db: str) -> None:
    settings = _settings(stack, influx_db)
    V1Writer(settings).write(
        encode_points(
            [
                ("soil", {"sensor": "a"}, {"v": 1.0}, TS),
                ("soil", {"sensor": "b"}, {"v": 2.0}, TS),
            ]
        )
    )
    series = InfluxQuery(settings).query(
        "SELECT last(v) FROM soil GROUP BY sensor; SHOW MEASUREMENTS"
    )
    assert [(s.name, s.tags, s.values) for s in series] == [
        ("soil", {"sensor": "a"}, [[TS, 1]]),
        ("soil", {"sensor": "b"}, [[TS, 2]]),
        ("measurements", {}, [["soil"]]),
    ]


def test_ping_returns_the_version(stack: StackInfo) -> None:
    assert InfluxQuery(InfluxSettings(url=stack.influx_url)).ping().startswith("1.6.7")


# -- v2 writes through the compatibility proxy ------------------------------------------------


@pytest.fixture
def v2proxy(stack: StackInfo) -> Iterator[V2WriteProxy]:
    with V2WriteProxy(stack.influx_url) as proxy:
        yield proxy


def test_v2_write_reads_back(stack: StackInfo, influx_db: str, v2proxy: V2WriteProxy) -> None:
    query = InfluxQuery(_settings(stack, influx_db))
    query.create_database(influx_db)
    writer = make_writer(
        InfluxSettings(api="v2", url=v2proxy.url, bucket=influx_db, org="farm", database="x")
    )
    assert isinstance(writer, V2Writer)
    writer.write(encode_points([("soil", {"sensor": "s1"}, {"v": 0.1, "seq": 5}, TS)]))
    writer.close()
    assert _rows(query.query("SELECT * FROM soil")) == [
        {"time": TS, "sensor": "s1", "v": 0.1, "seq": 5}
    ]
    path, status = v2proxy.requests[-1]
    assert status == 204
    assert path.startswith("/api/v2/write?")
    assert f"bucket={influx_db}" in path
    assert "org=farm" in path
    assert "precision=ns" in path


def test_v2_errors_map_like_v1(stack: StackInfo, influx_db: str, v2proxy: V2WriteProxy) -> None:
    settings = InfluxSettings(api="v2", url=v2proxy.url, database=influx_db)
    writer = V2Writer(settings)
    with pytest.raises(InfluxRejected) as missing:
        writer.write(b"m f=1 1")
    assert missing.value.status == 404
    assert "database not found" in missing.value.server_message
    InfluxQuery(_settings(stack, influx_db)).create_database(influx_db)
    with pytest.raises(InfluxRejected) as partial:
        writer.write(b"m f=1 1\nnot line protocol")
    assert partial.value.status == 400
    assert "partial write" in str(partial.value)


def test_v2_through_proxy_with_influxdb_stopped_is_unavailable(private_stack: Stack) -> None:
    with V2WriteProxy(private_stack.influx_url) as proxy:
        writer = V2Writer(InfluxSettings(api="v2", url=proxy.url, database="db", timeout=2))
        InfluxQuery(InfluxSettings(url=private_stack.influx_url)).create_database("db")
        writer.write(b"m f=1 1")
        private_stack.stop_influxdb()
        with pytest.raises(InfluxUnavailable) as caught:
            writer.write(b"m f=2 2")
        assert caught.value.status == 503
        assert "upstream InfluxDB unreachable" in str(caught.value)
    # The proxy itself gone: influxdb-client's connection error, mapped too.
    with pytest.raises(InfluxUnavailable, match="connection refused"):
        writer.write(b"m f=3 3")


# -- statuses the real server does not give on demand (canned answers) -------------------------


class _Canned:
    """An HTTP server answering every request with one status, headers and body."""

    def __init__(self, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
        self.seen_auth: list[str | None] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                canned.seen_auth.append(self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry_after"),
    [
        (503, {"error": "error syncing wal"}, {}, InfluxUnavailable, None),
        (500, {"message": "internal"}, {}, InfluxUnavailable, None),
        (429, {"message": "slow down"}, {"Retry-After": "7"}, InfluxUnavailable, 7.0),
        (401, {"error": "authorization failed"}, {}, InfluxRejected, None),
        (403, {"message": "forbidden"}, {}, InfluxRejected, None),
        (413, {"error": "Request Entity Too Large"}, {}, InfluxRejected, None),
    ],
)
def test_status_codes_map_to_error_kinds(
    api: str,
    status: int,
    body: dict[str, str],
    headers: dict[str, str],
    kind: type[InfluxError],
    retry_after: float | None,
) -> None:
    server = _Canned(status, body, headers)
    try:
        settings = InfluxSettings.model_validate({"api": api, "url": server.url, "timeout": 5})
        with pytest.raises(kind) as caught:
            make_writer(settings).write(b"m f=1 1")
    finally:
        server.close()
    assert caught.value.status == status
    assert caught.value.server_message == next(iter(body.values()))
    if isinstance(caught.value, InfluxUnavailable):
        assert caught.value.retry_after == retry_after
    if status == 401:
        assert "password_file" in str(caught.value)


def _secret(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_credentials_are_sent_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FARMTEL_INFLUXDB_PASSWORD", raising=False)
    monkeypatch.delenv("FARMTEL_INFLUXDB_TOKEN", raising=False)
    server = _Canned(401, {"error": "authorization failed"}, {})
    try:
        settings = InfluxSettings(
            url=server.url,
            username="farm",
            password_file=_secret(tmp_path, "pw", "sekrit-pw"),
        )
        with pytest.raises(InfluxRejected) as basic:
            V1Writer(settings).write(b"m f=1 1")
        token_settings = InfluxSettings(
            api="v2", url=server.url, token_file=_secret(tmp_path, "tok", "sekrit-token")
        )
        with pytest.raises(InfluxRejected) as token:
            V2Writer(token_settings).write(b"m f=1 1")
    finally:
        server.close()
    assert server.seen_auth == ["Basic ZmFybTpzZWtyaXQtcHc=", "Token sekrit-token"]
    for err in (basic.value, token.value):
        assert "sekrit" not in str(err)


def test_secret_sources(tmp_path: Path) -> None:
    settings = InfluxSettings(username="farm")
    with pytest.raises(ValueError, match="FARMTEL_INFLUXDB_PASSWORD"):
        settings.read_credentials(environ={})
    creds = settings.read_credentials(environ={"FARMTEL_INFLUXDB_PASSWORD": "pw"})
    assert creds.password is not None
    assert creds.password.get_secret_value() == "pw"
    loose = InfluxSettings(username="farm", password_file=_secret(tmp_path, "pw", "x", 0o644))
    with pytest.raises(ConfigError, match="chmod 600"):
        loose.read_credentials(environ={})
    by_file = InfluxSettings(token_file=_secret(tmp_path, "tok", "t-from-file"))
    token = by_file.read_credentials(environ={"FARMTEL_INFLUXDB_TOKEN": "t-from-env"}).token
    assert token is not None
    assert token.get_secret_value() == "t-from-file"
    assert "t-from-file" not in repr(by_file.read_credentials(environ={}))


@pytest.mark.parametrize(
    ("raw", "key", "message"),
    [
        ({"url": "127.0.0.1:8086"}, "url", "http://host:8086"),
        ({"url": "http://h:8086/write"}, "url", "base URL"),
        ({"url": "http://u:sekrit@h:8086"}, "url", "must not hold a user or password"),
        ({"database": "farm/autogen"}, "database", "should match pattern"),
        ({"database": "_internal"}, "database", "should match pattern"),
        ({"api": "v3"}, "api", "'v1' or 'v2'"),
        ({"timeout": 0}, "timeout", "greater than 0"),
        ({"password_file": "/x"}, "(top level)", "username is not"),
        ({"databse": "x"}, "databse", "unknown key"),
    ],
)
def test_settings_are_checked(raw: dict[str, object], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(InfluxSettings, raw, "ingest.toml")
    assert [k for k, _ in caught.value.problems] == [key]
    assert message in caught.value.problems[0][1]


def test_settings_defaults_and_target() -> None:
    assert InfluxSettings().url == "http://127.0.0.1:8086"
    assert InfluxSettings(url="http://h:8086/").url == "http://h:8086"
    assert InfluxSettings(api="v2", database="d").target == "d"
    assert InfluxSettings(api="v2", database="d", bucket="b").target == "b"
    assert InfluxSettings(api="v1", database="d", bucket="b").target == "d"
    assert isinstance(make_writer(InfluxSettings()), V1Writer)


def test_redact_url() -> None:
    assert redact_url("http://u:p@h:8086/x") == "http://h:8086/x"
    assert redact_url("http://h:8086") == "http://h:8086"


def test_a_password_in_the_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        validate(InfluxSettings, {"url": "http://farm:sekrit@h:8086"}, "ingest.toml")
    assert "sekrit" not in str(caught.value)
    assert "password_file" in str(caught.value)


def test_an_answer_keeps_the_sign_of_a_stored_minus_zero() -> None:
    body = (
        b'{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","d","v","w"],'
        b'"values":[[1,"-0,x",-0,1.5],[2,"a",0,-0],[3,"b",-2,-1e-300],[4,"c",-0.5,-0e0]]}]}]}'
    )
    values = loads_answer(body)["results"][0]["series"][0]["values"]
    assert [
        [math.copysign(1.0, v) if isinstance(v, float) else v for v in row[2:]] for row in values
    ] == [
        [-1.0, 1.0],
        [0, -1.0],
        [-2, -1.0],
        [-1.0, -1.0],
    ]
    assert values[0][1] == "-0,x"  # a string that looks like it is left alone
    assert type(values[1][2]) is int and type(values[2][2]) is int  # integers stay ints
    plain = b'{"results":[{"statement_id":0,"series":[{"values":[[1,0,-1,-10]]}]}]}'
    assert loads_answer(plain) == orjson.loads(plain)
