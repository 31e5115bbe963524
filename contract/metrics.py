"""An optional Prometheus ``/metrics`` endpoint for the agent and the ingest.

``[metrics] listen = "127.0.0.1:9108"`` turns it on (off by default). The text exposition
format (version 0.0.4) is written by hand: the services already keep plain integer
counters, and a dozen lines of formatting beat pulling prometheus_client (and its global
registry) onto every gateway. The server is ``http.server`` in a daemon thread; it answers
``GET /metrics`` and 404 for anything else, and reads the counters through a callback, so
it never holds a service lock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Annotated

from pydantic import Field, field_validator

from contract.settings import ConfigError, Strict

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class MetricsSettings(Strict):
    """The optional Prometheus endpoint (the ``[metrics]`` section)."""

    listen: Annotated[str, Field(max_length=300)] | None = None
    """host:port to serve GET /metrics on, e.g. 127.0.0.1:9108; unset (the default) serves
    nothing. Use 0.0.0.0:9108 only behind a firewall: the counters are not secret, but
    nothing authenticates the scraper."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, listen: str | None) -> str | None:
        if listen is None:
            return None
        split_address(listen)
        return listen


def split_address(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); ``ValueError`` naming the key."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"metrics listen {listen!r} must look like host:port, e.g. 127.0.0.1:9108")
    return host, int(port)


Sample = tuple[str, str, float, Mapping[str, str]]
"""(metric name, type ``counter``/``gauge``, value, labels)."""


def render(samples: list[Sample], help_texts: Mapping[str, str] | None = None) -> str:
    """Samples in the Prometheus text format, one ``# TYPE`` line per metric name."""
    out: list[str] = []
    typed: set[str] = set()
    for name, kind, value, labels in samples:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} must match {_METRIC_NAME.pattern}")
        if name not in typed:
            if help_texts and name in help_texts:
                out.append(f"# HELP {name} {help_texts[name]}")
            out.append(f"# TYPE {name} {kind}")
            typed.add(name)
        label_text = ",".join(
            f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
            for k, v in sorted(labels.items())
        )
        out.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return "\n".join(out) + "\n"


def counter_samples(
    prefix: str, counters: Mapping[str, int], labels: Mapping[str, str]
) -> list[Sample]:
    """``{prefix}_{key}_total`` counters from a service's counter dict."""
    return [(f"{prefix}_{k}_total", "counter", float(v), labels) for k, v in counters.items()]


class MetricsServer:
    """Serves ``collect()`` (text exposition) on ``GET /metrics`` from a daemon thread.

    Raises ``ConfigError`` (key ``metrics.listen``) when the address cannot be bound.
    """

    def __init__(self, listen: str, collect: Callable[[], str]):
        # Imported here: http.server and what it pulls in cost a gateway ~1 MiB of RSS, and
        # the endpoint is off by default.
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        host, port = split_address(listen)
        collect_fn = collect

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                try:
                    body = collect_fn().encode()
                except Exception as err:  # a scrape must not take the service down
                    log.error("metrics collection failed error=%s", err)
                    self.send_error(500, "metrics collection failed")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per scrape is noise in journald

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:
            raise ConfigError(
                "[metrics]",
                [
                    (
                        "metrics.listen",
                        f"cannot listen on {listen!r} ({err.strerror}); choose another "
                        "address or free the port",
                    )
                ],
            ) from err
        self.server.daemon_threads = True
        self.address = f"{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("metrics endpoint listening address=%s path=/metrics", self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
