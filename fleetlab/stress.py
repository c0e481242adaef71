"""Stress: many units started on a loaded lab, held there, and checked for false failovers.

The load (load.py) is a CPU hog in every machine and a throttled disk under etcd; every machine
and etcd stay up and connected throughout, so nothing may fail over. A false failover shows as:

* a machine lease that expires: fleetd logs "machine lease ... expired", or etcd answers that a
  lease the watch samples is gone;
* fencing: "fencing:" from fleetd's guard or from fleetd-backstop;
* the engine taking a machine for gone: "engine task=Unschedule ... went away", or
  "engine: not moving ... vanished machines";
* a unit that moves or restarts: where it runs, its MainPID or its ActiveEnterTimestamp differ
  between the census of systemd taken when every unit first ran and the one after the hold.

Also measured: seconds until every unit runs; the least time etcd had left on any machine's
lease; the least time any fleetd had left before its backstop would stop its units (from the
lease deadline fleetd keeps in /run/fleet/deadline: stop at last contact + 0.85·TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fleetd import deadline as dl
from fleetd.client import FleetClient
from fleetd.fencing import STOP_DEADLINE_FRACTION
from fleetd.keys import Keys
from fleetd.machine_plan import RUNNING_STATES as RUNNING
from fleetd.registry import Registry, RegistryError, translated_errors

from . import machine as lab_machine
from .lab import Lab
from .load import LoadFigures, LoadMeter, cpu_hogs, slow_etcd_disk

UNIT_PREFIX = "stress-unit-"
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"

HOST_TIMEOUT = 30.0  # seconds for one of the host's own etcd requests
FLEETD_UNITS = ["-u", "fleetd.service", "-u", "fleetd-backstop.service"]
# Each is a false failover when every machine and etcd are up.
FAILOVER_SIGNS = {
    "lease expired": re.compile(r"machine lease \S+ expired"),
    "fenced": re.compile(r"\]: fencing:"),  # not "etcd is silent; not fencing: ..."
    "machine taken for gone": re.compile(r"engine task=Unschedule .*went away|engine: not moving"),
}
# Symptoms of the load, counted but not failures in themselves.
SYMPTOMS = {
    "etcd unreachable": re.compile(r"cannot reach etcd"),
    "slow engine pass": re.compile(r"engine pass took"),
    "etcd suspected": re.compile(r"etcd is silent"),
    "took the lead": re.compile(r"engine: this machine leads now"),
    "registered": re.compile(r"registered machine "),
}


@dataclass(frozen=True)
class StressSettings:
    units: int
    ttl: float
    hold: float  # seconds under load after every unit runs
    write_iops: int  # etcd's disk writes a second
    start_timeout: float = 300.0


@dataclass(frozen=True)
class Run:
    machine: str
    state: str
    main_pid: str
    entered: str  # ActiveEnterTimestampMonotonic: changes with every (re)start


def unit_names(count: int) -> list[str]:
    return [f"{UNIT_PREFIX}{index:04d}.service" for index in range(count)]


def census(lab: Lab, machines: Sequence[str]) -> dict[str, list[Run]]:
    """Every stress unit systemd has loaded on `machines`, unit -> its runs."""
    properties = ["-p", "Id", "-p", "ActiveState", "-p", "MainPID"]
    properties += ["-p", "ActiveEnterTimestampMonotonic"]
    found: dict[str, list[Run]] = {}
    for machine in machines:
        argv = ["systemctl", "show", *properties, f"{UNIT_PREFIX}*.service"]
        for block in lab.run(machine, argv, timeout=120).stdout.split("\n\n"):
            fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if "Id" in fields:
                run = Run(
                    machine,
                    fields.get("ActiveState", ""),
                    fields.get("MainPID", ""),
                    fields.get("ActiveEnterTimestampMonotonic", ""),
                )
                found.setdefault(fields["Id"], []).append(run)
    return found


def running_once(
    names: Sequence[str], seen: dict[str, list[Run]]
) -> tuple[dict[str, Run], list[str]]:
    """The one run of each unit, and what is wrong where a unit runs nowhere or twice."""
    once: dict[str, Run] = {}
    problems: list[str] = []
    for name in names:
        runs = [run for run in seen.get(name, []) if run.state in RUNNING]
        if len(runs) == 1:
            once[name] = runs[0]
        else:
            where = ", ".join(run.machine for run in runs) or "nowhere"
            problems.append(f"{name} runs on {where}")
    return once, problems


def changes(before: dict[str, Run], after: dict[str, Run]) -> list[str]:
    """Units that moved or restarted between two censuses of units that ran once."""
    found = []
    for name, old in sorted(before.items()):
        new = after.get(name)
        if new is None:
            continue  # running_once reported it
        if new.machine != old.machine:
            found.append(f"{name} moved from {old.machine} to {new.machine}")
        elif (new.main_pid, new.entered) != (old.main_pid, old.entered):
            found.append(
                f"{name} restarted on {new.machine}: MainPID {old.main_pid} -> {new.main_pid},"
                f" ActiveEnterTimestampMonotonic {old.entered} -> {new.entered}"
            )
    return found


def scan_journals(lab: Lab, machines: Sequence[str]) -> dict[str, list[str]]:
    """Lines of fleetd's and its backstop's journals by sign or symptom, machine-prefixed."""
    patterns = {**FAILOVER_SIGNS, **SYMPTOMS}
    found: dict[str, list[str]] = {label: [] for label in patterns}
    for machine in machines:
        text = lab.journal_text(machine, [*FLEETD_UNITS, "-o", "short-monotonic"])
        for line in text.splitlines():
            for label, pattern in patterns.items():
                if pattern.search(line):
                    found[label].append(f"{machine}: {line}")
    return found


@dataclass
class LeaseWatch:
    """Samples every `every` seconds how long each machine's lease has left in etcd, and how
    long its fleetd has left before its backstop would stop its units."""

    lab: Lab
    registry: Registry
    every: float = 0.5
    lease_left: dict[str, int] = field(default_factory=dict)  # machine -> least TTL seen
    backstop_left: dict[str, float] = field(default_factory=dict)  # machine -> least seconds
    expired: list[str] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)  # machines whose sampled lease expired
    unanswered: int = 0  # the host's reads etcd did not answer in time

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LeaseWatch]:
        raw = await self.registry.snapshot()
        names = {r.machine_id: r.name for r in self.lab.require_state().machines}
        leases = {names[m]: lease for m, lease in raw.machine_leases.items() if m in names}
        task = asyncio.create_task(self.sample_forever(leases))
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sample_forever(self, leases: dict[str, int]) -> None:
        while True:
            await asyncio.gather(*(self.sample(m, lease) for m, lease in leases.items()))
            for machine in leases:
                self.sample_deadline(machine)
            await asyncio.sleep(self.every)

    async def sample(self, machine: str, lease: int) -> None:
        try:
            with translated_errors("reading a lease"):
                info = await self.registry.client.get_lease_info(lease, keys=False)
        except RegistryError:
            self.unanswered += 1
            return
        if info.TTL >= 0:
            self.lease_left[machine] = min(self.lease_left.get(machine, info.TTL), info.TTL)
        elif machine not in self.gone:
            self.gone.add(machine)
            self.expired.append(f"{time.strftime('%X')} lease {lease:x} of {machine} is gone")

    def sample_deadline(self, machine: str) -> None:
        pid = lab_machine.init_pid(self.lab.layout.machine(machine))
        if pid is None:
            return
        try:
            text = Path(f"/proc/{pid}/root/run/fleet/deadline").read_text()
            deadline = dl.decode(text)
        except (OSError, ValueError):
            return  # fencing off, or a fleetd without a deadline
        left = deadline.stop_at - time.monotonic()
        self.backstop_left[machine] = min(self.backstop_left.get(machine, left), left)


@dataclass
class StressReport:
    settings: StressSettings
    machines: int
    to_active: float | None  # seconds until every unit ran once; None: not within the timeout
    per_machine: dict[str, int]
    unit_problems: list[str]
    watch: LeaseWatch
    journal: dict[str, list[str]] = field(default_factory=dict)  # after the run
    load: LoadFigures | None = None  # after the load

    def false_failovers(self) -> list[str]:
        found = list(self.unit_problems) + self.watch.expired
        for label in FAILOVER_SIGNS:
            found += [f"{label}: {line}" for line in self.journal.get(label, [])]
        if self.to_active is None:
            found.insert(0, f"not every unit ran within {self.settings.start_timeout:.0f}s")
        return found

    def lines(self) -> list[str]:
        s, watch = self.settings, self.watch
        to_active = "never" if self.to_active is None else f"{self.to_active:.1f}s"
        spread = sorted(self.per_machine.values())
        lease_left = min(watch.lease_left.values(), default=None)
        backstop_left = min(watch.backstop_left.values(), default=None)
        stop = STOP_DEADLINE_FRACTION * s.ttl
        return [
            f"{s.units} units on {self.machines} machines, agent_ttl {s.ttl:g}s, etcd disk"
            f" {s.write_iops} writes/s, held {s.hold:.0f}s after all ran",
            f"all units active after {to_active}; per machine {spread[0] if spread else 0}"
            f"..{spread[-1] if spread else 0}",
            *(self.load.lines() if self.load else []),
            f"least lease TTL etcd had left: {lease_left}s of {s.ttl:g}s; leases gone:"
            f" {len(watch.gone)} ({watch.unanswered} reads from the host unanswered in time)",
            "least time left before a backstop would fence: "
            + (
                "n/a (no lease deadline file)"
                if backstop_left is None
                else f"{backstop_left:.1f}s of {stop:.1f}s (the oldest acknowledged keepalive"
                f" was {stop - backstop_left:.1f}s old)"
            ),
            "journal: "
            + ", ".join(f"{label} {len(lines)}" for label, lines in sorted(self.journal.items())),
            f"false failovers: {len(self.false_failovers())}",
        ]


async def wait_all_active(
    client: FleetClient, names: Sequence[str], timeout: float, watch: LeaseWatch
) -> bool:
    """Whether fleet reports every unit active on one machine within `timeout`. A read that
    etcd does not answer in time (its disk is slow) is counted and tried again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            units = await client.units()
        except RegistryError:
            watch.unanswered += 1
            units = {}
        if units and all(name in units and len(units[name].active_on()) == 1 for name in names):
            return True
        await asyncio.sleep(1.0)
    return False


