"""`fleetctl dashboard` in a real browser: Debian's chromium, headless, driven by Selenium
through chromium-driver, against `fleetctl dashboard` running on the host.

One lab for the live behaviour (machines and units listed, an unplaced unit's reason, a unit
moving after its machine is killed, with the move in the event timeline and its failover
picture, and fleetd on the API's machine restarting, all without a reload, plus metrics_listen
on that machine), one loopback etcd with 1,000 units for the first
paint. A failing test leaves a screenshot of the page in build/test-output/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from fleetd.keys import Keys
from fleetd.model import DesiredState, JobRecord, Machine
from fleetd.registry import Registry
from fleetd.unitfile import parse_unit_file
from fleetlab.etcd import EtcdServer

from .fleet import FleetCluster, unit

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
OUTPUT_DIR = REPO / "build" / "test-output"
FLEETCTL = str(Path(sys.executable).with_name("fleetctl"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FIRST_PAINT_LIMIT_MS = 1000
METRICS_PORT = 9100
EVENT = "#events li[data-kind='%s']"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """One headless chromium for the module (the system's: no browser is downloaded)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1600")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def screenshot_on_failure(
    browser: webdriver.Chrome, request: pytest.FixtureRequest
) -> Iterator[None]:
    try:
        yield
    except BaseException:
        directory = OUTPUT_DIR / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        directory.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(directory / "dashboard.png"))
        (directory / "dashboard.html").write_text(browser.page_source)
        raise


@contextmanager
def dashboard(*global_flags: str) -> Iterator[str]:
    """`fleetctl [flags] dashboard` on the host, running this checkout's code: its URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [FLEETCTL, *global_flags, "dashboard"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = subprocess.Popen(argv, env=env, text=True, **pipes)  # type: ignore[call-overload]
    try:
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, f"no URL from fleetctl dashboard: {line!r}"
        yield found.group(0)
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0, process.stderr.read()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:  # the page is mid-render: ask again
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"the page did not show {what} within {timeout}s"
        time.sleep(0.2)


def unit_row(browser: webdriver.Chrome, name: str) -> dict[str, str]:
    """The unit's row as the page shows it (empty when it does not)."""
    return browser.execute_script(
        """const row = document.querySelector(`#units tr[data-unit="${arguments[0]}"]`);
        if (!row) return {};
        const cell = (c) => row.querySelector("td." + c).textContent;
        return {machine: row.dataset.machine, current: cell("current"), reason: cell("reason")};""",
        name,
    )


def failover_marks(browser: webdriver.Chrome, unit_name: str) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll("
        "`#failovers figure[data-unit='${arguments[0]}'] g.mark`)].map((g) => g.dataset.kind)",
        unit_name,
    )


def cells(browser: webdriver.Chrome, selector: str) -> set[str]:
    return {element.text for element in browser.find_elements(By.CSS_SELECTOR, selector)}


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def http_status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as error:
        return error.code


def inside(fleet: FleetCluster, machine: str, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:METRICS_PORT<path> from inside the machine: status and body."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        f"try: r = urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}{path}', timeout=5)\n"
        "except urllib.error.HTTPError as e: r = e\n"
        "print(r.status); sys.stdout.write(r.read().decode())\n"
    )
    out = fleet.lab.run(machine, ["python3", "-c", script], check=False).stdout
    status, _, body = out.partition("\n")
    return int(status or 0), body


