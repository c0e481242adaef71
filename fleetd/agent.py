"""The agent: make this machine's systemd run exactly what the engine assigned to it.

A pass reads the assignments (one ranged read), the unit files in units_directory and their
systemd states (one D-Bus call), plans with the pure `plan_machine` and runs the tasks in
order, a batch per kind. Everything is rebuilt from disk and systemd at start-up, so a killed
and restarted fleetd restarts nothing. Fencing cancels a running pass and stops units by a
deadline; shutdown unloads everything.

One bad unit never holds up the others. A unit the agent cannot manage is refused before the
plan (its name fails the validator, its unit file is missing from etcd, or the machine has a
unit file of that name of its own) and logged once; a unit whose file cannot be written, linked
or enabled fails alone and is retried next pass. Every unit file in units_directory counts as
one this agent wrote (hidden names and retired types included), so nothing it wrote leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from itertools import groupby
from pathlib import Path

from flotilla.files import write_atomically

from . import metrics
from . import systemd as sd
from .heart import Heart
from .machine_plan import (
    RUNNING_STATES,
    AgentTask,
    LoadUnit,
    LocalUnit,
    ReloadSystemd,
    StartUnit,
    StopUnit,
    UnloadUnit,
    install_aliases,
    machine_has,
    plan_machine,
    refusal,
    units_to_load,
)
from .model import Assignment
from .publisher import StatePublisher
from .registry import Registry, RegistryError
from .unitname import looks_like_unit_file
from .wakeup import wait_for_wakeup, watch_forever

log = logging.getLogger(__name__)
FULL_PASS_SECONDS = 60.0  # reconcile even when nothing seems to change, at least this often
MAX_CONCURRENT_CALLS = 32  # the system bus allows 128 pending replies per connection
WAKE_SETTLE_SECONDS = 0.05  # let a burst of assignments land before a pass
HOLD_AFTER_NEW_LEASE = 2.0  # let the engine see this machine again before acting on old keys


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
        self.loaded = self.unit_files()  # unit -> hash of the file this agent wrote
        self.bodies: dict[str, str] = {}  # hash -> unit body (bodies never change)
        self.publisher = StatePublisher(registry, systemd, heart, lambda: self.loaded)
        self.fenced = False
        self.planned_at: tuple[int, float] | None = None  # (revision, time) of a no-op pass
        self.current_pass: asyncio.Task[None] | None = None
        self.hold_until = 0.0
        self.refused: dict[str, str] = {}  # unit -> why, as logged (once per unit and reason)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        prefix = self.registry.keys.assigned_to(self.machine_id)
        watch = asyncio.create_task(watch_forever(self.registry, prefix, self.wakeup))
        publisher = asyncio.create_task(self.publisher.run())
        try:
            while True:
                if publisher.done():
                    publisher.result()  # the systemd connection is gone: let fleetd restart
                await self.heart.registered.wait()
                await self.step()
                await wait_for_wakeup(self.wakeup, self.interval)
                await asyncio.sleep(WAKE_SETTLE_SECONDS)
        finally:
            watch.cancel()
            publisher.cancel()

    def failure_level(self) -> int:
        """While the heart already reports an etcd outage, a failed pass is no news."""
        return logging.DEBUG if self.heart.failing_since is not None else logging.WARNING

    async def step(self) -> None:
        if (hold := self.hold_until - time.monotonic()) > 0:
            await asyncio.sleep(hold)
        if self.fenced:
            return
        self.current_pass = asyncio.create_task(self.reconcile())
        try:
            await self.current_pass
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # fleetd is stopping; a fence only cancels the pass itself
        except (RegistryError, sd.SystemdError, OSError) as error:
            log.log(self.failure_level(), "agent pass failed: %s", error)
        except Exception:
            log.exception("agent pass failed unexpectedly; the next pass starts afresh")
        finally:
            self.current_pass = None

    def quiet_since_last_pass(self, revision: int | None) -> bool:
        """Neither etcd nor systemd changed since a pass that found nothing to do."""
        if self.planned_at is None or self.publisher.changed.is_set():
            return False
        if revision != self.planned_at[0]:
            return False
        return time.monotonic() - self.planned_at[1] < FULL_PASS_SECONDS

    async def reconcile(self) -> None:
        revision = await self.registry.revision_of(self.registry.keys.machine(self.machine_id))
        if self.quiet_since_last_pass(revision):
            return
        self.planned_at = None
        self.publisher.changed.clear()
        tasks = await self.plan()
        for task in tasks:
            log.info(
                "agent task=%s %s",
                type(task).__name__,
                describe(task),
                extra=journal_fields(getattr(task, "unit", None)),
            )
        # The plan is ordered by kind; each kind runs as one batch (one D-Bus call where systemd
        # takes lists, concurrent calls where it does not). A unit that fails is logged and
        # retried next pass without holding up the others (a unit that failed to load is not
        # started); a failed reload ends the pass.
        started = time.monotonic()
        failed: set[str] = set()
        for kind, batch in groupby(tasks, key=type):
            batch = [task for task in batch if getattr(task, "unit", None) not in failed]
            failed |= await self.run_batch(kind, batch)
            metrics.TASKS.labels("agent", kind.__name__).inc(len(batch))
        if tasks:
            metrics.RECONCILE_SECONDS.labels("agent").observe(time.monotonic() - started)
        self.publisher.publish_all(await self.systemd.unit_states(list(self.loaded)))
        if not tasks and revision is not None:
            self.planned_at = (revision, time.monotonic())

    async def plan(self) -> list[AgentTask]:
        """Read the assignments, the unit files here and their systemd states; the tasks."""
        self.assigned = await self.registry.assignments(self.machine_id)
        self.loaded = self.unit_files()
        to_load = units_to_load(self.assigned, self.loaded)
        await self.fetch_bodies(set(to_load.values()))
        refused = {
            unit: why
            for unit, unit_hash in to_load.items()
            if (why := refusal(unit, self.bodies.get(unit_hash), unit_hash)) is not None
        }
        # One ListUnitsByNames for the units we loaded and those we are about to load.
        new = [unit for unit in self.assigned if unit not in self.loaded and unit not in refused]
        states = await self.systemd.unit_states([*self.loaded, *new])
        refused |= await self.machine_units({u: h for u, h in to_load.items() if u in new}, states)
        self.note_refusals(refused)
        return plan_machine(
            self.assigned,
            self.local_units(states),
            self.started,
            known_to_systemd(states, new),
            refused,
        )

    def local_units(self, states: Mapping[str, sd.UnitState]) -> dict[str, LocalUnit]:
        return {
            name: LocalUnit(unit_hash, states[name].active_state if name in states else "inactive")
            for name, unit_hash in self.loaded.items()
        }

    def unit_files(self) -> dict[str, str]:
        """Units loaded by this agent: the files in units_directory and the hash of each.

        Every file named like a unit counts, a hidden one or a retired type too (an older agent
        may have written it), so that it is unloaded when no longer assigned; only the agent's
        own partial files (see write_atomically) are not units."""
        if not self.units_directory.is_dir():
            return {}
        return {
            path.name: hashlib.sha1(path.read_bytes()).hexdigest()
            for path in self.units_directory.iterdir()
            if looks_like_unit_file(path.name) and path.is_file()
        }

    # -- refusals: units this machine will not load --------------------------------------------

    async def fetch_bodies(self, hashes: Collection[str]) -> None:
        """Read the unit files not cached yet, in one go; a missing one stays missing."""
        missing = [unit_hash for unit_hash in hashes if unit_hash not in self.bodies]
        if missing:
            self.bodies.update(await self.registry.unit_bodies(missing))

    async def machine_units(
        self, new: Mapping[str, str], states: Mapping[str, sd.UnitState]
    ) -> dict[str, str]:
        """Of the units about to be loaded for the first time, those the machine has a unit
        file of its own for, under their name or an alias: linking ours would replace it.
        systemd is asked only about names it already knows (or answers for under another name:
        an alias of one of its units) and about aliases, so a plain new unit costs nothing."""
        asked: dict[str, list[str]] = {}
        for unit, unit_hash in new.items():
            state = states.get(unit)
            known = state is None or state.load_state != "not-found"
            asked[unit] = ([unit] if known else []) + install_aliases(self.bodies[unit_hash], unit)
        names = sorted({name for names in asked.values() for name in names})
        limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        found = await asyncio.gather(*(self.machine_unit(name, limit) for name in names))
        why = {name: reason for name, reason in zip(names, found, strict=True) if reason}
        return {
            unit: why[refused[0]]
            for unit, names in asked.items()
            if (refused := [name for name in names if name in why])
        }

    async def machine_unit(self, name: str, limit: asyncio.Semaphore) -> str | None:
        """Why no fleet unit may take `name` here (None: nothing on the machine has it)."""
        async with limit:
            try:
                state = await self.systemd.unit_file_state(name)
            except sd.SystemdError as error:
                if not self.systemd.connected:
                    raise
                return f"systemd refuses the name {name}: {error}"
        return None if state is None else machine_has(name, state)

    def note_refusals(self, refused: Mapping[str, str]) -> None:
        for unit, why in refused.items():
            if self.refused.get(unit) != why:
                log.warning("refusing to load %s: %s", unit, why, extra=journal_fields(unit))
        self.refused = dict(refused)

    # -- tasks -------------------------------------------------------------------------------

    async def run_batch(self, kind: type, tasks: list[AgentTask]) -> set[str]:
        """Run one kind of task; the units whose task failed (the pass goes on without them)."""
        units = [task.unit for task in tasks if not isinstance(task, ReloadSystemd)]
        if kind is UnloadUnit:
            return await self.unload(units)
        if kind is LoadUnit:
            return await self.load({task.unit: task.hash for task in tasks})  # type: ignore[union-attr]
        if kind is ReloadSystemd:
            await self.systemd.reload()
        elif kind is StopUnit:
            for unit in units:
                self.started.pop(unit, None)
            return set(await each_unit("stop", {u: self.systemd.stop_unit(u) for u in units}))
        elif kind is StartUnit:
            hashes = {task.unit: task.hash for task in tasks}  # type: ignore[union-attr]
            return set(await each_unit("start", {u: self.start(u, hashes[u]) for u in units}))
        return set()

    async def start(self, unit: str, unit_hash: str) -> None:
        await self.systemd.start_unit(unit)
        self.started[unit] = unit_hash  # only once systemd took the job: a refused start is retried

    def unit_path(self, unit: str) -> Path:
        # Names come checked (parse_unit_name, before a load) or from this very directory.
        if "/" in unit or unit in (".", ".."):
            raise ValueError(f"{unit!r} is not a file name")
        return self.units_directory / unit

    async def load(self, units: dict[str, str]) -> set[str]:
        """Write, link and enable each unit's file (bodies fetched, names checked: see
        `refusal`); the units that failed, whose files are gone again."""
        written: dict[str, str] = {}
        for unit, unit_hash in units.items():
            try:
                write_atomically(self.unit_path(unit), self.bodies[unit_hash])
            except OSError as error:
                log.warning("writing %s failed: %s", unit, error, extra=journal_fields(unit))
                continue
            written[unit] = str(self.unit_path(unit))
            self.loaded[unit] = unit_hash
        not_linked = await self.batch_or_each("link", written, self.systemd.link_unit_files)
        installable = {
            unit: path
            for unit, path in written.items()
            if unit not in not_linked and "\n[Install]" in "\n" + self.bodies[units[unit]]
        }
        not_enabled = await self.batch_or_each(
            "enable", installable, self.systemd.enable_unit_files
        )
        # A file on disk that systemd never linked would look loaded to the next pass.
        undone = not_linked | not_enabled
        if not_enabled:
            await self.batch_or_each(
                "disable", {u: u for u in not_enabled}, self.systemd.disable_unit_files
            )
        for unit in undone:
            with contextlib.suppress(OSError):
                self.unit_path(unit).unlink(missing_ok=True)
            self.loaded.pop(unit, None)
        return (set(units) - set(written)) | undone

    async def unload(self, units: list[str]) -> set[str]:
        """Stop, disable and remove each unit; the units that failed, which keep their file."""
        for unit in units:
            self.started.pop(unit, None)
        failed = await each_unit("stop", {u: self.systemd.stop_unit(u) for u in units})
        # Only units that stopped: a file removed under a running unit would orphan it.
        stopped = {unit: unit for unit in units if unit not in failed}
        not_disabled = await self.batch_or_each("disable", stopped, self.systemd.disable_unit_files)
        disabled = [unit for unit in stopped if unit not in not_disabled]
        await each_unit("reset", {u: self.systemd.reset_failed_unit(u) for u in disabled})
        removed = []
        for unit in disabled:
            try:
                self.unit_path(unit).unlink(missing_ok=True)
            except OSError as error:
                log.warning("removing %s failed: %s", unit, error, extra=journal_fields(unit))
                continue
            removed.append(unit)
            self.loaded.pop(unit, None)
            self.publisher.forget(unit)
        return set(units) - set(removed)

    async def batch_or_each(
        self,
        action: str,
        arguments: Mapping[str, str],
        call: Callable[[list[str]], Awaitable[None]],
    ) -> set[str]:
        """One D-Bus call for every unit's argument; if systemd refuses it, one call per unit, so
        that a bad unit fails alone. The units that failed (logged)."""
        if not arguments:
            return set()
        try:
            await call(list(arguments.values()))
            return set()
        except sd.SystemdError as error:
            if not self.systemd.connected:
                raise
            if len(arguments) == 1:
                unit = next(iter(arguments))
                log.warning("%s %s failed: %s", action, unit, error, extra=journal_fields(unit))
                return {unit}
        calls = {unit: call([argument]) for unit, argument in arguments.items()}
        return set(await each_unit(action, calls))

    async def republish(self, lease: int, after_loss: bool) -> None:
        """After registering: publish every state under the lease. After a lease expired under
        this fleetd, first give the engine a moment to see the machine back before trusting
        assignments it may be about to move."""
        self.publisher.forget_everything()
        self.planned_at = None
        if after_loss:
            self.hold_until = time.monotonic() + HOLD_AFTER_NEW_LEASE
        self.wakeup.set()

    # -- fencing and shutdown ----------------------------------------------------------------

    async def cancel_pass(self) -> None:
        if self.current_pass is not None:
            self.current_pass.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.current_pass

    def fenceable(self) -> list[str]:
        """The units a fence stops: every loaded one that is not global."""
        return [u for u in self.loaded if not is_global(self.assigned.get(u))]

    def restart_fenced(self) -> list[str]:
        """Something outside the agent (the backstop) may have stopped the fenceable units:
        forget that the agent started them, so the next pass starts those still assigned here
        (it never restarts a unit that stopped on its own). Returns the units forgotten."""
        forgotten = sorted(unit for unit in self.fenceable() if self.started.pop(unit, None))
        if forgotten:
            self.planned_at = None
            self.wakeup.set()
        return forgotten

    async def fence(self, deadline: float, reason: str) -> None:
        """Stop every non-global unit before `deadline` (monotonic): this machine is cut off
        and its units are about to be started elsewhere. Nothing waits for a running pass."""
        self.fenced = True
        await self.cancel_pass()
        units = self.fenceable()
        log.warning("fencing: %s; stopping %d units: %s", reason, len(units), " ".join(units))
        for unit in units:
            self.started.pop(unit, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.05, deadline - time.monotonic())):
                await each_unit("stop", {u: self.systemd.stop_unit(u) for u in units})
        states = await self.systemd.unit_states(units)
        running = [u for u, s in states.items() if s.active_state in RUNNING_STATES]
        if running:
            log.warning("fencing: killing units that did not stop in time: %s", " ".join(running))
            await each_unit("kill", {u: self.systemd.kill_unit(u) for u in running})

    async def unfence(self) -> None:
        if self.fenced:
            log.info("fencing lifted: etcd answers again")
            self.fenced = False
            self.planned_at = None
            self.wakeup.set()

    async def purge(self) -> None:
        """Graceful shutdown: stop and unload every unit, so they can move at once."""
        await self.cancel_pass()
        units = list(self.unit_files())
        if not units:
            return
        self.loaded = self.unit_files()
        try:
            await self.unload(units)
            await self.systemd.reload()
        except (RegistryError, sd.SystemdError) as error:
            log.warning("unloading units at shutdown: %s", error)
        with contextlib.suppress(RegistryError):
            await self.publisher.flush(set(units))


def is_global(assignment: Assignment | None) -> bool:
    return assignment is not None and assignment.is_global


async def each_unit(
    action: str, calls: Mapping[str, Awaitable[object]]
) -> dict[str, BaseException]:
    """Run one call per unit concurrently (bounded); log and return the failures by unit."""
    limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    async def limited(call: Awaitable[object]) -> object:
        async with limit:
            return await call

    results = await asyncio.gather(*(limited(c) for c in calls.values()), return_exceptions=True)
    failed = {u: r for u, r in zip(calls, results, strict=True) if isinstance(r, BaseException)}
    for unit, error in failed.items():
        if isinstance(error, asyncio.CancelledError):
            raise error
        log.warning("%s %s failed: %s", action, unit, error, extra=journal_fields(unit))
    return failed


def journal_fields(unit: str | None) -> dict[str, str]:
    """Journal fields naming the unit; OBJECT_SYSTEMD_UNIT puts the line in `journalctl -u`."""
    return {"FLEET_UNIT": unit, "OBJECT_SYSTEMD_UNIT": unit} if unit else {}


def describe(task: AgentTask) -> str:
    return " ".join(f"{name}={value}" for name, value in vars(task).items())


def known_to_systemd(states: Mapping[str, sd.UnitState], new: list[str]) -> set[str]:
    """Of the units about to be loaded here, those systemd still has in memory from a file
    since removed (one a machine ships itself is refused before: `machine_units`)."""
    return {name for name in new if name in states and states[name].load_state != "not-found"}