async def run_stress(lab: Lab, settings: StressSettings) -> StressReport:
    """Load the lab, start the units, hold, and report what the load did to them. The host's
    own requests get a long timeout: a slow etcd must fail fleetd, if anything, not the test."""
    machines = lab.running_machines()
    names = unit_names(settings.units)
    async with Registry.open(lab.host_etcd_endpoint, Keys(), timeout=HOST_TIMEOUT) as registry:
        client = FleetClient(registry)
        with cpu_hogs(lab, machines) as hogs, slow_etcd_disk(lab, settings.write_iops) as disk:
            meter = LoadMeter(lab, hogs, disk)
            meter.start()
            async with LeaseWatch(lab, registry).running() as watch:
                report = await start_and_hold(lab, client, names, settings, watch)
            report.load = meter.stop()
    report.journal = await asyncio.to_thread(scan_journals, lab, machines)
    return report


async def start_and_hold(
    lab: Lab, client: FleetClient, names: list[str], settings: StressSettings, watch: LeaseWatch
) -> StressReport:
    machines = lab.running_machines()
    started = time.monotonic()
    await client.start(names, dict.fromkeys(names, SLEEPER))
    ran = await wait_all_active(client, names, settings.start_timeout, watch)
    to_active = time.monotonic() - started if ran else None
    first, problems = running_once(names, await asyncio.to_thread(census, lab, machines))
    await asyncio.sleep(settings.hold)
    second, later_problems = running_once(names, await asyncio.to_thread(census, lab, machines))
    per_machine: dict[str, int] = dict.fromkeys(machines, 0)
    for run in first.values():
        per_machine[run.machine] += 1
    problems += [p for p in later_problems if p not in problems] + changes(first, second)
    return StressReport(settings, len(machines), to_active, per_machine, problems, watch)
