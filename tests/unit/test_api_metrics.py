"""fleet's metric names next to ours at /metrics, and how etcd calls map to fleet's types."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetd import metrics

FLEET_NAMES = [
    "fleet_engine_leader_start_time",
    "fleet_engine_task_count_total",
    "fleet_engine_task_failure_count_total",
    "fleet_engine_reconcile_count_total",
    "fleet_engine_reconcile_duration_second",
    "fleet_engine_reconcile_failure_count_total",
    "fleet_registry_operation_count_total",
    "fleet_registry_operation_failed_count_total",
    "fleet_registry_operation_duration_second",
]


@pytest.mark.parametrize("name", FLEET_NAMES)
def test_every_fleet_metric_is_exported(name: str) -> None:
    assert f"# HELP {name} " in metrics.exposition().decode()


def sample(name: str, **labels: str) -> float:
    """A sample's value in the exposition (0 when absent). The registry is the process's own,
    and tests that ran fleetd's components in this process counted too: compare differences."""
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return 0.0


def test_an_engine_pass_feeds_fleets_metrics_and_ours() -> None:
    names = [
        ("fleet_engine_task_count_total", {"type": "schedule"}),
        ("fleetd_tasks_total", {"loop": "engine", "task": "Schedule"}),
        ("fleet_engine_reconcile_count_total", {}),
        ("fleet_engine_reconcile_duration_second_count", {}),
        ("fleetd_reconcile_seconds_count", {"loop": "engine"}),
    ]
    before = [sample(name, **labels) for name, labels in names]
    metrics.engine_pass(0.25, ["Schedule", "Schedule"])
    metrics.engine_pass(0.5, [])  # a pass with nothing to do counts for fleet, not in ours
    after = [sample(name, **labels) for name, labels in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2, 2, 2, 1]


def test_leadership_start_time_is_kept_while_leading_and_cleared_after() -> None:
    metrics.note_leadership(False)  # whatever an engine in this process left
    metrics.note_leadership(True, now=1000.0)
    metrics.note_leadership(True, now=2000.0)
    assert sample("fleet_engine_leader_start_time") == 1000.0
    metrics.note_leadership(False)
    assert sample("fleet_engine_leader_start_time") == 0.0
    assert sample("fleetd_engine_leader") == 0.0


@pytest.mark.parametrize(
    ("method", "ranged", "kind"),
    [
        ("/etcdserverpb.KV/Range", False, "get"),
        ("/etcdserverpb.KV/Range", True, "get_all"),
        ("/etcdserverpb.KV/Put", False, "set"),
        ("/etcdserverpb.KV/Txn", False, "txn"),
        ("/etcdserverpb.Lease/LeaseGrant", False, "lease"),
        ("/etcdserverpb.Cluster/MemberList", False, "memberlist"),
    ],
)
def test_etcd_calls_get_fleets_operation_types(method: str, ranged: bool, kind: str) -> None:
    assert metrics.operation_type(method, ranged) == kind


def test_registry_operations_count_successes_and_failures_apart() -> None:
    metrics.registry_operation("get", 0.01, succeeded=True)
    metrics.registry_operation("set", 0.01, succeeded=False)
    text = metrics.exposition().decode()
    assert 'fleet_registry_operation_count_total{type="get"}' in text
    assert 'fleet_registry_operation_duration_second_count{ops="get"}' in text
    assert 'fleet_registry_operation_failed_count_total{type="set"} 1.0' in text
