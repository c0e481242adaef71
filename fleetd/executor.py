"""The agent's task executor: runs a batch of agent tasks against systemd and units_directory.

It owns what this machine holds for fleet: the unit files written into units_directory
(`loaded`, rebuilt from disk, so a restarted fleetd restarts nothing) and the units it started
(`started`). Each kind of task runs as one batch: one D-Bus call where systemd takes lists,
concurrent calls where it does not; a unit whose task fails fails alone and is reported, so that
the pass goes on without it and the next pass retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path

from flotilla.files import write_atomically

from . import systemd as sd
from .machine_plan import AgentTask, LoadUnit, ReloadSystemd, StartUnit, StopUnit, UnloadUnit
from .unitname import looks_like_unit_file

log = logging.getLogger(__name__)
MAX_CONCURRENT_CALLS = 32  # the system bus allows 128 pending replies per connection


class TaskExecutor:
    def __init__(self, systemd: sd.Systemd, units_directory: Path) -> None:
        self.systemd = systemd
        self.units_directory = units_directory
        self.loaded = self.unit_files()  # unit -> hash of the file this agent wrote
        self.started: dict[str, str] = {}  # unit -> hash this agent started
        self.on_unloaded: list[Callable[[str], None]] = []  # called with each unit removed

    def rescan(self) -> dict[str, str]:
        """Read units_directory afresh: what is loaded is what is on disk."""
        self.loaded = self.unit_files()
        return self.loaded

    def unit_files(self) -> dict[str, str]:
        """Units loaded by this agent: the files in units_directory and the hash of each.

        Every file named like a unit counts, a hidden one or a retired type too (an older agent
        may have written it), so that it is unloaded when no longer assigned; only the agent's
        own partial files (see flotilla.files.write_atomically) are not units."""
        if not self.units_directory.is_dir():
            return {}
        return {
            path.name: hashlib.sha1(path.read_bytes()).hexdigest()
            for path in self.units_directory.iterdir()
            if looks_like_unit_file(path.name) and path.is_file()
        }

    async def run_batch(
        self, kind: type, tasks: list[AgentTask], bodies: Mapping[str, str]
    ) -> set[str]:
        """Run one kind of task (`bodies`: hash -> unit file, for the units to load); the
        units whose task failed (the pass goes on without them)."""
        units = [task.unit for task in tasks if not isinstance(task, ReloadSystemd)]
        if kind is UnloadUnit:
            return await self.unload(units)
        if kind is LoadUnit:
            hashes = {task.unit: task.hash for task in tasks}  # type: ignore[union-attr]
            return await self.load(hashes, bodies)
        if kind is ReloadSystemd:
            await self.systemd.reload()
        elif kind is StopUnit:
            for unit in units:
                self.started.pop(unit, None)
            stops = {u: partial(self.systemd.stop_unit, u) for u in units}
            return set(await each_unit("stop", stops))
        elif kind is StartUnit:
            hashes = {task.unit: task.hash for task in tasks}  # type: ignore[union-attr]
            starts = {u: partial(self.start, u, hashes[u]) for u in units}
            return set(await each_unit("start", starts))
        return set()

    async def start(self, unit: str, unit_hash: str) -> None:
        await self.systemd.start_unit(unit)
        self.started[unit] = unit_hash  # only once systemd took the job: a refused start is retried

    def unit_path(self, unit: str) -> Path:
        # Names come checked (parse_unit_name, before a load) or from this very directory.
        if "/" in unit or unit in (".", ".."):
            raise ValueError(f"{unit!r} is not a file name")
        return self.units_directory / unit

    async def load(self, units: dict[str, str], bodies: Mapping[str, str]) -> set[str]:
        """Write, link and enable each unit's file (bodies fetched, names checked: see
        `machine_plan.refusal`); the units that failed, whose files are gone again."""
        written: dict[str, str] = {}
        for unit, unit_hash in units.items():
            try:
                write_atomically(self.unit_path(unit), bodies[unit_hash])
            except OSError as error:
                log.warning("writing %s failed: %s", unit, error, extra=journal_fields(unit))
                continue
            written[unit] = str(self.unit_path(unit))
            self.loaded[unit] = unit_hash
        not_linked = await self.batch_or_each("link", written, self.systemd.link_unit_files)
        installable = {
            unit: path
            for unit, path in written.items()
            if unit not in not_linked and "\n[Install]" in "\n" + bodies[units[unit]]
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
        failed = await each_unit("stop", {u: partial(self.systemd.stop_unit, u) for u in units})
        # Only units that stopped: a file removed under a running unit would orphan it.
        stopped = {unit: unit for unit in units if unit not in failed}
        not_disabled = await self.batch_or_each("disable", stopped, self.systemd.disable_unit_files)
        disabled = [unit for unit in stopped if unit not in not_disabled]
        await each_unit("reset", {u: partial(self.systemd.reset_failed_unit, u) for u in disabled})
        removed = []
        for unit in disabled:
            try:
                self.unit_path(unit).unlink(missing_ok=True)
            except OSError as error:
                log.warning("removing %s failed: %s", unit, error, extra=journal_fields(unit))
                continue
            removed.append(unit)
            self.loaded.pop(unit, None)
            for callback in self.on_unloaded:
                callback(unit)
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
        calls = {unit: partial(call, [argument]) for unit, argument in arguments.items()}
        return set(await each_unit(action, calls))


async def each_unit(
    action: str, calls: Mapping[str, Callable[[], Awaitable[object]]]
) -> dict[str, BaseException]:
    """Run one call per unit concurrently (bounded); log and return the failures by unit.
    Calls are made only once a slot is free, so a cancelled batch (fencing's deadline) leaves
    no call made and never awaited."""
    limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    async def limited(call: Callable[[], Awaitable[object]]) -> object:
        async with limit:
            return await call()

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
