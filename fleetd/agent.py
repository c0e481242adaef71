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
from pathlib import Path

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
        self.lock = asyncio.Lock()  # passes, fencing and shutdown never interleave

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        prefix = self.registry.keys.assigned_to(self.machine_id)
        watch = asyncio.create_task(watch_forever(self.registry, prefix, self.wakeup))
        publisher = asyncio.create_task(self.publish_states())
        try:
            while True:
                await self.heart.registered.wait()
                await self.step()
                await wait_for_wakeup(self.wakeup, self.interval)
        finally:
            watch.cancel()
            publisher.cancel()

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

    async def reconcile(self) -> None:
        self.assigned = await self.registry.assignments(self.machine_id)
        current = await self.local_units()
        for task in plan_machine(self.assigned, current, self.started):
            log.info("agent task=%s %s", type(task).__name__, describe(task))
            await self.do(task)
        await self.publish_changed_states()

    async def local_units(self) -> dict[str, LocalUnit]:
        files = self.unit_files()
        states = await self.systemd.unit_states(list(files))
        return {
            name: LocalUnit(unit_hash, states[name].active_state if name in states else "inactive")
            for name, unit_hash in files.items()
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

    async def do(self, task: AgentTask) -> None:
        match task:
            case LoadUnit(unit, unit_hash, _):
                await self.load(unit, unit_hash)
            case UnloadUnit(unit, _):
                await self.unload(unit)
            case ReloadSystemd():
                await self.systemd.reload()
            case StartUnit(unit, unit_hash, _):
                self.started[unit] = unit_hash
                await self.systemd.start_unit(unit)
            case StopUnit(unit, _):
                self.started.pop(unit, None)
                await self.systemd.stop_unit(unit)

    def unit_path(self, unit: str) -> Path:
        parse_unit_name(unit)  # a name from etcd never leaves units_directory
        return self.units_directory / unit

    async def load(self, unit: str, unit_hash: str) -> None:
        body = await self.registry.unit_body(unit_hash)
        if body is None:
            raise RegistryError(f"unit file {unit_hash} of {unit} is missing from etcd")
        path = self.unit_path(unit)
        write_atomically(path, body)
        await self.systemd.link_unit_files([str(path)])
        if "\n[Install]" in "\n" + body:
            await self.systemd.enable_unit_files([str(path)])

    async def unload(self, unit: str) -> None:
        self.started.pop(unit, None)
        await self.systemd.stop_unit(unit)
        # Only once it has stopped: a file removed under a running unit would orphan it.
        await self.systemd.disable_unit_files([unit])
        await self.systemd.reset_failed_unit(unit)
        self.unit_path(unit).unlink(missing_ok=True)
        self.published.pop(unit, None)
        await self.registry.delete_state(unit, self.machine_id)

    # -- unit states -------------------------------------------------------------------------

    async def publish_states(self) -> None:
        """Publish each state change systemd signals for our units (no polling)."""
        while True:
            try:
                async for unit, state in self.systemd.watch_states(
                    lambda: self.unit_files().keys()
                ):
                    await self.publish(unit, state)
            except (sd.SystemdError, RegistryError) as error:
                log.log(self.failure_level(), "unit state publishing interrupted: %s", error)
                await asyncio.sleep(1)

    async def publish(self, unit: str, state: sd.UnitState) -> None:
        lease = self.heart.lease
        files = self.unit_files()
        if lease is None or unit not in files:
            return
        published = UnitState(state.load_state, state.active_state, state.sub_state, files[unit])
        if self.published.get(unit) != published:
            await self.registry.publish_state(unit, self.machine_id, published, lease)
            self.published[unit] = published

    async def publish_changed_states(self) -> None:
        """Catch up after a new lease or a missed signal: publish whatever differs."""
        files = self.unit_files()
        for unit, state in (await self.systemd.unit_states(list(files))).items():
            await self.publish(unit, state)

    async def republish(self, lease: int) -> None:
        """A new lease carries none of the old state keys."""
        self.published.clear()
        self.wakeup.set()

    # -- fencing and shutdown ----------------------------------------------------------------

    async def fence(self, deadline: float, reason: str) -> None:
        """Stop every non-global unit before `deadline` (monotonic): this machine is cut off
        and its units are about to be started elsewhere."""
        self.fenced = True
        units = [u for u in self.unit_files() if not is_global(self.assigned.get(u))]
        log.warning("fencing: %s; stopping %d units: %s", reason, len(units), " ".join(units))
        async with self.lock:
            await asyncio.gather(*(self.stop_by(unit, deadline) for unit in units))

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
            self.wakeup.set()

    async def purge(self) -> None:
        """Graceful shutdown: stop and unload every unit, so they can move at once."""
        async with self.lock:
            units = list(self.unit_files())
            for unit in units:
                try:
                    await self.unload(unit)
                except (RegistryError, sd.SystemdError) as error:
                    log.warning("unloading %s at shutdown: %s", unit, error)
            if units:
                await self.systemd.reload()


def is_global(assignment: Assignment | None) -> bool:
    return assignment is not None and assignment.is_global


def describe(task: AgentTask) -> str:
    return " ".join(f"{name}={value}" for name, value in vars(task).items())


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, path)
