"""The one interface fleetctl's commands use to reach a cluster, whichever way it is reached:
fleet's HTTP API (api_driver.ApiClient, the default) or etcd directly (etcd_driver.EtcdDriver,
`--driver=etcd`). Commands decide; drivers only read and write.

Reads return the whole collection at once, so that a command reads each thing it needs once
and decides from that one reading. Writes are plain: what to create, replace, set or remove
was decided by the command (lazy creation lives in creation.py, not in a driver).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from ..model import DesiredState, DrainOutcome, JobRecord, Machine, UnitState, UnitStatus
from ..unitfile import UnitFile


class Driver(Protocol):
    async def jobs(self) -> dict[str, JobRecord]:
        """Every unit's name, hash and desired state."""

    async def unit_files(self) -> dict[str, str]:
        """Every unit's file as the cluster stores it, by unit name."""

    async def jobs_and_files(self) -> tuple[dict[str, JobRecord], dict[str, str]]:
        """jobs() and unit_files() from one reading (lazy creation decides from both)."""

    async def unit_file(self, name: str) -> str:
        """One unit's file; ClientError when the cluster has no such unit."""

    async def units(self) -> dict[str, UnitStatus]:
        """Every unit with its placement, the states machines publish and why it is pending."""

    async def units_and_files(self) -> tuple[dict[str, UnitStatus], dict[str, str]]:
        """units() and every unit's file from one reading of the units (commands that need to
        know which units are global decide from both)."""

    async def published_states(self) -> dict[str, dict[str, UnitState]]:
        """What machines publish, by unit then machine, units the cluster forgot included."""

    async def machines(self) -> dict[str, Machine]:
        """The machines that are up."""

    async def machines_and_states(self) -> tuple[dict[str, Machine], dict[str, str]]:
        """The machines that are up, and each one's drain state (drain_state.py)."""

    async def reasons(self, names: Sequence[str]) -> dict[str, str]:
        """Why the engine holds each of these units where it is (those it gave a reason for)."""

    async def drain(self, machine: str, force: bool) -> DrainOutcome:
        """Mark a machine (full id) for draining; ClientError with why when refused."""

    async def undrain(self, machine: str) -> bool:
        """Remove a machine's drain mark; whether there was one."""

    async def create(self, units: Mapping[str, UnitFile]) -> None:
        """Create units with desired state inactive, all or nothing (they were checked)."""

    async def replace(self, units: Mapping[str, tuple[UnitFile, DesiredState]]) -> None:
        """Give existing units each a new file and a desired state."""

    async def set_desired(self, names: Sequence[str], desired: DesiredState) -> None:
        """Set existing units' desired state."""

    async def destroy(self, names: Sequence[str]) -> None:
        """Remove units from the cluster."""

    async def events(
        self, unit: str | None, machine: str | None, since: datetime | None
    ) -> list[dict[str, object]]:
        """The event history (events.py's JSON), oldest first: those of `unit`, those that
        name a machine whose id begins with `machine`, those at or after `since`."""

    def follow_events(
        self, unit: str | None, machine: str | None, since: datetime | None
    ) -> AsyncIterator[dict[str, object]]:
        """The matching events since `since` (none of the past without it), then each new one
        as it is written, until the connection ends."""
