"""The InfluxDB adapter: write line protocol, run InfluxQL, and nothing else.

Writes go to ``POST /write`` (``api = "v1"``: InfluxDB 1.x, the version Debian ships, and
the v1 compatibility API of 2.x/3.x) or through influxdb-client's synchronous write API
(``api = "v2"``: ``/api/v2/write`` on 1.8+, 2.x, 3.x and Cloud). Both send the same bytes
from :mod:`ingest.line_protocol`, in nanosecond precision. Queries use InfluxQL over
``/query``, which every version answers (influxdb-client has no InfluxQL call).

Errors say who must act:

- :class:`InfluxUnavailable`: the server could not take the request now (connection refused
  or dropped, timeout, HTTP 5xx, 429). Nothing is known to be stored; retry later. A retry
  is safe because a point is keyed by measurement, tags and timestamp.
- :class:`InfluxRejected`: the server refused this payload or these credentials (HTTP 4xx:
  400 partial write or bad line, 401/403, 404 database not found, 413 too large). Retrying
  the same request will fail again. On a 400 "partial write" the valid lines ARE stored.
- :class:`InfluxQueryError`: an InfluxQL statement failed (a kind of rejection).

No exception of urllib3 or influxdb-client leaves this module, and no message holds a
password or token (URLs are shown without their user-info part).

The v2 path is tested against the real InfluxDB 1.6.7 through a small proxy that maps
``/api/v2/write`` onto ``/write`` the way 1.8's compatibility layer does
(``tests/support/v2proxy.py``); no 2.x/3.x server was available to test against.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import orjson
import urllib3
from pydantic import Field, SecretStr, field_validator, model_validator

from contract.settings import Strict, read_secret

PASSWORD_ENV = "FARMTEL_INFLUXDB_PASSWORD"
TOKEN_ENV = "FARMTEL_INFLUXDB_TOKEN"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_MAX_MESSAGE = 500


class InfluxSettings(Strict):
    """How to reach InfluxDB (the ``[influxdb]`` section)."""

    api: Literal["v1", "v2"] = "v1"
    """``v1``: POST /write (InfluxDB 1.x, and 2.x/3.x through their v1 API). ``v2``: the
    /api/v2/write API through influxdb-client (InfluxDB 1.8+, 2.x, 3.x, Cloud)."""
    url: str = "http://127.0.0.1:8086"
    """Base URL of the server, ``http://`` or ``https://``, without a path like /write."""
    database: Annotated[str, Field(pattern=_NAME_PATTERN)] = "farmtel"
    """Database for v1 writes and all InfluxQL queries; for v2 also the bucket unless
    ``bucket`` is set. Letters, digits, ``_`` and ``-`` (no ``/``)."""
    bucket: Annotated[str, Field(pattern=_NAME_PATTERN)] | None = None
    """v2 only: the bucket to write to, when it differs from ``database``."""
    org: Annotated[str, Field(min_length=1, max_length=256)] = "farmtel"
    """v2 only: the organisation that owns the bucket (1.8 ignores it)."""
    username: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    """User for HTTP basic auth (1.x with auth-enabled); needs a password."""
    password_file: Path | None = None
    """File (mode 0600) holding that user's password; else env FARMTEL_INFLUXDB_PASSWORD."""
    token_file: Path | None = None
    """File (mode 0600) holding an API token (2.x/3.x/Cloud); else env FARMTEL_INFLUXDB_TOKEN.
    A token is sent as ``Authorization: Token ...`` and wins over username/password."""
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Seconds to wait for a connection and for each response."""
    create_database: bool = True
    """v1 only: on "database not found", run CREATE DATABASE once and write again."""
    verify_tls: bool = True
    """Check the server certificate for https URLs; turn off only for a self-signed test
    server."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"influxdb url {url!r} must look like http://host:8086 or https://host:8086"
            )
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"influxdb url {redact_url(url)!r} must not hold a user or password; "
                "use username and password_file (or token_file) instead"
            )
        if parts.query or parts.fragment or parts.path.rstrip("/").endswith(("/write", "/query")):
            raise ValueError(
                f"influxdb url {url!r} must be the server's base URL, without /write, /query "
                "or a query string"
            )
        return url.rstrip("/")

    @model_validator(mode="after")
    def _check_auth(self) -> InfluxSettings:
        if self.password_file is not None and self.username is None:
            raise ValueError("influxdb password_file is set but username is not; set both")
        return self

    @property
    def target(self) -> str:
        """The database (v1) or bucket (v2) that writes go to."""
        if self.api == "v2" and self.bucket:
            return self.bucket
        return self.database

    def read_credentials(self, environ: Mapping[str, str] | None = None) -> Credentials:
        """Read the password and token from their files or the environment.

        Files win over environment variables. Raises ``contract.settings.ConfigError`` for
        a missing or too-open secret file, and ``ValueError`` when a username has no
        password anywhere.
        """
        env = os.environ if environ is None else environ
        token: SecretStr | None = None
        if self.token_file is not None:
            token = read_secret(self.token_file, "influxdb.token_file")
        elif env.get(TOKEN_ENV):
            token = SecretStr(env[TOKEN_ENV])
        password: SecretStr | None = None
        if self.password_file is not None:
            password = read_secret(self.password_file, "influxdb.password_file")
        elif env.get(PASSWORD_ENV):
            password = SecretStr(env[PASSWORD_ENV])
        if self.username is not None and password is None and token is None:
            raise ValueError(
                f"influxdb username {self.username!r} has no password: set "
                f"[influxdb] password_file or the environment variable {PASSWORD_ENV}"
            )
        return Credentials(self.username, password, token)


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: SecretStr | None
    token: SecretStr | None

    def headers(self) -> dict[str, str]:
        """The Authorization header for the v1 HTTP API, if any credentials are set."""
        if self.token is not None:
            return {"Authorization": f"Token {self.token.get_secret_value()}"}
        if self.username is not None and self.password is not None:
            auth = f"{self.username}:{self.password.get_secret_value()}"
            return dict(urllib3.make_headers(basic_auth=auth))
        return {}

    def v2_token(self) -> str | None:
        """The token for influxdb-client; ``user:password`` is what 1.8 accepts as one."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.username is not None and self.password is not None:
            return f"{self.username}:{self.password.get_secret_value()}"
        return None


# -- errors ---------------------------------------------------------------------------------


class InfluxError(Exception):
    """Base of every error of this module.

    ``status`` is the HTTP status (None when no response came), ``server_message`` what the
    server said (may be empty).
    """

    def __init__(self, message: str, status: int | None = None, server_message: str = ""):
        super().__init__(message)
        self.status = status
        self.server_message = server_message


class InfluxUnavailable(InfluxError):
    """Transient: connection refused/dropped, timeout, 5xx or 429. Retry later.

    ``retry_after`` holds the server's Retry-After in seconds when it sent one.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        server_message: str = "",
        retry_after: float | None = None,
    ):
        super().__init__(message, status, server_message)
        self.retry_after = retry_after


