"""The agent: make this machine's systemd run exactly what the engine assigned to it.

A pass reads the assignments (one ranged read), the unit files in units_directory and their
systemd states (one D-Bus call), plans with the pure `plan_machine` and has the executor
(executor.py) run the tasks in order, a batch per kind. Passes run in the shared reconcile loop
(reconcile.py), woken by a watch on this machine's assignments. Everything is rebuilt from
disk and systemd at start-up, so a killed and restarted fleetd restarts nothing. Fencing
cancels a running pass and stops units by a deadline; shutdown unloads everything.

One bad unit never holds up the others. A unit the agent cannot manage is refused before the
plan (its name fails the validator, its unit file is missing from etcd, or the machine has a
unit file of that name of its own) and logged once; a unit whose file cannot be written, linked
or enabled fails alone and is retried next pass. Every unit file in units_directory counts as
one this agent wrote (hidden names and retired types included), so nothing it wrote leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping
from functools import partial
from itertools import groupby

from . import metrics
from . import systemd as sd
from .events import FENCE, Draft
from .events_decide import UnitTransitions, fence_draft, refusal_drafts
from .executor import MAX_CONCURRENT_CALLS, TaskExecutor, each_unit, journal_fields
from .heart import Heart
from .machine_plan import (
    RUNNING_STATES,
    AgentTask,
    LocalUnit,
    install_aliases,
    machine_has,
    plan_machine,
    refusal,
    units_to_load,
)
from .model import Assignment
from .publisher import StatePublisher
from .reconcile import MONOTONIC, Clock, ReconcileLoop
from .registry import Registry, RegistryError
from .state_dump import AgentView
from .wakeup import watch_forever

log = logging.getLogger(__name__)
FULL_PASS_SECONDS = 60.0  # reconcile even when nothing seems to change, at least this often
WAKE_SETTLE_SECONDS = 0.05  # let a burst of assignments land before a pass
HOLD_AFTER_NEW_LEASE = 2.0  # let the engine see this machine again before acting on old keys


class Agent:
    """The machine's reconcile loop. Its collaborators are built and wired in daemon.py: the
    executor runs the tasks and owns what is loaded and started here, the publisher writes the
    unit states (and runs as a component of its own)."""

    def __init__(
        self,
        registry: Registry,
        systemd: sd.Systemd,
        heart: Heart,
        executor: TaskExecutor,
        publisher: StatePublisher,
        interval: float,
        clock: Clock = MONOTONIC,
        record: Callable[[Draft], None] | None = None,
    ) -> None:
        self.registry = registry
        self.systemd = systemd
        self.heart = heart
        self.executor = executor
        self.publisher = publisher
        self.interval = interval
        self.clock = clock
        self.loop = ReconcileLoop(
            self.step, interval, WAKE_SETTLE_SECONDS, heart.registered.wait, clock
        )
        self.machine_id = heart.machine.id
        self.assigned: dict[str, Assignment] = {}  # as of the last pass
        self.bodies: dict[str, str] = {}  # hash -> unit body (bodies never change)
        self.fenced = False
        self.planned_at: tuple[int, float] | None = None  # (revision, time) of a no-op pass
        self.current_pass: asyncio.Task[None] | None = None
        self.hold_until = 0.0
        self.refused: dict[str, str] = {}  # unit -> why, as logged (once per unit and reason)
        self.last_tasks: list[AgentTask] = []  # the last plan (state_view)
        self.last_pass_error: str | None = None  # "" after a pass that succeeded (/healthz)
        # Events (the recorder's queue, which never waits); units loaded before this fleetd
        # started were started before it too, so their first state seen tells nothing.
        self.record = record or (lambda draft: None)
        self.transitions = UnitTransitions(self.machine_id, set(executor.loaded))

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        prefix = self.registry.keys.assigned_to(self.machine_id)
        await self.loop.run(watch_forever(self.registry, prefix, self.loop.wake))

    async def step(self) -> None:
        if (hold := self.hold_until - self.clock.now()) > 0:
            await self.clock.sleep(hold)
        if self.fenced:
            return
        self.current_pass = asyncio.create_task(self.reconcile())
        try:
            await self.current_pass
            self.last_pass_error = ""
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # fleetd is stopping; a fence only cancels the pass itself
        except (RegistryError, sd.SystemdError, OSError) as error:
            self.last_pass_error = str(error) or type(error).__name__
            log.log(self.heart.failure_level(), "agent pass failed: %s", error)
        except Exception as error:
            self.last_pass_error = repr(error)
            log.exception("agent pass failed unexpectedly; the next pass starts afresh")
        finally:
            self.current_pass = None

    def quiet_since_last_pass(self, revision: int | None) -> bool:
        """Neither etcd nor systemd changed since a pass that found nothing to do."""
        if self.planned_at is None or self.publisher.changed.is_set():
            return False
        if revision != self.planned_at[0]:
            return False
        return self.clock.now() - self.planned_at[1] < FULL_PASS_SECONDS

    async def reconcile(self) -> None:
        revision = await self.registry.revision_of(self.registry.keys.machine(self.machine_id))
        if self.quiet_since_last_pass(revision):
            return
        self.planned_at = None
        self.publisher.changed.clear()
        tasks = await self.plan()
        self.last_tasks = tasks
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
        started = self.clock.now()
        failed: set[str] = set()
        for kind, batch in groupby(tasks, key=type):
            batch = [task for task in batch if getattr(task, "unit", None) not in failed]
            failed |= await self.executor.run_batch(kind, batch, self.bodies)
            metrics.TASKS.labels("agent", kind.__name__).inc(len(batch))
        if tasks:
            metrics.RECONCILE_SECONDS.labels("agent").observe(self.clock.now() - started)
        read_after = self.publisher.signals_heard
        states = await self.systemd.unit_states(list(self.executor.loaded))
        self.publisher.publish_read(states, read_after)
        if not tasks and revision is not None:
            self.planned_at = (revision, self.clock.now())

    async def plan(self) -> list[AgentTask]:
        """Read the assignments, the unit files here and their systemd states; the tasks."""
        self.assigned, unreadable = await self.registry.assignments(self.machine_id)
        loaded = self.executor.rescan()
        to_load = units_to_load(self.assigned, loaded)
        await self.fetch_bodies(set(to_load.values()))
        refused = {
            unit: why
            for unit, unit_hash in to_load.items()
            if (why := refusal(unit, self.bodies.get(unit_hash), unit_hash)) is not None
        }
        # One ListUnitsByNames for the units we loaded and those we are about to load.
        new = [unit for unit in self.assigned if unit not in loaded and unit not in refused]
        states = await self.systemd.unit_states([*loaded, *new])
        refused |= await self.machine_units({u: h for u, h in to_load.items() if u in new}, states)
        self.note_refusals(refused)
        return plan_machine(
            self.assigned,
            self.local_units(states),
            self.executor.started,
            known_to_systemd(states, new),
            refused,
            held=unreadable,
        )

    def local_units(self, states: Mapping[str, sd.UnitState]) -> dict[str, LocalUnit]:
        return {
            name: LocalUnit(unit_hash, states[name].active_state if name in states else "inactive")
            for name, unit_hash in self.executor.loaded.items()
        }

    def state_view(self) -> AgentView:
        """What SIGUSR1 dumps to the journal (state_dump.py)."""
        return AgentView(
            machine=self.machine_id,
            fenced=self.fenced,
            pass_running=self.current_pass is not None,
            assigned=dict(self.assigned),
            loaded=dict(self.executor.loaded),
            started=dict(self.executor.started),
            states=dict(self.publisher.published),
            refused=dict(self.refused),
            last_tasks=tuple(self.last_tasks),
        )

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
        for draft in refusal_drafts(self.machine_id, refused, self.refused):
            self.record(draft)
        for unit, why in refused.items():
            if self.refused.get(unit) != why:
                log.warning("refusing to load %s: %s", unit, why, extra=journal_fields(unit))
        self.refused = dict(refused)

    async def republish(self, lease: int, after_loss: bool) -> None:
        """After registering: publish every state under the lease. After a lease expired under
        this fleetd, first give the engine a moment to see the machine back before trusting
        assignments it may be about to move."""
        self.publisher.forget_everything()
        self.planned_at = None
        if after_loss:
            self.hold_until = self.clock.now() + HOLD_AFTER_NEW_LEASE
        self.loop.wake()

    # -- fencing and shutdown ----------------------------------------------------------------

    async def cancel_pass(self) -> None:
        if self.current_pass is not None:
            self.current_pass.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.current_pass

    def fenceable(self) -> list[str]:
        """The units a fence stops: every loaded one that is not global."""
        return [u for u in self.executor.loaded if not is_global(self.assigned.get(u))]

    def restart_fenced(self) -> list[str]:
        """Something outside the agent (the backstop) may have stopped the fenceable units:
        forget that the agent started them, so the next pass starts those still assigned here
        (it never restarts a unit that stopped on its own). Returns the units forgotten."""
        started = self.executor.started
        forgotten = sorted(unit for unit in self.fenceable() if started.pop(unit, None))
        if forgotten:
            self.planned_at = None
            self.loop.wake()
            why = "fleetd-backstop's deadline passed while fleetd was silent"
            self.record(fence_draft(self.machine_id, True, why, len(forgotten)))
        return forgotten

    def observe_state(self, unit: str, state: sd.UnitState) -> None:
        """A unit's new state as systemd signalled it (via the publisher): maybe an event."""
        draft = self.transitions.seen(unit, state.active_state, state.sub_state)
        if draft is not None:
            self.record(draft)

    def note_verdict(self, fence: bool, reason: str) -> None:
        """A new fencing verdict of the guard (guard.py) while etcd is silent: an event."""
        if not fence:
            self.record(fence_draft(self.machine_id, False, reason))

    async def fence(self, deadline: float, reason: str) -> None:
        """Stop every non-global unit before `deadline` (monotonic): this machine is cut off
        and its units are about to be started elsewhere. Nothing waits for a running pass."""
        again, self.fenced = self.fenced, True
        await self.cancel_pass()
        units = self.fenceable()
        log.warning("fencing: %s; stopping %d units: %s", reason, len(units), " ".join(units))
        if not again:  # the guard tries again until every unit stopped: one event
            self.record(fence_draft(self.machine_id, True, reason, len(units)))
        for unit in units:
            self.executor.started.pop(unit, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.05, deadline - self.clock.now())):
                await each_unit("stop", {u: partial(self.systemd.stop_unit, u) for u in units})
        states = await self.systemd.unit_states(units)
        running = [u for u, s in states.items() if s.active_state in RUNNING_STATES]
        if running:
            log.warning("fencing: killing units that did not stop in time: %s", " ".join(running))
            await each_unit("kill", {u: partial(self.systemd.kill_unit, u) for u in running})

    async def unfence(self) -> None:
        if self.fenced:
            log.info("fencing lifted: etcd answers again")
            lifted = "lifted: etcd answers again"
            self.record(Draft(FENCE, None, self.machine_id, None, None, lifted))
            self.fenced = False
            self.planned_at = None
            self.loop.wake()

    async def still_running(self, units: Collection[str]) -> list[str]:
        """Those of `units` systemd runs, or is starting or stopping (a failed query counts
        every one as running: the safe side)."""
        if not units:
            return []
        try:
            states = await self.systemd.unit_states(list(units))
        except sd.SystemdError:
            return sorted(units)
        return sorted(u for u, s in states.items() if s.active_state in RUNNING_STATES)

    async def purge(self) -> None:
        """Graceful shutdown: stop and unload every unit, so they can move at once."""
        await self.cancel_pass()
        units = list(self.executor.unit_files())
        if not units:
            return
        self.executor.rescan()
        try:
            await self.executor.unload(units)
            await self.systemd.reload()
        except (RegistryError, sd.SystemdError) as error:
            log.warning("unloading units at shutdown: %s", error)
        with contextlib.suppress(RegistryError):
            await self.publisher.flush(set(units))


def is_global(assignment: Assignment | None) -> bool:
    return assignment is not None and assignment.is_global


def describe(task: AgentTask) -> str:
    return " ".join(f"{name}={value}" for name, value in vars(task).items())


def known_to_systemd(states: Mapping[str, sd.UnitState], new: list[str]) -> set[str]:
    """Of the units about to be loaded here, those systemd still has in memory from a file
    since removed (one a machine ships itself is refused before: `machine_units`)."""
    return {name for name in new if name in states and states[name].load_state != "not-found"}
