"""The ingest's Prometheus ``/metrics``: its counters and alert totals (see contract/metrics.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contract.metrics import MetricsServer, Sample, counter_samples, render

if TYPE_CHECKING:
    from ingest.service import Ingest


GAUGES = ("seq_holes",)
"""``Ingest.counters`` keys that go down as well as up: gauges, not ``_total`` counters
(a Prometheus counter that falls reads as a restart to ``rate()``)."""


def ingest_samples(service: Ingest) -> list[Sample]:
    """``farmtel_ingest_<counter>_total`` for every ``Ingest.counters`` key, plus gauges
    (:data:`GAUGES` among them, as ``farmtel_ingest_<key>``)."""
    labels = {"client_id": service.config.client_id()}
    counters = service.counters_now()
    gauges = {key: counters.pop(key) for key in GAUGES if key in counters}
    samples = counter_samples("farmtel_ingest", counters, labels)
    samples += [
        (f"farmtel_ingest_{key}", "gauge", float(value), labels) for key, value in gauges.items()
    ]
    samples += [
        ("farmtel_ingest_alerts_fired_total", "counter", float(service.alerts.fired), labels),
        ("farmtel_ingest_alerts_resolved_total", "counter", float(service.alerts.resolved), labels),
        ("farmtel_ingest_inbox_messages", "gauge", float(service.inbox.qsize()), labels),
        (
            "farmtel_ingest_mqtt_connected",
            "gauge",
            1.0 if service.connected.is_set() else 0.0,
            labels,
        ),
    ]
    return samples


def ingest_metrics_server(service: Ingest) -> MetricsServer | None:
    """The endpoint when ``[metrics] listen`` is set, else None; ConfigError if it cannot bind."""
    listen = service.config.metrics.listen
    if listen is None:
        return None
    return MetricsServer(listen, lambda: render(ingest_samples(service)))
