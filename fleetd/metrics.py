"""fleetd's Prometheus metrics (prometheus-client), served by the API at /metrics.

Counters and histograms are updated where the work happens (engine and agent passes, etcd
calls); the cluster gauges (machines, units by state) are read from the registry when /metrics
is scraped.

Next to ours, fleet's own metric names (fleet's Documentation/metrics.md: the `fleet` namespace,
the `engine` and `registry` subsystems), so dashboards and alerts made for fleet keep working.
fleet declared its registry metrics and the reconcile-duration histogram but never registered
them, so they never appeared; here they are exported and fed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

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

# fleet's names. prometheus-client adds `_total` to counters, as fleet's names have it.
FLEET_LEADER_START = Gauge(
    "fleet_engine_leader_start_time",
    "When this machine became the engine leader, in seconds since the epoch (0: it does not lead)",
    registry=REGISTRY,
)
FLEET_ENGINE_TASKS = Counter(
    "fleet_engine_task_count", "Engine tasks carried out, by type", ["type"], registry=REGISTRY
)
FLEET_ENGINE_TASK_FAILURES = Counter(
    "fleet_engine_task_failure_count",
    "Engine tasks that failed, by type",
    ["type"],
    registry=REGISTRY,
)
FLEET_RECONCILES = Counter(
    "fleet_engine_reconcile_count", "Engine passes completed as leader", registry=REGISTRY
)
FLEET_RECONCILE_SECONDS = Histogram(
    "fleet_engine_reconcile_duration_second",
    "Duration of the engine passes completed as leader, in seconds",
    registry=REGISTRY,
)
FLEET_RECONCILE_FAILURES = Counter(
    "fleet_engine_reconcile_failure_count",
    "Engine passes that failed, by reason",
    ["type"],
    registry=REGISTRY,
)
FLEET_REGISTRY_OPERATIONS = Counter(
    "fleet_registry_operation_count",
    "etcd requests that succeeded, by type",
    ["type"],
    registry=REGISTRY,
)
FLEET_REGISTRY_SECONDS = Histogram(
    "fleet_registry_operation_duration_second",
    "Duration of the etcd requests that succeeded, in seconds, by type",
    ["ops"],
    registry=REGISTRY,
)
FLEET_REGISTRY_FAILURES = Counter(
    "fleet_registry_operation_failed_count",
    "etcd requests that failed, by type",
    ["type"],
    registry=REGISTRY,
)

# etcd's v3 methods by the operation type fleet's registry reported (get, get_all, set); the
# others, which fleet's etcd v2 registry did not have, under their own names.
OPERATION_TYPES = {
    "Range": "get",
    "Put": "set",
    "DeleteRange": "delete",
    "Txn": "txn",
    "LeaseGrant": "lease",
    "LeaseRevoke": "lease",
    "LeaseTimeToLive": "lease",
    "Compact": "compact",
}


class Leadership:
    """Whether this machine leads the engine, and since when (fleet's leader_start_time)."""

    leading = False

    @classmethod
    def note(cls, leading: bool, now: float | None = None) -> None:
        if leading and not cls.leading:
            FLEET_LEADER_START.set(time.time() if now is None else now)
        elif not leading:
            FLEET_LEADER_START.set(0)
        cls.leading = leading
        LEADER.set(1 if leading else 0)


def note_leadership(leading: bool, now: float | None = None) -> None:
    """Called on every engine step: whether this machine leads now."""
    Leadership.note(leading, now)


def engine_pass(seconds: float, task_kinds: Sequence[str]) -> None:
    """A completed engine pass as leader, with the kinds of the tasks it carried out."""
    for kind in task_kinds:
        TASKS.labels("engine", kind).inc()
        FLEET_ENGINE_TASKS.labels(kind.lower()).inc()
    if task_kinds:
        RECONCILE_SECONDS.labels("engine").observe(seconds)
    FLEET_RECONCILES.inc()
    FLEET_RECONCILE_SECONDS.observe(seconds)


def engine_pass_failed(reason: str) -> None:
    FLEET_RECONCILE_FAILURES.labels(reason).inc()


def operation_type(method: str, ranged: bool = False) -> str:
    """fleet's type of an etcd call, from its gRPC method (`/etcdserverpb.KV/Range`); a Range
    over a prefix is fleet's get_all."""
    name = method.rpartition("/")[2]
    kind = OPERATION_TYPES.get(name, name.lower() or "unknown")
    return "get_all" if kind == "get" and ranged else kind


def registry_operation(kind: str, seconds: float, succeeded: bool) -> None:
    if succeeded:
        FLEET_REGISTRY_OPERATIONS.labels(kind).inc()
        FLEET_REGISTRY_SECONDS.labels(kind).observe(seconds)
    else:
        FLEET_REGISTRY_FAILURES.labels(kind).inc()


def exposition() -> bytes:
    return generate_latest(REGISTRY)
