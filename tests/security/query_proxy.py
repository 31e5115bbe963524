"""A test-only HTTP proxy in front of InfluxDB that records every InfluxQL request.

``QueryRecorder(upstream).start()`` serves on a free 127.0.0.1 port and forwards GET/POST
requests unchanged; ``queries`` holds ``(q, params)`` of each ``/query`` call, so a test
can see exactly which statements a CLI command sent.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class QueryRecorder:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        assert parts.hostname and parts.port
        self.upstream = (parts.hostname, parts.port)
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path)
                if path.path == "/query":
                    fields = parse_qs(path.query)
                    if body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                        fields.update(parse_qs(body.decode("utf-8")))
                    with recorder._lock:
                        for q in fields.get("q", []):
                            recorder.queries.append((q, (fields.get("params") or [""])[0]))
                conn = http.client.HTTPConnection(*recorder.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(method, self.path, body=body or None, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def do_GET(self) -> None:
                self._forward("GET")

            def do_POST(self) -> None:
                self._forward("POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> QueryRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            out, self.queries = self.queries, []
        return out
