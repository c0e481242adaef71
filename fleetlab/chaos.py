"""Chaos on a lab: a seeded random sequence of faults and fleetctl operations, a sampler of
what systemd runs on every machine, and the two promises checked against what it saw:

* never two copies: no non-global unit ever runs on two machines at once;
* never lost: once the cluster is healthy again, every unit desired `launched` runs somewhere
  within TTL + 5 s, and no other unit runs anywhere.

Runs are measured, not guessed: every machine of a lab shares the host's CLOCK_MONOTONIC, so
systemd's own InactiveExit/InactiveEnter timestamps of a unit on different machines compare
exactly, whatever the sampling period. A machine that is killed or powered off ends its runs
at that moment (its processes die with it).

The plan (which events, in which order) is pure and replayable from its seed; `Chaos` carries
it out on a real lab and keeps the event log that a failure prints.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from fleetd.client import ClientError, FleetClient
from fleetd.machine_plan import RUNNING_STATES as RUNNING
from fleetd.model import DesiredState
from fleetd.registry import RegistryError
from flotilla.timeline_svg import Mark, Span, render_timeline

from .lab import Lab

UNIT_PREFIX = "chaos-"
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"
SETTLE_MARGIN = 5.0  # the "+ 5 s" of the liveness promise


# -- the plan (pure) -----------------------------------------------------------------------


@dataclass
class World:
    """What the plan believes about the lab, to pick only events that make sense."""

    machines: list[str]
    down: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)
    frozen: set[str] = field(default_factory=set)  # fleetd SIGSTOPped
    etcd_down: bool = False
    units: dict[str, DesiredState] = field(default_factory=dict)
    next_unit: int = 0

    def up(self) -> list[str]:
        return [m for m in self.machines if m not in self.down]


@dataclass(frozen=True)
class Event:
    kind: str
    target: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.target}".strip()


# Faults are picked more often than their repairs, so that some last long enough (several
# TTLs) for units to fail over while the fault still holds; "pause" waits one TTL and more.
WEIGHTS = {
    "kill": 2,
    "stop": 1,
    "start": 2,
    "partition": 3,
    "heal": 1,
    "fleetd-kill": 2,
    "fleetd-freeze": 2,
    "fleetd-thaw": 1,
    "etcd-stop": 1,
    "etcd-start": 1,
    "unit-start": 5,
    "unit-stop": 2,
    "unit-destroy": 1,
    "pause": 3,
}


def candidates(world: World) -> dict[str, list[str]]:
    """Every event kind that makes sense now, with its possible targets."""
    up = world.up()
    stopped_units = [u for u, d in world.units.items() if d != DesiredState.LAUNCHED]
    launched = [u for u, d in world.units.items() if d == DesiredState.LAUNCHED]
    found = {
        # keep two machines up: a cluster of none tells nothing about double runs
        "kill": up if len(up) > 2 else [],
        "stop": up if len(up) > 2 else [],
        "start": sorted(world.down),
        "partition": [m for m in up if m not in world.cut],
        "heal": sorted(world.cut),
        "fleetd-kill": [m for m in up if m not in world.frozen],
        "fleetd-freeze": [m for m in up if m not in world.frozen],
        "fleetd-thaw": sorted(world.frozen - world.down),
        "etcd-stop": [] if world.etcd_down else ["etcd"],
        "etcd-start": ["etcd"] if world.etcd_down else [],
        "unit-start": [f"{UNIT_PREFIX}{world.next_unit}.service", *stopped_units],
        "unit-stop": launched,
        "unit-destroy": sorted(world.units),
        "pause": ["ttl"],
    }
    return {kind: targets for kind, targets in found.items() if targets}


def next_event(rng: random.Random, world: World) -> Event:
    options = candidates(world)
    kinds = sorted(options)
    kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
    return Event(kind, rng.choice(options[kind]))


def believe(world: World, event: Event) -> None:
    """Update the world as the event changes it (whether or not a unit operation succeeded,
    the runner re-reads the desired states that etcd accepted)."""
    target = event.target
    match event.kind:
        case "kill" | "stop":
            world.down.add(target)
            world.frozen.discard(target)  # a fresh boot starts a fresh fleetd
        case "start":
            world.down.discard(target)
        case "partition":
            world.cut.add(target)
        case "heal":
            world.cut.discard(target)
        case "fleetd-freeze":
            world.frozen.add(target)
        case "fleetd-thaw" | "fleetd-kill":
            world.frozen.discard(target)
        case "etcd-stop":
            world.etcd_down = True
        case "etcd-start":
            world.etcd_down = False
        case "unit-start":
            if target == f"{UNIT_PREFIX}{world.next_unit}.service":
                world.next_unit += 1
            world.units[target] = DesiredState.LAUNCHED
        case "unit-stop":
            world.units[target] = DesiredState.LOADED
        case "unit-destroy":
            world.units.pop(target, None)


def healthy(world: World) -> bool:
    return not (world.down or world.cut or world.frozen or world.etcd_down)


# -- runs and the promises (pure) ------------------------------------------------------------

UNIT_STOPPED = "9d1aaa27d60140bd96365438aad20286"  # systemd's MESSAGE_ID of "Stopped <unit>."


def stop_times(journal: str) -> dict[str, float]:
    """When systemd logged each unit stopped (`journalctl -o json` of its UNIT_STOPPED
    messages), on the host's CLOCK_MONOTONIC (lab machines share the host's clock): the latest
    per unit."""
    times: dict[str, float] = {}
    for line in journal.splitlines():
        try:
            entry = json.loads(line)
            unit, at = entry["UNIT"], int(entry["__MONOTONIC_TIMESTAMP"]) / 1e6
        except (ValueError, KeyError, TypeError):
            continue
        if entry.get("MESSAGE_ID") == UNIT_STOPPED and isinstance(unit, str):
            times[unit] = max(times.get(unit, at), at)
    return times


@dataclass
class Run:
    machine: str
    unit: str
    start: float  # host CLOCK_MONOTONIC, seconds
    end: float | None = None  # None: still running when last seen


def overlaps(runs: Sequence[Run], now: float) -> list[str]:
    """Every pair of runs of one unit on two machines at the same moment."""
    found = []
    by_unit: dict[str, list[Run]] = {}
    for run in runs:
        by_unit.setdefault(run.unit, []).append(run)
    for unit, unit_runs in sorted(by_unit.items()):
        unit_runs.sort(key=lambda r: r.start)
        for i, first in enumerate(unit_runs):
            for second in unit_runs[i + 1 :]:
                first_end = now if first.end is None else first.end
                if second.machine != first.machine and second.start < first_end:
                    together = min(first_end, now if second.end is None else second.end)
                    found.append(
                        f"{unit} ran on {first.machine} and {second.machine} at once for"
                        f" {together - second.start:.2f}s from t={second.start:.2f}"
                    )
    return found


# -- sampling systemd on every machine -------------------------------------------------------


@dataclass
class Sample:
    state: str
    since: float  # when the unit last left "inactive" (its run began), monotonic seconds
    until: float  # when it last became inactive again


def parse_show(text: str) -> dict[str, Sample]:
    """`systemctl show -p Id,ActiveState,InactiveExitTimestampMonotonic,...` for many units."""
    samples = {}
    for block in text.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" not in fields:
            continue
        samples[fields["Id"]] = Sample(
            fields.get("ActiveState", ""),
            int(fields.get("InactiveExitTimestampMonotonic") or 0) / 1e6,
            int(fields.get("InactiveEnterTimestampMonotonic") or 0) / 1e6,
        )
    return samples


class Sampler:
    """Reads systemd on every running machine every `period` seconds, in a thread, and keeps
    each unit's runs per machine."""

    def __init__(self, lab: Lab, units: Callable[[], list[str]], period: float = 0.25) -> None:
        self.lab = lab
        self.units = units
        self.period = period
        self.runs: list[Run] = []
        self.open: dict[tuple[str, str], Run] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()

    def loop(self) -> None:
        while not self.stopping.is_set():
            names = self.units()
            for machine in self.lab.running_machines() if names else []:
                self.sample(machine, names)
            self.stopping.wait(self.period)

    def sample(self, machine: str, names: list[str]) -> None:
        argv = ["systemctl", "show", "-p", "Id,ActiveState"]
        argv += ["-p", "InactiveExitTimestampMonotonic,InactiveEnterTimestampMonotonic", *names]
        try:
            result = self.lab.run(machine, argv, check=False, timeout=10)
        except Exception:  # the machine died under us: its runs end when the kill is noted
            return
        with self.lock:
            for unit, sample in parse_show(result.stdout).items():
                self.note(machine, unit, sample)

    def note(self, machine: str, unit: str, sample: Sample) -> None:
        current = self.open.get((machine, unit))
        if current is not None and sample.since > current.start:
            current.end = max(sample.until, current.start)  # it stopped and started again
            current = None
        if current is not None and sample.state not in RUNNING:
            current.end = max(sample.until, current.start)
            del self.open[(machine, unit)]
            return
        if current is None and sample.state in RUNNING:
            run = Run(machine, unit, sample.since)
            self.runs.append(run)
            self.open[(machine, unit)] = run

    def machine_died(
        self, machine: str, at: float, stopped: Mapping[str, float] | None = None
    ) -> None:
        """A kill or a power-off ended every run on that machine by `at`, or, for a unit in
        `stopped` (when systemd logged it stopped during a power-off), at that moment."""
        with self.lock:
            for key in [k for k in self.open if k[0] == machine]:
                run = self.open.pop(key)
                end = (stopped or {}).get(run.unit)
                run.end = end if end is not None and run.start <= end <= at else at

    def running(self) -> dict[str, list[str]]:
        with self.lock:
            found: dict[str, list[str]] = {}
            for (machine, unit), _ in sorted(self.open.items()):
                found.setdefault(unit, []).append(machine)
            return found

    def double_runs(self) -> list[str]:
        with self.lock:
            return overlaps(list(self.runs), time.monotonic())