class InfluxRejected(InfluxError):
    """Permanent for this request: a 4xx answer. Sending it again fails again."""


class InfluxQueryError(InfluxRejected):
    """An InfluxQL statement failed (parse error, unknown database ...)."""


def redact_url(url: str) -> str:
    """``url`` without a ``user:password@`` part, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _server_message(body: bytes) -> str:
    """The error text from a v1 (``{"error": ...}``) or v2 (``{"message": ...}``) body."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return text[:_MAX_MESSAGE]
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])[:_MAX_MESSAGE]
    return text[:_MAX_MESSAGE]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare, and the caller's own backoff is good enough


def _status_error(
    status: int, body: bytes, retry_after: str | None, action: str, where: str
) -> InfluxError:
    """The exception for a non-2xx answer to ``action`` (e.g. "write to database 'x'")."""
    said = _server_message(body)
    base = f"InfluxDB at {where} answered {status} to {action}: {said or '(no message)'}"
    if status == 429 or status >= 500:
        return InfluxUnavailable(base + "; will retry", status, said, _retry_after(retry_after))
    if status in (401, 403):
        hint = (
            "; check [influxdb] username and password_file (or token_file), "
            f"or {PASSWORD_ENV} / {TOKEN_ENV}"
        )
        return InfluxRejected(base + hint, status, said)
    if status == 404:
        hint = "; create it, or set [influxdb] create_database = true (api v1)"
        return InfluxRejected(base + hint, status, said)
    if status == 413:
        return InfluxRejected(base + "; send smaller batches", status, said)
    return InfluxRejected(base, status, said)


def _response_error(response: urllib3.BaseHTTPResponse, action: str, where: str) -> InfluxError:
    """:func:`_status_error` for an HTTP answer."""
    return _status_error(
        response.status, response.data, response.headers.get("Retry-After"), action, where
    )


