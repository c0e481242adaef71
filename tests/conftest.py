"""Fixtures on real services: `etcd` (a real etcd on loopback) and `lab` (real systemd machines)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fleetd.client import FleetClient
from fleetd.keys import Keys
from fleetd.registry import Registry
from fleetlab.etcd import EtcdServer, loopback_etcd
from fleetlab.fleet import enable_fleetd
from fleetlab.lab import Lab
from imagebuild.rootfs import build_rootfs
from tests.cluster.fleet import FleetCluster

REPO = Path(__file__).resolve().parents[1]
OUTPUT_DIR = REPO / "build" / "test-output"
JOURNAL_TAIL_LINES = 200


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A real etcd server on a free loopback port with a fresh data directory."""
    with loopback_etcd(tmp_path / "etcd") as server:
        yield server


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The machines' root filesystem (built once, then from the cache)."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    return build_rootfs()


def unique_lab_name() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def lab(request: pytest.FixtureRequest, rootfs: Path) -> Iterator[Lab]:
    """A lab of N machines (`@pytest.mark.machines(N)`, default 3), always torn down."""
    marker = request.node.get_closest_marker("machines")
    count = marker.args[0] if marker else 3
    lab = Lab(unique_lab_name())
    lab.up(count, rootfs, REPO)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture
async def fleet(lab: Lab, request: pytest.FixtureRequest) -> AsyncIterator[FleetCluster]:
    """fleetd running on every machine of `lab` (`@pytest.mark.agent_ttl(S)`, default 3 s),
    and a client on the host talking to the lab's etcd."""
    marker = request.node.get_closest_marker("agent_ttl")
    ttl = marker.args[0] if marker else 3.0
    async with Registry.open(lab.host_etcd_endpoint, Keys(), timeout=2.0) as registry:
        cluster = FleetCluster(lab, ttl, registry, FleetClient(registry))
        state = lab.require_state()
        for record in state.machines:
            cluster.configure(record.name)
            enable_fleetd(lab, record.name)  # and on every later boot of the machine
            cluster.ids[record.name] = record.machine_id
        deadline = time.monotonic() + 20
        while len(await cluster.client.machines()) < len(state.machines):
            assert time.monotonic() < deadline, "fleetd did not register every machine"
            await asyncio.sleep(0.1)
        while not all(knows_its_peers(lab, r.name, len(state.machines)) for r in state.machines):
            # Until then a machine cut off from etcd cannot judge, so the backstop fences.
            assert time.monotonic() < deadline, "fleetd did not learn its peers everywhere"
            await asyncio.sleep(0.1)
        yield cluster


def knows_its_peers(lab: Lab, machine: str, machines: int) -> bool:
    """Whether the machine's fence guard has read the peer list (kept in /run/fleet/peers)."""
    found = lab.run(machine, ["cat", "/run/fleet/peers"], check=False).stdout
    try:
        return len(json.loads(found)) == machines - 1
    except ValueError:
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach every lab machine's journal to the report and save it in full."""
    outcome = yield
    report = outcome.get_result()
    lab = getattr(item, "funcargs", {}).get("lab")
    if report.when != "call" or not report.failed or not isinstance(lab, Lab):
        return
    directory = OUTPUT_DIR / re.sub(r"[^\w.-]+", "_", item.nodeid)
    directory.mkdir(parents=True, exist_ok=True)
    state = lab.state()
    for record in state.machines if state else []:
        text = lab.journal_text(record.name, ["-o", "short-monotonic"])
        (directory / f"{record.name}.journal").write_text(text)
        tail = "\n".join(text.splitlines()[-JOURNAL_TAIL_LINES:])
        report.sections.append((f"journal of {record.name} (full: {directory})", tail))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "machines(n): how many machines the `lab` fixture boots")
    config.addinivalue_line(
        "markers", "agent_ttl(seconds): fleetd's agent_ttl in the `fleet` fixture"
    )
