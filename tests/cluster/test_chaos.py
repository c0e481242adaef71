"""Chaos: a seeded sequence of 100 faults and fleetctl operations on a 5-machine lab, with
systemd sampled on every machine throughout. A failure prints the seed and the event log;
`bench/chaos.py --seed S --events N` replays or extends it."""

from __future__ import annotations

import pytest

from fleetlab.chaos import Chaos

from .fleet import FleetCluster

pytestmark = pytest.mark.cluster
CI_SEED = 20261130


@pytest.mark.machines(5)
@pytest.mark.agent_ttl(3)
@pytest.mark.timeout(900)
async def test_a_hundred_random_faults_never_run_a_unit_twice_nor_lose_one(
    fleet: FleetCluster,
) -> None:
    chaos = Chaos(fleet.lab, fleet.client, fleet.ttl, CI_SEED)
    await chaos.run(events=100)
    assert chaos.checkpoints == 5