def _transport_error(err: urllib3.exceptions.HTTPError, action: str, where: str) -> InfluxError:
    """The exception for a request that got no HTTP answer."""
    if isinstance(err, urllib3.exceptions.NewConnectionError):
        reason = "connection refused or no route to host; is InfluxDB running?"
    elif isinstance(err, urllib3.exceptions.TimeoutError):
        reason = "timed out; the server is overloaded or hung (see [influxdb] timeout)"
    elif isinstance(err, urllib3.exceptions.SSLError):
        reason = "TLS failed; check the certificate or [influxdb] verify_tls"
    elif isinstance(err, urllib3.exceptions.ProtocolError):
        reason = "the connection was dropped mid-request"
    else:
        reason = "the request failed"
    # urllib3's text names host and port only; credentials never appear in a URL here.
    return InfluxUnavailable(
        f"InfluxDB at {where} could not be reached for {action}: {reason} ({err})"
    )


# -- HTTP -----------------------------------------------------------------------------------


class _Http:
    """A urllib3 pool bound to one server, mapping every failure to an InfluxError."""

    def __init__(self, settings: InfluxSettings, credentials: Credentials):
        self.base = settings.url
        self.where = redact_url(settings.url)
        self.headers = credentials.headers()
        self.timeout = urllib3.Timeout(connect=settings.timeout, read=settings.timeout)
        if not settings.verify_tls:
            # The user chose this for a self-signed server; one warning per request is noise.
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self.pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=8,
            cert_reqs="CERT_REQUIRED" if settings.verify_tls else "CERT_NONE",
        )

    def request(
        self,
        method: str,
        path: str,
        action: str,
        body: bytes | None = None,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send a request and return the response (any status); no answer -> Unavailable."""
        all_headers = {**self.headers, **(headers or {})}
        try:
            if fields is not None:
                body = urlencode(fields).encode()
                all_headers["Content-Type"] = "application/x-www-form-urlencoded"
            return self.pool.request(
                method,
                self.base + path,
                body=body,
                headers=all_headers,
                timeout=self.timeout,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as err:
            raise _transport_error(err, action, self.where) from None

    def close(self) -> None:
        self.pool.clear()


# -- writers --------------------------------------------------------------------------------


class InfluxWriter(Protocol):
    """Writes line protocol. ``write`` returns only once the server has accepted all lines."""

    def write(self, lines: bytes) -> None:
        """Write newline-joined line protocol with ns timestamps.

        Raises :class:`InfluxUnavailable` (retry later) or :class:`InfluxRejected` (do not
        send this payload again). An empty payload is a no-op.
        """

    def close(self) -> None:
        """Release connections; the writer must not be used afterwards."""


class V1Writer:
    """``POST /write?db=...&precision=ns`` with urllib3 (InfluxDB 1.x and the v1 API of 2/3).

    On 404 "database not found" it runs ``CREATE DATABASE`` once and writes again, when
    ``create_database`` is true. Safe to share between threads.
    """

    def __init__(self, settings: InfluxSettings, credentials: Credentials | None = None):
        self.settings = settings
        self._http = _Http(settings, credentials or settings.read_credentials())
        self._path = f"/write?db={quote(settings.database, safe='')}&precision=ns"
        self._action = f"a write to database {settings.database!r}"

    def write(self, lines: bytes) -> None:
        if not lines:
            return
        response = self._post(lines)
        if (
            response.status == 404
            and self.settings.create_database
            and b"database not found" in response.data
        ):
            self.create_database()
            response = self._post(lines)
        if response.status >= 300:
            raise _response_error(response, self._action, self._http.where)

    def _post(self, lines: bytes) -> urllib3.BaseHTTPResponse:
        return self._http.request(
            "POST",
            self._path,
            self._action,
            body=lines,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); InfluxError if it fails."""
        query = InfluxQuery(self.settings, http=self._http)
        query.query(f"CREATE DATABASE {quote_ident(self.settings.database)}")

    def close(self) -> None:
        self._http.close()


class V2Writer:
    """influxdb-client's synchronous write API (``/api/v2/write``), for 1.8+, 2.x, 3.x.

    Uses no batching and no client retries: influxdb-client's batching mode drops data
    after its retries; the caller owns batching, retry and ack. A missing bucket is an
    :class:`InfluxRejected` (create buckets with the server's own tools).
    """

    def __init__(self, settings: InfluxSettings, credentials: Credentials | None = None):
        # Imported here: the v1 path (the Debian default) does not pay for loading it.
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        creds = credentials or settings.read_credentials()
        self.settings = settings
        self._where = redact_url(settings.url)
        self._action = f"a v2 write to bucket {settings.target!r} of org {settings.org!r}"
        # Any: influxdb-client's own annotations are incomplete (untyped close(), str enums).
        self._client: Any = InfluxDBClient(
            url=settings.url,
            # influxdb-client refuses None; 1.8 without auth accepts any token.
            token=creds.v2_token() or "",
            org=settings.org,
            timeout=int(settings.timeout * 1000),
            verify_ssl=settings.verify_tls,
            retries=False,
            enable_gzip=False,
        )
        self._write_api: Any = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: bytes) -> None:
        if not lines:
            return
        from influxdb_client.client.exceptions import InfluxDBError

        try:
            self._write_api.write(
                bucket=self.settings.target,
                org=self.settings.org,
                record=lines,
                write_precision="ns",
            )
        except urllib3.exceptions.HTTPError as err:
            raise _transport_error(err, self._action, self._where) from None
        except InfluxDBError as err:
            response: Any = getattr(err, "response", None)
            status = getattr(err, "status", None) or getattr(response, "status", None)
            if status is None:  # influxdb-client's own transport failure (TLS: status 0)
                detail = getattr(err, "reason", None) or err.message
                raise InfluxUnavailable(
                    f"InfluxDB at {self._where} could not be reached for {self._action}: {detail}"
                ) from None
            body = getattr(err, "body", None) or getattr(response, "data", None) or b""
            if isinstance(body, str):
                body = body.encode()
            raise _status_error(
                int(status), body, err.retry_after, self._action, self._where
            ) from None
        except OSError as err:
            raise InfluxUnavailable(
                f"InfluxDB at {self._where} could not be reached for {self._action}: {err}"
            ) from None

    def close(self) -> None:
        self._write_api.close()
        self._client.close()


