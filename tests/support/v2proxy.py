"""A test-only stand-in for InfluxDB 1.8's v2 compatibility write API, in front of 1.6.7.

No InfluxDB 2.x/3.x can be installed on the test machines, and Debian's 1.6.7 answers 404
to ``/api/v2/write``. InfluxDB 1.8 serves that endpoint by mapping it onto its v1 write
path: ``POST /api/v2/write?org=O&bucket=B&precision=P`` becomes ``POST /write?db=B&...``
(``B`` may be ``db/rp``), the org is ignored, and errors come back as v2 JSON
(``{"code": ..., "message": ...}``). This proxy does the same, so influxdb-client's
write path can be tested against a real server:

    with V2WriteProxy(stack.influx_url) as proxy:
        V2Writer(InfluxSettings(api="v2", url=proxy.url, ...)).write(lines)

When the real server cannot be reached the proxy answers 503, as a gateway would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlencode, urlsplit

# v2 precision names -> v1 ones ("us" means ns to 1.x, see TRAPS: use "u").
_PRECISION = {"ns": "ns", "us": "u", "ms": "ms", "s": "s"}
_CODES = {400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not found", 413: "too large"}


class V2WriteProxy:
    """Serves ``/api/v2/write`` on a free 127.0.0.1 port, forwarding to ``upstream``'s /write.

    ``requests`` records ``(path_with_query, status)`` of every request, for assertions.
    """

    def __init__(self, upstream_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream url {upstream_url!r} must be http://host:port")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 8086
        self.timeout = timeout
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, reply = proxy._handle(self.path, body, self.headers)
                with proxy._lock:
                    proxy.requests.append((self.path, status))
                self.send_response(status)
                if reply:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest output clean; requests are recorded instead

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            # A short poll interval: stop() waits for it (0.5 s by default).
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="v2proxy",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> V2WriteProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut kept-alive connections, as a dead proxy would."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    def __enter__(self) -> V2WriteProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _handle(self, path: str, body: bytes, headers: Message) -> tuple[int, bytes]:
        parts = urlsplit(path)
        if parts.path != "/api/v2/write":
            return 404, _v2_error(404, f"path {parts.path} not found")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        bucket = query.get("bucket", "")
        if not bucket:
            return 400, _v2_error(400, "bucket not specified")
        precision = _PRECISION.get(query.get("precision", "ns"))
        if precision is None:
            return 400, _v2_error(400, f"invalid precision {query['precision']!r}")
        db, _, rp = bucket.partition("/")
        v1_query = {"db": db, "precision": precision}
        if rp:
            v1_query["rp"] = rp
        forward = {"Content-Type": "text/plain; charset=utf-8"}
        for name in ("Authorization", "Content-Encoding"):
            value = headers.get(name)
            if value:
                forward[name] = value
        conn = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=self.timeout
        )
        try:
            conn.request("POST", "/write?" + urlencode(v1_query), body=body, headers=forward)
            response = conn.getresponse()
            status, data = response.status, response.read()
        except OSError as err:
            return 503, _v2_error(503, f"upstream InfluxDB unreachable: {err}")
        finally:
            conn.close()
        if status < 300:
            return status, b""
        return status, _v2_error(status, _v1_message(data))


def _v1_message(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return data.decode("utf-8", errors="replace")


def _v2_error(status: int, message: str) -> bytes:
    code = _CODES.get(status, "internal error" if status >= 500 else "invalid")
    return json.dumps({"code": code, "message": message}).encode()
