"""fleetd's Prometheus metrics (prometheus-client), served by the API at /metrics.

Counters and histograms are updated where the work happens (engine and agent passes); the
cluster gauges (machines, units by state) are read from the registry when /metrics is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()
RECONCILE_SECONDS = Histogram(
    "fleetd_reconcile_seconds",
    "Duration of reconcile passes that did work",
    ["loop"],
    registry=REGISTRY,
)
TASKS = Counter(
    "fleetd_tasks_total", "Tasks run, by loop and kind", ["loop", "task"], registry=REGISTRY
)
MACHINES = Gauge("fleetd_machines", "Machines registered in the cluster", registry=REGISTRY)
UNITS = Gauge(
    "fleetd_units", "Units in the cluster by desired state", ["desired"], registry=REGISTRY
)
ACTIVE_UNITS = Gauge(
    "fleetd_units_active", "Units systemd reports active somewhere", registry=REGISTRY
)
WITHHELD = Gauge(
    "fleetd_engine_units_withheld",
    "Units the leading engine keeps on vanished machines because too few machines reach etcd",
    registry=REGISTRY,
)
LEADER = Gauge("fleetd_engine_leader", "1 while this machine leads the engine", registry=REGISTRY)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
