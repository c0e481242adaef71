"""What fleetctl does, over the registry (the etcd driver): submit, load, start, stop, unload,
destroy, and read back units, their states and machines. Tests drive fleetd through this.

Bad input is refused before anything is written: every unit is parsed and checked first, and
creating several units is all-or-nothing. The checks are the agent's (machine_plan.refusal):
a name the agent could not manage, or one that would shadow a unit the machines ship (under
its own name or an [Install] Alias), is refused here, so it is never half-accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .cluster_plan import unmovable_units
from .drain_state import SCHEDULABLE, drain_states, refusal_message
from .machine_plan import install_aliases
from .model import (
    ClusterSnapshot,
    DesiredState,
    DrainOutcome,
    JobRecord,
    Machine,
    UnitState,
    UnitStatus,
)
from .unitfile import Requirements, UnitFile, parse_unit_file, requirements
from .unitname import UnitNameError, check_unit_name, parse_unit_name

if TYPE_CHECKING:  # fleetctl's API driver uses this module's checks without loading aetcd
    from .registry import Registry


class ClientError(Exception):
    """A request that cannot be carried out; the message names the unit."""


class UnknownMachine(ClientError):
    """No registered machine has this id."""


class DrainRefused(ClientError):
    """A drain would leave units no other machine can take (and was not forced)."""


def check_unit(name: str, text: str) -> UnitFile:
    """Parse and validate a unit as the engine and the agent will; raise ClientError naming
    what is wrong."""
    try:
        unit_name = parse_unit_name(name)
        unit = parse_unit_file(text, name)
        requirements(unit, unit_name)
    except ValueError as error:
        raise ClientError(str(error)) from error
    for alias in install_aliases(unit.serialize(), name):
        try:
            check_unit_name(alias)
        except UnitNameError as error:
            raise ClientError(f"{name}: [Install] Alias={alias}: {error}") from error
    return unit


class FleetClient:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def submit(self, files: Mapping[str, str], replace: bool = False) -> None:
        """Store units (desired state inactive unless they exist already)."""
        await self._create(files, DesiredState.INACTIVE, replace)

    async def load(self, names: Sequence[str], files: Mapping[str, str] | None = None) -> None:
        await self._set(names, DesiredState.LOADED, files or {})

    async def start(self, names: Sequence[str], files: Mapping[str, str] | None = None) -> None:
        await self._set(names, DesiredState.LAUNCHED, files or {})

    async def stop(self, names: Sequence[str]) -> None:
        await self._set(names, DesiredState.LOADED, {})

    async def unload(self, names: Sequence[str]) -> None:
        await self._set(names, DesiredState.INACTIVE, {})

    async def destroy(self, names: Sequence[str]) -> None:
        jobs = await self.registry.jobs(names)
        missing = [name for name in names if name not in jobs]
        if missing:
            raise ClientError(f"unit {missing[0]} does not exist")
        await self.registry.destroy_jobs(names)

    async def _create(self, files: Mapping[str, str], desired: DesiredState, replace: bool) -> None:
        checked = {name: check_unit(name, text) for name, text in files.items()}
        records = [
            (JobRecord(name, unit.hash, desired), unit.serialize())
            for name, unit in checked.items()
        ]
        await self.registry.create_jobs(records, replace)

    async def create(
        self, names: Sequence[str], files: Mapping[str, str], desired: DesiredState
    ) -> list[str]:
        """Create the named units the registry lacks (from `files`, or instances from their
        template), all or nothing; the names created."""
        templates = [template for name in names if (template := template_of(name))]
        jobs = await self.registry.jobs([*names, *templates])
        to_create = await self._lazy_units(names, jobs, files)
        await self._create(to_create, desired, replace=False)
        return list(to_create)

    async def _set(
        self, names: Sequence[str], desired: DesiredState, files: Mapping[str, str]
    ) -> None:
        refuse_templates(names, desired)
        created = await self.create(names, files, desired)
        await self.registry.set_desired([n for n in names if n not in created], desired)

    async def _lazy_units(
        self, names: Sequence[str], jobs: Mapping[str, JobRecord], files: Mapping[str, str]
    ) -> dict[str, str]:
        """Units to create on the way: from given files, or instances from their template."""
        created: dict[str, str] = {}
        for name in names:
            if name in jobs:
                continue
            if name in files:
                created[name] = files[name]
                continue
            template = template_of(name)
            body = None
            if template is not None and template in jobs:
                body = await self.registry.unit_body(jobs[template].hash)
            if template is not None and template in files:
                body = files[template]
            if body is None:
                raise ClientError(not_found_message(name))
            created[name] = body
        return created

    async def set_desired(self, names: Sequence[str], desired: DesiredState) -> None:
        refuse_templates(names, desired)
        await self.registry.set_desired(names, desired)

    async def replace(self, name: str, unit: UnitFile, desired: DesiredState) -> None:
        """Give an existing unit a new unit file (the agent reloads it in place), checked as a
        new unit is."""
        unit = check_unit(name, unit.serialize())
        record = JobRecord(name, unit.hash, desired)
        await self.registry.create_jobs([(record, unit.serialize())], replace=True)

    # -- reading -----------------------------------------------------------------------------

    async def jobs(self, names: Sequence[str] | None = None) -> dict[str, JobRecord]:
        """Every job, or those of `names` (a few are read key by key)."""
        return await self.registry.jobs(names)

    async def reason(self, name: str) -> str | None:
        """Why the unit waits unplaced ("" when it does not); None when there is no such unit."""
        if name not in await self.registry.jobs([name]):
            return None
        return (await self.registry.reasons()).get(name, "")

    async def unit_files(self) -> dict[str, str]:
        """Every unit's file, by unit name."""
        jobs, bodies = await self.registry.jobs(), await self.registry.unit_bodies()
        return {name: bodies[job.hash] for name, job in jobs.items() if job.hash in bodies}

    async def units(self) -> dict[str, UnitStatus]:
        snapshot = await self.registry.snapshot()
        states: dict[str, dict[str, UnitState]] = {}
        for (unit, machine), state in (await self.registry.unit_states()).items():
            states.setdefault(unit, {})[machine] = state
        return {
            name: UnitStatus(
                name,
                job.hash,
                job.desired,
                snapshot.placements.get(name),
                states.get(name, {}),
                snapshot.reasons.get(name),
            )
            for name, job in sorted(snapshot.jobs.items())
        }

    async def machines(self) -> dict[str, Machine]:
        return await self.registry.machines()

    async def unit_states(self) -> dict[tuple[str, str], UnitState]:
        """What systemd reports, by (unit, machine)."""
        return await self.registry.unit_states()

    async def unit_bodies(self, hashes: Iterable[str]) -> dict[str, str]:
        """The unit files with these hashes (the ones etcd holds), by hash."""
        return await self.registry.unit_bodies(hashes)

    async def revision(self, key: bytes) -> int | None:
        """etcd's current revision, read with `key` (None while the key is missing): a cache
        of a listing stays valid as long as it is unchanged."""
        return await self.registry.revision_of(key)

    async def set_metadata(self, changes: Sequence[tuple[str, str, str]]) -> None:
        """Set (machine, key, value) metadata, all at once; "" removes the key."""
        await self.registry.set_metadata(changes)

    # -- drain (writer of drain/<machine>) -------------------------------------------------

    async def machines_and_states(self) -> tuple[dict[str, Machine], dict[str, str]]:
        """The machines that are up and each one's drain state (drain_state.py). Without a
        drain mark (the usual case) that is a read of the machines alone."""
        if not await self.registry.drains():
            machines = await self.registry.machines()
            return machines, dict.fromkeys(machines, SCHEDULABLE)
        raw = await self.registry.snapshot()
        states = drain_states(
            raw.machines, raw.drained, raw.placements, raw.running, raw.reasons, raw.landed
        )
        return raw.machines, states

    async def drain(self, machine: str, force: bool, now: float | None = None) -> DrainOutcome:
        """Mark a registered machine for draining, unless a unit on it can run on no other
        machine (DrainRefused naming each), or `force` (they then stay there). A machine
        marked already keeps its mark (no error)."""
        snapshot = await self.cluster_snapshot()
        if machine not in snapshot.machines:
            raise UnknownMachine(f"machine {machine} does not exist")
        stays = unmovable_units(snapshot, machine)
        if stays and not force:
            raise DrainRefused(refusal_message(machine, stays))
        from .registry import Conflict  # here: the API driver imports this module without aetcd

        try:
            new = await self.registry.mark_drain(machine, time.time() if now is None else now)
        except Conflict as error:
            raise UnknownMachine(f"machine {machine} does not exist") from error
        return DrainOutcome(new, stays)

    async def undrain(self, machine: str) -> bool:
        """Remove a machine's drain mark (registered or not); whether it had one."""
        return await self.registry.remove_drain(machine)

    async def cluster_snapshot(self) -> ClusterSnapshot:
        """The engine's view, read now: what a drain is judged against."""
        raw = await self.registry.snapshot()
        bodies = await self.registry.unit_bodies({record.hash for record in raw.jobs.values()})

        def requirements_of(record: JobRecord) -> Requirements | str:
            try:
                unit = parse_unit_file(bodies[record.hash], record.name)
                return requirements(unit, parse_unit_name(record.name))
            except (KeyError, ValueError):
                return "unit file missing or unreadable"

        return raw.resolved(requirements_of)

    async def unit_file(self, name: str) -> str:
        jobs = await self.registry.jobs([name])
        if name not in jobs:
            raise ClientError(f"unit {name} does not exist")
        body = await self.registry.unit_body(jobs[name].hash)
        if body is None:
            raise ClientError(f"unit file of {name} is missing from etcd")
        return body

    async def wait_until(
        self, condition: Callable[[dict[str, UnitStatus]], bool], timeout: float, poll: float = 0.1
    ) -> dict[str, UnitStatus]:
        """Poll the unit listing until `condition` holds; TimeoutError with the last listing."""
        deadline = time.monotonic() + timeout
        while True:
            units = await self.units()
            if condition(units):
                return units
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout:.0f}s: {units}")
            await asyncio.sleep(poll)