@pytest.mark.agent_ttl(3)
async def test_the_page_follows_the_lab_live(
    fleet: FleetCluster, browser: webdriver.Chrome, request: pytest.FixtureRequest
) -> None:
    # web.service can only run in region=eu (m2, m3): killing its machine moves it to the other.
    files = {
        "web.service": unit("MachineMetadata=region=eu"),
        "mars.service": unit("MachineMetadata=region=mars"),
    }
    await fleet.client.start(list(files), files)
    units = await fleet.client.wait_until(lambda u: u["web.service"].active_on(), 20)
    victim = units["web.service"].machine
    assert victim is not None
    socket = f"unix:///proc/{fleet.lab.running_pid('m1')}/root/run/fleet.sock"
    with dashboard("--endpoint", socket) as url, screenshot_on_failure(browser, request):
        assert http_status(url + "api/state", "POST") == 405  # never a write, on any path
        assert http_status(url + "api/state", "DELETE") == 405
        browser.get(url)
        ips = {m.ip for m in (await fleet.client.machines()).values()}
        wait_for("every machine of the lab", lambda: cells(browser, "#machines td.ip") == ips)
        placed = wait_for("web.service placed", lambda: unit_row(browser, "web.service")["machine"])
        assert placed == victim
        reason = wait_for(
            "why mars.service waits", lambda: unit_row(browser, "mars.service")["reason"]
        )
        assert "mars" in reason
        browser.execute_script("window.notReloaded = true")

        fleet.lab.kill(fleet.names[victim])
        wait_for(
            "web.service moving off the killed machine",
            lambda: (
                unit_row(browser, "web.service")["machine"] not in ("", victim)
                and unit_row(browser, "web.service")["current"] == "launched"
            ),
            timeout=fleet.ttl + 20,
        )
        # The live timeline has the move, and the failover its picture: the old machine's
        # lease expiry, the reschedule and the start marked on the unit's lane.
        wait_for("the move in the timeline", lambda: cells(browser, EVENT % "unit.moved"))
        marks = wait_for(
            "the failover picture",
            lambda: {"lease", "schedule", "start"} <= set(failover_marks(browser, "web.service")),
        )
        assert marks
        assert len(browser.find_elements(By.CSS_SELECTOR, "#machines .leader")) == 1
        assert browser.execute_script("return window.notReloaded") is True

        # fleetd on the API's machine restarts (with metrics_listen now): the page keeps up.
        fleet.configure("m1", metrics_listen=f"127.0.0.1:{METRICS_PORT}")
        fleet.lab.run("m1", ["systemctl", "restart", "fleetd.service"])
        wait_for("the API back", lambda: not cells(browser, "#status.error"), timeout=30)
        await fleet.client.start(["after.service"], {"after.service": unit()})
        wait_for(
            "a unit started after the restart",
            lambda: unit_row(browser, "after.service").get("current") == "launched",
            timeout=30,
        )
        wait_for(  # the event stream reconnected too
            "the new unit's start in the timeline",
            lambda: any("after.service" in text for text in cells(browser, EVENT % "unit.started")),
        )
        assert browser.execute_script("return window.notReloaded") is True

        # A drain mark shows as the machine's state (read from the mark, not the events).
        drained = next(m for m in (await fleet.client.machines()) if m != victim)
        await fleet.client.drain(drained, force=True)
        marked = f'#machines tr[data-machine="{drained}"] .drained'
        wait_for("the drain mark", lambda: cells(browser, marked) & {"draining", "drained"})
        await fleet.client.undrain(drained)
        wait_for("the drain mark gone", lambda: not cells(browser, marked))

    # metrics_listen on m1: plain HTTP, /metrics with process metrics, /healthz, nothing else.
    healthy = wait_for("/healthz 200", lambda: inside(fleet, "m1", "/healthz")[0] == 200)
    assert healthy and inside(fleet, "m1", "/healthz")[1].strip() == "ok"
    status, body = inside(fleet, "m1", "/metrics")
    assert status == 200 and "process_resident_memory_bytes" in body
    assert "fleet_engine_reconcile_count_total" in body
    assert "fleetd_machines 2.0" in body  # the cluster gauges, read now: m1 and the survivor
    assert inside(fleet, "m1", "/fleet/v1/units")[0] == 404


async def test_first_paint_with_1000_units_and_10_machines(
    etcd: EtcdServer, browser: webdriver.Chrome, request: pytest.FixtureRequest
) -> None:
    """Measured by the browser itself: from navigation to the page's tables filled (the
    performance mark the page sets), with the dashboard's server already reading the cluster."""
    async with Registry.open(etcd.endpoint, Keys(), timeout=5.0) as registry:
        lease = await registry.grant_lease(60)
        for n in range(10):
            machine = Machine(f"{n:02d}" * 16, f"10.1.0.{n + 10}", {"rack": str(n % 3)})
            await registry.publish_machine(machine, lease)
        body = "[Service]\nExecStart=/bin/sleep infinity\n"
        unit_hash = parse_unit_file(body, "u.service").hash
        names = [f"u{i:04d}.service" for i in range(1000)]
        for start in range(0, len(names), 50):
            batch = names[start : start + 50]
            jobs = [(JobRecord(n, unit_hash, DesiredState.LAUNCHED), body) for n in batch]
            await registry.create_jobs(jobs, replace=False)
        flags = ("--driver=etcd", "--endpoint", etcd.endpoint)
        with dashboard(*flags) as url, screenshot_on_failure(browser, request):
            wait_for("1000 units read", lambda: '"u0999.service"' in read(url + "api/state"))
            browser.get(url)
            rendered = wait_for(
                "the tables",
                lambda: browser.execute_script(
                    "const m = performance.getEntriesByName('dashboard-rendered');"
                    "return m.length ? m[0].startTime : null"
                ),
            )
            assert len(browser.find_elements(By.CSS_SELECTOR, "#units tbody tr")) == 1000
            assert len(browser.find_elements(By.CSS_SELECTOR, "#machines tbody tr")) == 10
            print(f"first paint with 1000 units and 10 machines: {rendered:.0f} ms")
            assert rendered <= FIRST_PAINT_LIMIT_MS
