"""A simulated systemd for hollow machines: a measuring instrument, not a systemd.

Hollow machines (bench/hollow_machine.py) run fleetd's real components against a real etcd,
many in one process; only PID 1 is replaced, by this in-memory unit manager. It offers the
interface `fleetd/systemd.py`'s `Systemd` offers the agent, the executor, the publisher and the
fence guard, and walks units through systemd's states for a service that starts and stops:

    linked file -> loaded/inactive/dead -> start -> activating/start --start latency-->
    active/running -> stop -> deactivating/stop --stop latency--> inactive/dead
    kill -> failed/failed (reset_failed -> inactive/dead)

It knows nothing of dependencies, [Install] targets, ExecStart= or restarts, so it must never
stand in for systemd in a test that claims how systemd behaves; the correctness tests use real
systemd machines (tests/cluster). `crash` makes every unit vanish at once, as a machine that
loses power does.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType

from fleetd.systemd import NO_SUCH_UNIT, SystemdError, UnitState

DEAD = UnitState("loaded", "inactive", "dead")
NOT_FOUND = UnitState("not-found", "inactive", "dead")
ACTIVATING = UnitState("loaded", "activating", "start")
ACTIVE = UnitState("loaded", "active", "running")
DEACTIVATING = UnitState("loaded", "deactivating", "stop")
FAILED = UnitState("loaded", "failed", "failed")
RELOADING = ""  # the change that tells watchers to read every unit again
Change = tuple[str, UnitState]


@dataclass(frozen=True)
class Latencies:
    """How long the simulated transitions take, in seconds."""

    start: float = 0.05
    stop: float = 0.05
    reload: float = 0.01


class SimulatedSystemd:
    """One hollow machine's unit manager (see the module docstring)."""

    def __init__(self, latencies: Latencies = Latencies()) -> None:
        self.latencies = latencies
        self.linked: set[str] = set()  # unit names with a file systemd would find
        self.states: dict[str, UnitState] = {}  # units in memory that are not plain dead
        self.pending: dict[str, asyncio.TimerHandle] = {}  # unit -> its job's completion
        self.stopped: dict[str, asyncio.Event] = {}  # unit -> set when its stop job is done
        self.watchers: set[asyncio.Queue[Change | None]] = set()
        self.closed = False

    # --- the connection ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return not self.closed

    async def close(self) -> None:
        self.closed = True
        for queue in self.watchers:
            queue.put_nowait(None)

    async def __aenter__(self) -> SimulatedSystemd:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def crash(self) -> None:
        """The machine lost power: every unit and every link is gone, no job completes."""
        for handle in self.pending.values():
            handle.cancel()
        self.pending.clear()
        self.states.clear()
        self.linked.clear()
        self.closed = True
        for queue in self.watchers:
            queue.put_nowait(None)

    # --- unit files -------------------------------------------------------------------------

    async def link_unit_files(self, paths: Sequence[str]) -> None:
        self._check_connected("LinkUnitFiles")
        self.linked.update(posixpath.basename(path) for path in paths)

    async def enable_unit_files(self, paths_or_names: Sequence[str]) -> None:
        self._check_connected("EnableUnitFiles")  # no [Install] targets in the simulation

    async def disable_unit_files(self, names: Sequence[str]) -> None:
        self._check_connected("DisableUnitFiles")
        self.linked.difference_update(names)

    async def unit_file_state(self, name: str) -> str | None:
        self._check_connected("GetUnitFileState")
        return "linked-runtime" if name in self.linked else None

    async def reload(self) -> None:
        self._check_connected("Reload")
        await asyncio.sleep(self.latencies.reload)
        self._notify(RELOADING, DEAD)

    # --- units ------------------------------------------------------------------------------

    async def start_unit(self, name: str) -> None:
        self._check_connected("StartUnit")
        if name not in self.linked:
            raise SystemdError(f"StartUnit({name!r}) failed: Unit {name} not found.", NO_SUCH_UNIT)
        if self.state(name).active_state in ("active", "activating"):
            return
        self._begin(name, ACTIVATING, self.latencies.start, ACTIVE)

    async def stop_unit(self, name: str, timeout: float = 90.0) -> None:
        self._check_connected("StopUnit")
        if self.state(name).active_state not in ("active", "activating", "deactivating"):
            return
        if self.state(name) is not DEACTIVATING:
            self._begin(name, DEACTIVATING, self.latencies.stop, DEAD)
            self.stopped[name] = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self.stopped[name].wait()
        except TimeoutError as error:
            raise SystemdError(f"stopping {name}: job did not finish within {timeout} s") from error

    async def kill_unit(self, name: str, signal: int = 9) -> None:
        self._check_connected("KillUnit")
        if self.state(name).active_state in ("active", "activating", "deactivating"):
            self._settle(name, FAILED)

    async def reset_failed_unit(self, name: str) -> None:
        self._check_connected("ResetFailedUnit")
        if self.state(name) == FAILED:
            self._settle(name, DEAD)

    def state(self, name: str) -> UnitState:
        found = self.states.get(name)
        if found is not None:
            return found
        return DEAD if name in self.linked else NOT_FOUND

    async def unit_states(self, names: Collection[str]) -> dict[str, UnitState]:
        self._check_connected("ListUnitsByNames")
        return {name: self.state(name) for name in names}

    async def watch_states(
        self, names: Callable[[], Collection[str]]
    ) -> AsyncIterator[tuple[str, UnitState]]:
        """As `Systemd.watch_states`: the current state of each unit in `names()`, then every
        change, never the same state of a unit twice in a row."""
        self._check_connected("Subscribe")
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self.watchers.add(queue)
        given: dict[str, UnitState] = {}
        try:
            changes = [(name, self.state(name)) for name in names()]
            while True:
                watched = names()
                for name, state in changes:
                    if name in watched and given.get(name) != state:
                        given[name] = state
                        yield name, state
                changes = await self._next_changes(queue, names)
        finally:
            self.watchers.discard(queue)

    # --- transitions ------------------------------------------------------------------------

    def _begin(self, name: str, during: UnitState, seconds: float, after: UnitState) -> None:
        """A job: `during` now, `after` once `seconds` have passed (replacing any job)."""
        self._settle(name, during)
        loop = asyncio.get_running_loop()
        self.pending[name] = loop.call_later(seconds, self._settle, name, after)

    def _settle(self, name: str, state: UnitState) -> None:
        if (handle := self.pending.pop(name, None)) is not None:
            handle.cancel()
        if state == DEAD:
            self.states.pop(name, None)
        else:
            self.states[name] = state
        if state is not DEACTIVATING and (done := self.stopped.pop(name, None)) is not None:
            done.set()
        self._notify(name, state)

    def _notify(self, name: str, state: UnitState) -> None:
        # Each change carries its state, as systemd's PropertiesChanged does: a watcher that
        # reads later still sees every transition.
        for queue in self.watchers:
            queue.put_nowait((name, state))

    async def _next_changes(
        self, queue: asyncio.Queue[Change | None], names: Callable[[], Collection[str]]
    ) -> list[Change]:
        """The next change, or every watched unit's state after a reload."""
        change = await queue.get()
        if change is None:
            raise SystemdError("the simulated systemd is gone (its machine crashed or stopped)")
        if change[0] == RELOADING:
            return [(name, self.state(name)) for name in names()]
        return [change]

    def _check_connected(self, what: str) -> None:
        if self.closed:
            raise SystemdError(f"{what}: not connected to the simulated systemd")