# -- carrying the plan out on a lab ----------------------------------------------------------


class ChaosFailure(AssertionError):
    pass


class Chaos:
    def __init__(self, lab: Lab, client: FleetClient, ttl: float, seed: int) -> None:
        self.lab = lab
        self.client = client
        self.ttl = ttl
        self.seed = seed
        self.rng = random.Random(seed)
        state = lab.require_state()
        self.world = World([record.name for record in state.machines])
        self.log: list[str] = []
        self.started = time.monotonic()
        self.sampler = Sampler(lab, lambda: sorted(self.world.units))
        self.checkpoints = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self.moments: list[tuple[float, Event]] = []  # (monotonic time, event), for the picture

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:8.2f}s {text}")

    def report(self, problem: str) -> str:
        tail = "\n".join(self.log[-60:])
        return f"{problem}\nseed {self.seed}; the last events:\n{tail}"

    async def run(self, events: int, checkpoint_every: int = 20) -> None:
        with self.sampler:
            for number in range(1, events + 1):
                event = next_event(self.rng, self.world)
                await self.apply(event)
                self.check_never_twice()
                await asyncio.sleep(self.rng.uniform(0.2, 1.5))
                if number % checkpoint_every == 0 or number == events:
                    await self.restore()
                    await self.check_nothing_lost()
            self.check_never_twice()

    async def apply(self, event: Event) -> None:
        self.note(str(event))
        self.counts[event.kind] += 1
        self.moments.append((time.monotonic(), event))
        target, lab = event.target, self.lab
        match event.kind:
            case "kill":
                lab.kill(target)
                self.sampler.machine_died(target, time.monotonic())
            case "stop":
                lab.stop(target)
                # The units stopped during the power-off, before its end: when, systemd's
                # journal on the machine's disk says (the sampler cannot ask a machine going down).
                ended = time.monotonic()
                journal = lab.journal_text(
                    target, ["-b", "-o", "json", f"MESSAGE_ID={UNIT_STOPPED}"]
                )
                self.sampler.machine_died(target, ended, stop_times(journal))
            case "start":
                await asyncio.to_thread(lab.start, target)
            case "partition":
                lab.partition(target)
            case "heal":
                await asyncio.to_thread(lab.heal, target)
            case "fleetd-kill":
                lab.run(target, ["systemctl", "kill", "--signal=KILL", "fleetd.service"])
            case "fleetd-freeze" | "fleetd-thaw":
                signal = "STOP" if event.kind == "fleetd-freeze" else "CONT"
                pid = lab.run(target, ["systemctl", "show", "-p", "MainPID", "--value", "fleetd"])
                if pid.stdout.strip() not in ("", "0"):
                    lab.run(target, ["kill", f"-{signal}", pid.stdout.strip()], check=False)
            case "etcd-stop":
                lab.stop_etcd()
            case "etcd-start":
                lab.start_etcd()
            case "unit-start" | "unit-stop" | "unit-destroy":
                await self.unit_operation(event)
            case "pause":
                await asyncio.sleep(self.ttl + 1)
        believe(self.world, event)

    async def unit_operation(self, event: Event) -> None:
        name = event.target
        try:
            async with asyncio.timeout(5):
                if event.kind == "unit-start":
                    await self.client.start([name], {name: SLEEPER})
                elif event.kind == "unit-stop":
                    await self.client.stop([name])
                else:
                    await self.client.destroy([name])
        except (RegistryError, ClientError, TimeoutError) as error:
            self.note(f"  refused: {error or type(error).__name__}")
        await self.read_desired()

    async def read_desired(self) -> None:
        """What etcd accepted is what the promises are checked against."""
        try:
            async with asyncio.timeout(5):
                jobs = await self.client.jobs()
        except (RegistryError, TimeoutError):
            return  # etcd is down: the operation failed too, the world is unchanged
        self.world.units = {
            name: job.desired for name, job in jobs.items() if name.startswith(UNIT_PREFIX)
        }

    async def restore(self) -> None:
        """Make the cluster healthy: every machine up and connected, fleetd running, etcd up."""
        world = self.world
        for event in [
            *(Event("etcd-start", "etcd") for _ in [1] if world.etcd_down),
            *(Event("start", m) for m in sorted(world.down)),
            *(Event("heal", m) for m in sorted(world.cut)),
            *(Event("fleetd-thaw", m) for m in sorted(world.frozen)),
        ]:
            await self.apply(event)
        assert healthy(world)
        self.note("cluster healthy")

    async def check_nothing_lost(self) -> None:
        """Within TTL + 5 s of health, every launched unit runs exactly once, nothing else runs."""
        self.checkpoints += 1
        await self.read_desired()
        deadline = time.monotonic() + self.ttl + SETTLE_MARGIN
        while True:
            problems = self.misplaced()
            if not problems:
                self.note(f"checkpoint {self.checkpoints}: every unit where it should be")
                return
            if time.monotonic() > deadline:
                raise ChaosFailure(self.report("lost or stray units: " + "; ".join(problems)))
            await asyncio.sleep(0.25)

    def misplaced(self) -> list[str]:
        running = self.sampler.running()
        problems = []
        for unit, desired in sorted(self.world.units.items()):
            where = running.get(unit, [])
            if desired == DesiredState.LAUNCHED and len(where) != 1:
                problems.append(f"{unit} (launched) runs on {where or 'no machine'}")
            elif desired != DesiredState.LAUNCHED and where:
                problems.append(f"{unit} ({desired.value}) runs on {where}")
        return problems

    def check_never_twice(self) -> None:
        doubles = self.sampler.double_runs()
        if doubles:
            raise ChaosFailure(self.report("a unit ran twice: " + "; ".join(doubles)))


