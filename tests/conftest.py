"""Fixtures on real services: `etcd` (a real etcd on loopback) and `lab` (real systemd machines)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetlab.etcd import EtcdServer, loopback_etcd
from fleetlab.lab import Lab
from imagebuild.rootfs import build_rootfs

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
