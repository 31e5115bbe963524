"""The agent's Prometheus ``/metrics``: its counters and outbox depth (see contract/metrics.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contract.metrics import MetricsServer, Sample, counter_samples, render

if TYPE_CHECKING:
    from agent.service import Agent


def agent_samples(agent: Agent) -> list[Sample]:
    """``farmtel_agent_<counter>_total`` for every ``Agent.counters`` key, and outbox gauges."""
    labels = {"plantation": agent.config.gateway.plantation, "gateway": agent.config.gateway.id}
    samples = counter_samples("farmtel_agent", dict(agent.counters), labels)
    depth = agent.outbox.depth()
    samples += [
        ("farmtel_agent_outbox_readings", "gauge", float(depth.readings), labels),
        ("farmtel_agent_outbox_gaps", "gauge", float(depth.gaps), labels),
        ("farmtel_agent_outbox_bytes", "gauge", float(depth.bytes), labels),
        ("farmtel_agent_inflight_batches", "gauge", float(depth.inflight_batches), labels),
        ("farmtel_agent_batch_limit", "gauge", float(agent.batch_limit.now), labels),
        (
            "farmtel_agent_mqtt_connected",
            "gauge",
            1.0 if agent.publisher.connected.is_set() else 0.0,
            labels,
        ),
    ]
    return samples


def agent_metrics_server(agent: Agent) -> MetricsServer | None:
    """The endpoint when ``[metrics] listen`` is set, else None; ConfigError if it cannot bind."""
    listen = agent.config.metrics.listen
    if listen is None:
        return None
    return MetricsServer(listen, lambda: render(agent_samples(agent)))
