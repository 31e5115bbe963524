"""The Prometheus text exposition and the endpoint's answers to bad addresses and paths."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from contract.metrics import MetricsServer, MetricsSettings, render
from contract.settings import ConfigError


def test_render_types_once_and_escapes_labels() -> None:
    text = render(
        [
            ("farmtel_x_total", "counter", 3, {"gateway": 'g"1\\'}),
            ("farmtel_x_total", "counter", 4, {"gateway": "g2"}),
            ("farmtel_depth", "gauge", 0.5, {}),
        ]
    )
    assert text.count("# TYPE farmtel_x_total counter") == 1
    assert 'farmtel_x_total{gateway="g\\"1\\\\"} 3' in text
    assert "farmtel_depth 0.5" in text.splitlines()
    with pytest.raises(ValueError, match="metric name"):
        render([("bad-name", "gauge", 1, {})])


@pytest.mark.parametrize("listen", ["9108", "host:", ":9108", "h:70000", "h:port"])
def test_bad_listen_addresses_are_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        MetricsSettings(listen=listen)


def test_a_taken_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as err:
            MetricsServer(f"127.0.0.1:{port}", lambda: "")
    assert "metrics.listen" in str(err.value)


def test_serves_metrics_and_404_and_500() -> None:
    calls = {"n": 0}

    def collect() -> str:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("boom")
        return "farmtel_up 1\n"

    server = MetricsServer("127.0.0.1:0", collect)
    server.start()
    try:
        base = f"http://{server.address}"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            assert response.read() == b"farmtel_up 1\n"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/", timeout=5)
        assert missing.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(base + "/metrics", timeout=5)
        assert failed.value.code == 500
    finally:
        server.stop()