# -- the picture (pure) ---------------------------------------------------------------------

FAULTS = {"kill", "stop", "partition", "fleetd-kill", "fleetd-freeze", "etcd-stop"}
REPAIRS = {"start", "heal", "fleetd-thaw", "etcd-start"}
PIXELS_PER_SECOND = 6


def timeline(
    runs: Sequence[Run],
    moments: Sequence[tuple[float, Event]],
    started: float,
    now: float,
    title: str,
) -> str:
    """Every unit's runs per machine over the whole chaos run (SVG), with each fault and repair
    marked across the lanes and each unit operation as a tick in its lane; a double run is a red
    band, a lost unit an empty stretch after its start tick."""
    spans = [Span(run.unit, run.machine, run.start, run.end) for run in runs]
    marks = []
    for at, event in moments:
        if event.kind in FAULTS or event.kind in REPAIRS:
            kind = "fault" if event.kind in FAULTS else "repair"
            marks.append(Mark(at, str(event), kind))
        elif event.kind.startswith("unit-"):
            kind = "start" if event.kind == "unit-start" else "schedule"
            marks.append(Mark(at, "", kind, lane=event.target))
    lanes = sorted({s.lane for s in spans} | {m.lane for m in marks if m.lane}, key=unit_order)
    width = min(max(960, int((now - started) * PIXELS_PER_SECOND)), 30000)
    return render_timeline(
        spans, marks, title=title, start=started, end=now, lanes=lanes, width=width
    )


def unit_order(name: str) -> tuple[int, str]:
    """chaos-2 before chaos-10."""
    number = name.removeprefix(UNIT_PREFIX).removesuffix(".service")
    return (int(number), name) if number.isdigit() else (1 << 30, name)


def event_sequence(seed: int, machines: list[str], count: int) -> Iterator[Event]:
    """The plan alone (no lab): for tests and for reading a seed's events back."""
    rng, world = random.Random(seed), World(list(machines))
    for _ in range(count):
        event = next_event(rng, world)
        believe(world, event)
        yield event
