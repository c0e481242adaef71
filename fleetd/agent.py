"""The agent: make this machine's systemd run exactly what the engine assigned to it.

A pass reads the assignments (one ranged read), the unit files in units_directory and their
systemd states (one D-Bus call), plans with the pure `plan_machine` and runs the tasks in order,
stopping at the first failure (the next pass retries from a fresh diff). Unit states are
published from systemd's signals. Everything is rebuilt from disk and systemd at start-up, so a
killed and restarted fleetd restarts nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Iterable
from itertools import groupby
from pathlib import Path
from typing import TypeVar

from . import systemd as sd
from .heart import Heart
from .machine_plan import (
    AgentTask,
    LoadUnit,
    LocalUnit,
    ReloadSystemd,
    StartUnit,
    StopUnit,
    UnloadUnit,
    plan_machine,
)
from .model import Assignment, UnitState
from .registry import Registry, RegistryError
from .unitname import parse_unit_name
from .wakeup import wait_for_wakeup, watch_forever

log = logging.getLogger(__name__)
FULL_PASS_SECONDS = 60.0  # reconcile even when nothing seems to change, at least this often
MAX_CONCURRENT_CALLS = 32
FLUSH_SETTLE_SECONDS = 0.02  # gather a burst of state changes into one write
WAKE_SETTLE_SECONDS = 0.05  # let a burst of assignments land before a pass
T = TypeVar("T")


class Agent:
    def __init__(
        self,
        registry: Registry,
        systemd: sd.Systemd,
        heart: Heart,
        units_directory: Path,
        interval: float,
    ) -> None:
        self.registry = registry
        self.systemd = systemd
        self.heart = heart
        self.units_directory = units_directory
        self.interval = interval
        self.machine_id = heart.machine.id
        self.wakeup = asyncio.Event()
        self.started: dict[str, str] = {}  # unit -> hash this agent started
        self.assigned: dict[str, Assignment] = {}  # as of the last pass
        self.published: dict[str, UnitState] = {}
        self.fenced = False
        self.loaded = self.unit_files()  # unit -> hash of the file this agent wrote
        self.bodies: dict[str, str] = {}  # hash -> unit body
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()  # systemd reported a state change since the last pass
        self.dirty: set[str] = set()  # units whose published state must be written or deleted
        self.flush_needed = asyncio.Event()
        self.planned_at: tuple[int, float] | None = (
            None  # (etcd revision, monotonic time)  # passes, fencing and shutdown never interleave
        )

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        prefix = self.registry.keys.assigned_to(self.machine_id)
        watch = asyncio.create_task(watch_forever(self.registry, prefix, self.wakeup))
        publisher = asyncio.create_task(self.publish_states())
        flusher = asyncio.create_task(self.flush_states())
        try:
            while True:
                await self.heart.registered.wait()
                await self.step()
                await wait_for_wakeup(self.wakeup, self.interval)
                await asyncio.sleep(WAKE_SETTLE_SECONDS)
        finally:
            watch.cancel()
            publisher.cancel()
            flusher.cancel()

    def failure_level(self) -> int:
        """While the heart already reports an etcd outage, a failed pass is no news."""
        return logging.DEBUG if self.heart.failing_since is not None else logging.WARNING

    async def step(self) -> None:
        if self.fenced:
            return
        try:
            async with self.lock:
                await self.reconcile()
        except (RegistryError, sd.SystemdError, OSError) as error:
            log.log(self.failure_level(), "agent pass failed: %s", error)

    async def unchanged_since_last_pass(self) -> bool:
        """Neither etcd nor systemd changed since a pass that had nothing to do."""
        revision = await self.registry.revision_of(self.registry.keys.machine(self.machine_id))
        quiet = not self.changed.is_set() and self.planned_at is not None
        if quiet and revision == self.planned_at[0]:  # type: ignore[index]
            return time.monotonic() - self.planned_at[1] < FULL_PASS_SECONDS  # type: ignore[index]
        self.changed.clear()
        self.planned_at = None if revision is None else (revision, time.monotonic())
        return False

    async def reconcile(self) -> None:
        if await self.unchanged_since_last_pass():
            return
        self.assigned = await self.registry.assignments(self.machine_id)
        self.loaded = self.unit_files()
        current = await self.local_units()
        tasks = plan_machine(self.assigned, current, self.started)
        for task in tasks:
            log.info(
                "agent task=%s %s",
                type(task).__name__,
                describe(task),
                extra=journal_fields(getattr(task, "unit", None)),
            )
        # The plan is ordered by kind; each kind runs as one batch (one D-Bus call where systemd
        # takes lists, concurrent calls where it does not). A failed batch ends the pass.
        if tasks:
            self.planned_at = None
        for kind, batch in groupby(tasks, key=type):
            await self.run_batch(kind, list(batch))
        await self.publish_changed_states()

    async def local_units(self) -> dict[str, LocalUnit]:
        states = await self.systemd.unit_states(list(self.loaded))
        return {
            name: LocalUnit(unit_hash, states[name].active_state if name in states else "inactive")
            for name, unit_hash in self.loaded.items()
        }

    def unit_files(self) -> dict[str, str]:
        """Units loaded by this agent: the files in units_directory and the hash of each."""
        if not self.units_directory.is_dir():
            return {}
        return {
            path.name: hashlib.sha1(path.read_bytes()).hexdigest()
            for path in self.units_directory.iterdir()
            if path.is_file() and not path.name.startswith(".")
        }

    # -- tasks -------------------------------------------------------------------------------

    async def run_batch(self, kind: type, tasks: list[AgentTask]) -> None:
        if kind is UnloadUnit:
            await self.unload([task.unit for task in tasks])  # type: ignore[union-attr]
        elif kind is LoadUnit:
            await self.load({task.unit: task.hash for task in tasks})  # type: ignore[union-attr]
        elif kind is ReloadSystemd:
            await self.systemd.reload()
        elif kind is StopUnit:
            for task in tasks:
                self.started.pop(task.unit, None)  # type: ignore[union-attr]
            await gather_all(self.systemd.stop_unit(task.unit) for task in tasks)  # type: ignore[union-attr]
        elif kind is StartUnit:
            await gather_all(self.start(task.unit, task.hash) for task in tasks)  # type: ignore[union-attr]

    async def start(self, unit: str, unit_hash: str) -> None:
        await self.systemd.start_unit(unit)
        self.started[unit] = unit_hash  # only once systemd took the job: a refused start is retried

    def unit_path(self, unit: str) -> Path:
        parse_unit_name(unit)  # a name from etcd never leaves units_directory
        return self.units_directory / unit

    async def body(self, unit_hash: str) -> str:
        """A unit body by hash; bodies never change, so each is fetched once."""
        if unit_hash not in self.bodies:
            body = await self.registry.unit_body(unit_hash)
            if body is None:
                raise RegistryError(f"unit file {unit_hash} is missing from etcd")
            self.bodies[unit_hash] = body
        return self.bodies[unit_hash]

    async def load(self, units: dict[str, str]) -> None:
        bodies = dict(
            zip(units, await gather_all(self.body(h) for h in units.values()), strict=True)
        )
        paths = {unit: str(self.unit_path(unit)) for unit in units}
        for unit, body in bodies.items():
            write_atomically(Path(paths[unit]), body)
            self.loaded[unit] = units[unit]
        await self.systemd.link_unit_files(list(paths.values()))
        installable = [paths[unit] for unit, body in bodies.items() if "\n[Install]" in "\n" + body]
        await self.systemd.enable_unit_files(installable)

    async def unload(self, units: list[str]) -> None:
        for unit in units:
            self.started.pop(unit, None)
        await gather_all(self.systemd.stop_unit(unit) for unit in units)
        # Only once they have stopped: a file removed under a running unit would orphan it.
        await self.systemd.disable_unit_files(units)
        await gather_all(self.systemd.reset_failed_unit(unit) for unit in units)
        for unit in units:
            self.unit_path(unit).unlink(missing_ok=True)
            self.loaded.pop(unit, None)
            self.published.pop(unit, None)
            self.dirty.add(unit)  # not loaded any more: the flush deletes its state
        self.flush_needed.set()

    # -- unit states -------------------------------------------------------------------------

    async def publish_states(self) -> None:
        """Publish each state change systemd signals for our units (no polling)."""
        while True:
            try:
                async for unit, state in self.systemd.watch_states(lambda: self.loaded.keys()):
                    self.publish(unit, state)
            except sd.SystemdError as error:
                log.log(self.failure_level(), "unit state publishing interrupted: %s", error)
                await asyncio.sleep(1)

    def publish(self, unit: str, state: sd.UnitState) -> None:
        """Queue a state change; `flush_states` writes a burst of them in a few transactions."""
        if unit not in self.loaded:
            return
        published = UnitState(
            state.load_state, state.active_state, state.sub_state, self.loaded[unit]
        )
        if self.published.get(unit) != published:
            self.changed.set()
            self.published[unit] = published
            self.dirty.add(unit)
            self.flush_needed.set()

    async def flush_states(self) -> None:
        while True:
            await self.flush_needed.wait()
            await asyncio.sleep(FLUSH_SETTLE_SECONDS)
            self.flush_needed.clear()
            units, self.dirty = self.dirty, set()
            lease = self.heart.lease
            try:
                if lease is None:
                    raise RegistryError("not registered")
                puts = {
                    u: self.published[u] for u in units if u in self.loaded and u in self.published
                }
                deletes = [u for u in units if u not in self.loaded]
                await self.registry.write_states(puts, deletes, self.machine_id, lease)
            except RegistryError as error:
                log.log(self.failure_level(), "publishing unit states: %s", error)
                self.dirty |= units
                await asyncio.sleep(1)
                self.flush_needed.set()

    async def publish_changed_states(self) -> None:
        """Catch up after a new lease or a missed signal: publish whatever differs."""
        for unit, state in (await self.systemd.unit_states(list(self.loaded))).items():
            self.publish(unit, state)

    async def republish(self, lease: int) -> None:
        """A new lease carries none of the old state keys."""
        self.published.clear()
        self.planned_at = None
        self.wakeup.set()

    # -- fencing and shutdown ----------------------------------------------------------------

    async def fence(self, deadline: float, reason: str) -> None:
        """Stop every non-global unit before `deadline` (monotonic): this machine is cut off
        and its units are about to be started elsewhere."""
        self.fenced = True
        units = [u for u in self.loaded if not is_global(self.assigned.get(u))]
        log.warning("fencing: %s; stopping %d units: %s", reason, len(units), " ".join(units))
        async with self.lock:
            await gather_all(self.stop_by(unit, deadline) for unit in units)

    async def stop_by(self, unit: str, deadline: float) -> None:
        self.started.pop(unit, None)
        try:
            await self.systemd.stop_unit(unit, timeout=max(0.1, deadline - time.monotonic()))
        except sd.SystemdError as error:
            log.warning("unit %s did not stop in time (%s); killing it", unit, error)
            await self.systemd.kill_unit(unit)

    async def unfence(self) -> None:
        if self.fenced:
            log.info("fencing lifted: etcd answers again")
            self.fenced = False
            self.planned_at = None
            self.wakeup.set()

    async def purge(self) -> None:
        """Graceful shutdown: stop and unload every unit, so they can move at once."""
        async with self.lock:
            units = list(self.unit_files())
            if not units:
                return
            try:
                await self.unload(units)
            except (RegistryError, sd.SystemdError) as error:
                log.warning("unloading units at shutdown: %s", error)
            await self.systemd.reload()


def is_global(assignment: Assignment | None) -> bool:
    return assignment is not None and assignment.is_global


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently, at most MAX_CONCURRENT_CALLS at a time (the system bus refuses more than
    128 pending replies per connection); if any fails, raise the first failure once all ended."""
    limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    async def limited(awaitable: Awaitable[T]) -> T:
        async with limit:
            return await awaitable

    results = await asyncio.gather(*(limited(a) for a in awaitables), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def journal_fields(unit: str | None) -> dict[str, str]:
    """Journal fields naming the unit; OBJECT_SYSTEMD_UNIT puts the line in `journalctl -u`."""
    return {"FLEET_UNIT": unit, "OBJECT_SYSTEMD_UNIT": unit} if unit else {}


def describe(task: AgentTask) -> str:
    return " ".join(f"{name}={value}" for name, value in vars(task).items())


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, path)