def not_found_message(name: str) -> str:
    """fleet's words for a unit found neither in the registry nor on disk (or, for a name no
    unit may have, what is wrong with the name)."""
    try:
        parse_unit_name(name)
    except UnitNameError as error:
        return str(error)
    template = template_of(name)
    if template is None:
        return f"unable to find Unit({name}) in Registry or on filesystem"
    return (
        f"failed getting Unit({name}) from template: unable to find template "
        f"Unit({template}) in Registry or on filesystem"
    )


def template_of(name: str) -> str | None:
    """The template an instance name is made from (`foo@bar.service` -> `foo@.service`), read
    from the name's shape alone: an invalid instance of a template found on disk or in the
    registry is then refused with the validator's message, not as missing."""
    stem, dot, suffix = name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    return f"{prefix}@.{suffix}" if dot and at and instance else None


def refuse_templates(names: Sequence[str], desired: DesiredState) -> None:
    for name in names:
        if desired != DesiredState.INACTIVE and is_template(name):
            raise ClientError(f'cannot activate template "{name}"')


def is_template(name: str) -> bool:
    # Not a validation: a unit an older fleetctl created under a name refused today can still
    # be stopped, unloaded and destroyed.
    try:
        return parse_unit_name(name).is_template
    except UnitNameError:
        return False
