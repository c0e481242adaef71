"""Stress: 1,000 units started on 10 machines while a CPU hog keeps every CPU busy in every
machine and etcd's disk is throttled, then held there for three TTLs. At the default agent_ttl
nothing may fail over: no lease expires, nothing fences, no unit moves or restarts, and every
unit runs exactly once. About 2.5 minutes; `bench/stress.py` holds longer and varies the disk."""

from __future__ import annotations

import pytest

from fleetlab.stress import StressSettings, run_stress

from .fleet import FleetCluster

pytestmark = pytest.mark.cluster
UNITS = 1000
WRITE_IOPS = 30  # etcd's disk: a fdatasync takes tens of milliseconds instead of a fraction of one


@pytest.mark.machines(10)
@pytest.mark.agent_ttl(10)
@pytest.mark.timeout(600)
async def test_units_under_cpu_and_disk_load_never_fail_over(fleet: FleetCluster) -> None:
    settings = StressSettings(
        UNITS, fleet.ttl, hold=3 * fleet.ttl, write_iops=WRITE_IOPS, start_timeout=180
    )
    report = await run_stress(fleet.lab, settings)
    figures = "\n".join(report.lines())
    print(figures)
    # The load was real: otherwise passing proves nothing.
    assert report.load is not None, figures
    assert report.load.host_busy > 0.95, figures
    assert report.load.hog_share > 0.5, figures
    assert report.load.wal_fsync.mean() > 0.02, figures
    assert not report.false_failovers(), figures + "\n" + "\n".join(report.false_failovers())