def make_writer(settings: InfluxSettings) -> InfluxWriter:
    """The writer for ``settings.api``; reads the secrets now, so a bad file fails at start."""
    if settings.api == "v2":
        return V2Writer(settings)
    return V1Writer(settings)


# -- queries --------------------------------------------------------------------------------


@dataclass
class Series:
    """One series of a query result: ``values`` rows follow ``columns``; time is in ns.

    JSON does not tell an integer from an integral float: a float field value such as
    ``2.0`` or ``6.8e16`` comes back as a Python int. ``float(v)`` gives the stored double
    exactly (a stored -0.0 comes back as the float -0.0, see :func:`loads_answer`); integer
    fields come back exact.
    """

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (for names that cannot be bound parameters).

    Raises ``ValueError`` for NUL or CR, which InfluxQL cannot express.
    """
    return '"' + _escape_influxql(name).replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    """An InfluxQL string literal in single quotes; prefer bound parameters where possible.

    Raises ``ValueError`` for NUL or CR, which InfluxQL cannot express.
    """
    return "'" + _escape_influxql(value).replace("'", "\\'") + "'"


def _escape_influxql(text: str) -> str:
    # The InfluxQL scanner ends a string at a raw newline and knows the escapes \\ and \n;
    # it reads NUL as the end of the query and CR as a newline, and has no escape for them.
    if "\0" in text or "\r" in text:
        raise ValueError(f"{text!r} contains NUL or CR, which InfluxQL cannot express")
    return text.replace("\\", "\\\\").replace("\n", "\\n")


_NEGATIVE_ZERO = re.compile(rb"[\[,]-0[,\]]")
"""``-0`` as an element of an array (values are; ``"soil-0"`` is not): InfluxDB writes no spaces."""


def _int_or_negative_zero(text: str) -> int | float:
    return -0.0 if text == "-0" else int(text)


def loads_answer(body: bytes) -> Any:
    """A ``/query`` JSON answer parsed, with each stored -0.0 kept as the float -0.0.

    InfluxDB writes the float -0.0 as ``-0``, which any JSON parser reads as the int 0:
    the sign would be lost, and a batch a gateway signed with -0.0 (a sensor near 0 °C
    prints it) would fail the certifier's check of an honest export. An integer field
    cannot hold -0, so ``-0`` is always a float. The rare answer that may hold it (a string
    such as ``",-0,"`` counts too: harmless, only slower) is parsed again by the standard
    library instead, several times slower than orjson. Either raises a ValueError for a
    body that is not JSON.
    """
    if _NEGATIVE_ZERO.search(body):
        return json.loads(body, parse_int=_int_or_negative_zero)
    return orjson.loads(body)


@dataclass(frozen=True)
class RawAnswer:
    """An answer of ``/query``, not parsed yet (see :meth:`InfluxQuery.query_raw`)."""

    body: bytes
    status: int
    action: str


class InfluxQuery:
    """InfluxQL over ``/query`` (every InfluxDB version answers it), results in ns epochs."""

    def __init__(
        self,
        settings: InfluxSettings,
        credentials: Credentials | None = None,
        http: _Http | None = None,
    ):
        self.settings = settings
        self._http = http or _Http(settings, credentials or settings.read_credentials())

    def query(
        self,
        q: str,
        params: Mapping[str, str | int | float] | None = None,
        db: str | None = None,
    ) -> list[Series]:
        """Run one or more ``;``-separated statements and return all their series.

        ``params`` are bound to ``$name`` placeholders by the server (values stay literal
        values, never InfluxQL). ``db`` defaults to the settings' database (or bucket).
        Raises :class:`InfluxQueryError` for a failed statement, :class:`InfluxRejected`
        for 4xx, :class:`InfluxUnavailable` when the server does not answer or fails.
        """
        return self.parse(self.query_raw(q, params, db))

    def query_raw(
        self,
        q: str,
        params: Mapping[str, str | int | float] | None = None,
        db: str | None = None,
    ) -> RawAnswer:
        """:meth:`query`'s answer before it is parsed (a JSON document takes several times
        its size once parsed: a caller that keeps answers waiting keeps these). Raises what
        :meth:`query` raises for a status; :meth:`parse` raises the rest."""
        fields = {"q": q, "db": db or self.settings.target, "epoch": "ns"}
        if params:
            fields["params"] = orjson.dumps(dict(params)).decode()
        action = f"query {_short(q)}"
        # POST: 1.x refuses CREATE/DROP over GET, and a long query does not fit a URL.
        response = self._http.request("POST", "/query", action, fields=fields)
        if response.status >= 300 and response.status != 400:
            raise _response_error(response, action, self._http.where)
        return RawAnswer(response.data, response.status, action)

    def parse(self, raw: RawAnswer) -> list[Series]:
        """The series of an answer from :meth:`query_raw`."""
        action = raw.action
        try:
            data = loads_answer(raw.body)
        except ValueError:  # orjson's and json's JSONDecodeError, or a body not UTF-8
            if raw.status == 400:
                raise _status_error(400, raw.body, None, action, self._http.where) from None
            raise InfluxUnavailable(
                f"InfluxDB at {self._http.where} answered {action} with non-JSON "
                f"(status {raw.status}): {raw.body[:200]!r}",
                raw.status,
            ) from None
        if not isinstance(data, dict):
            raise InfluxUnavailable(f"InfluxDB answered {action} with {type(data).__name__}")
        if "error" in data:
            said = str(data["error"])
            raise InfluxQueryError(f"InfluxDB refused {action}: {said}", raw.status, said)
        series: list[Series] = []
        for result in data.get("results", []):
            if "error" in result:
                said = str(result["error"])
                raise InfluxQueryError(
                    f"InfluxDB statement {result.get('statement_id', '?')} of {action} "
                    f"failed: {said}",
                    raw.status,
                    said,
                )
            for s in result.get("series", []):
                series.append(
                    Series(
                        name=s.get("name", ""),
                        tags=s.get("tags") or {},
                        columns=s.get("columns", []),
                        values=s.get("values", []),
                    )
                )
        return series

    def write(self, lines: bytes, rp: str) -> None:
        """``POST /write`` of ns line protocol into retention policy ``rp`` of the settings'
        database (v1 API; ``query history`` keeps its hourly rollups this way). Raises
        :class:`InfluxUnavailable` or :class:`InfluxRejected` like :class:`V1Writer`."""
        if not lines:
            return
        db = self.settings.database
        action = f"a write to retention policy {rp!r} of database {db!r}"
        path = f"/write?db={quote(db, safe='')}&rp={quote(rp, safe='')}&precision=ns"
        response = self._http.request(
            "POST", path, action, body=lines, headers={"Content-Type": "text/plain"}
        )
        if response.status >= 300:
            raise _response_error(response, action, self._http.where)

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE`` (no-op if it exists). For v1 servers only."""
        self.query(f"CREATE DATABASE {quote_ident(name)}")

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE`` (no-op if it does not exist). For v1 servers only."""
        self.query(f"DROP DATABASE {quote_ident(name)}")

    def ping(self) -> str:
        """``GET /ping``; return the server's version (``"unknown"`` if it does not say).

        Raises :class:`InfluxUnavailable` if the server does not answer 204.
        """
        response = self._http.request("GET", "/ping", "a ping")
        if response.status != 204:
            raise InfluxUnavailable(
                f"InfluxDB at {self._http.where} answered {response.status} to a ping",
                response.status,
                _server_message(response.data),
            )
        return str(response.headers.get("X-Influxdb-Version", "unknown"))

    def close(self) -> None:
        self._http.close()


def _short(q: str, limit: int = 80) -> str:
    text = " ".join(q.split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
