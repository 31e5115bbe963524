"""The ingest's Prometheus ``/metrics``: its counters and alert totals (see contract/metrics.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contract.metrics import MetricsServer, Sample, counter_samples, render

if TYPE_CHECKING:
    from ingest.service import Ingest


def ingest_samples(service: Ingest) -> list[Sample]:
    """``farmtel_ingest_<counter>_total`` for every ``Ingest.counters`` key, plus gauges."""
    labels = {"client_id": service.config.client_id()}
    samples = counter_samples("farmtel_ingest", dict(service.counters), labels)
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
