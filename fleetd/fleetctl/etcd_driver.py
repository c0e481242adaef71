"""fleetctl's etcd driver (`--driver=etcd`): the Driver operations straight on the registry,
through fleetd.client's FleetClient where it already does the work (reading unit states, the
checks every new unit passes)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime

from ..client import ClientError, FleetClient, check_unit
from ..events import EventFilter
from ..events_store import EventReader
from ..model import DesiredState, DrainOutcome, JobRecord, Machine, UnitState, UnitStatus
from ..registry import Conflict, Registry
from ..unitfile import UnitFile

log = logging.getLogger("fleetctl")


class EtcdDriver:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.client = FleetClient(registry)

    async def jobs(self) -> dict[str, JobRecord]:
        log.debug("etcd: reading jobs")
        return await self.registry.jobs()

    async def unit_files(self) -> dict[str, str]:
        log.debug("etcd: reading unit files")
        return await self.client.unit_files()

    async def jobs_and_files(self) -> tuple[dict[str, JobRecord], dict[str, str]]:
        log.debug("etcd: reading jobs and their unit files")
        jobs = await self.registry.jobs()
        bodies = await self.registry.unit_bodies({job.hash for job in jobs.values()})
        files = {name: bodies[job.hash] for name, job in jobs.items() if job.hash in bodies}
        return jobs, files

    async def unit_file(self, name: str) -> str:
        log.debug("etcd: reading the unit file of %s", name)
        return await self.client.unit_file(name)

    async def units(self) -> dict[str, UnitStatus]:
        log.debug("etcd: reading units and their states")
        return await self.client.units()

    async def units_and_files(self) -> tuple[dict[str, UnitStatus], dict[str, str]]:
        log.debug("etcd: reading units, their states and their unit files")
        units = await self.client.units()
        bodies = await self.registry.unit_bodies({status.hash for status in units.values()})
        files = {name: bodies[s.hash] for name, s in units.items() if s.hash in bodies}
        return units, files

    async def published_states(self) -> dict[str, dict[str, UnitState]]:
        log.debug("etcd: reading unit states")
        states: dict[str, dict[str, UnitState]] = {}
        for (unit, machine), state in (await self.registry.unit_states()).items():
            states.setdefault(unit, {})[machine] = state
        return states

    async def machines(self) -> dict[str, Machine]:
        log.debug("etcd: reading machines")
        return await self.registry.machines()

    async def machines_and_states(self) -> tuple[dict[str, Machine], dict[str, str]]:
        log.debug("etcd: reading machines and their drain states")
        return await self.client.machines_and_states()

    async def reasons(self, names: Sequence[str]) -> dict[str, str]:
        log.debug("etcd: reading the engine's reasons")
        found = await self.registry.reasons()
        return {name: found[name] for name in names if found.get(name)}

    async def drain(self, machine: str, force: bool) -> DrainOutcome:
        log.debug("etcd: marking %s for draining", machine)
        return await self.client.drain(machine, force)

    async def undrain(self, machine: str) -> bool:
        log.debug("etcd: removing the drain mark of %s", machine)
        return await self.client.undrain(machine)

    async def create(self, units: Mapping[str, UnitFile]) -> None:
        log.debug("etcd: creating %s", ", ".join(units))
        records = [
            (JobRecord(name, unit.hash, DesiredState.INACTIVE), unit.serialize())
            for name, unit in units.items()
        ]
        try:
            await self.registry.create_jobs(records, replace=False)
        except Conflict as error:  # created meanwhile by someone else: nothing was written
            raise ClientError(str(error)) from error

    async def replace(self, units: Mapping[str, tuple[UnitFile, DesiredState]]) -> None:
        log.debug("etcd: replacing %s", ", ".join(units))
        records = []
        for name, (unit, desired) in units.items():
            checked = check_unit(name, unit.serialize())  # as a new unit is checked
            records.append((JobRecord(name, checked.hash, desired), checked.serialize()))
        await self.registry.create_jobs(records, replace=True)  # a few transactions for all

    async def set_desired(self, names: Sequence[str], desired: DesiredState) -> None:
        log.debug("etcd: setting %s to %s", ", ".join(names), desired.value)
        await self.client.set_desired(names, desired)

    async def destroy(self, names: Sequence[str]) -> None:
        log.debug("etcd: destroying %s", ", ".join(names))
        await self.registry.destroy_jobs(names)

    async def events(
        self, unit: str | None, machine: str | None, since: datetime | None
    ) -> list[dict[str, object]]:
        log.debug("etcd: reading the event history")
        found, _ = await EventReader(self.registry).read(EventFilter(unit, machine, since))
        return [event.to_json() for event in found]

    async def follow_events(
        self, unit: str | None, machine: str | None, since: datetime | None
    ) -> AsyncIterator[dict[str, object]]:
        log.debug("etcd: following the event history")
        reader, wanted = EventReader(self.registry), EventFilter(unit, machine, since)
        backlog, revision = await reader.read(wanted)
        for event in backlog if since is not None else []:
            yield event.to_json()
        async for event in reader.follow(wanted, revision):
            yield event.to_json()
