"""fleetctl's API driver (the default): the Driver operations over fleet's HTTP API v1.

fleetd serves the API on a unix socket (unix:///var/run/fleet.sock); an http:// URL works too.
Errors in fleet's JSON form become ClientError with the server's message.

fleet's API has a request per unit for every change. A command on many units sends them a few
at a time over the session's one connection pool (for_each), not one after the other: 1,000
units then cost about 1,000 / CONCURRENT_REQUESTS round trips of waiting.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

from ..client import ClientError
from ..drain_state import SCHEDULABLE
from ..events import MAX_PAGE_SIZE, format_time
from ..model import DesiredState, DrainOutcome, JobRecord, Machine, UnitState, UnitStatus
from ..unitfile import UnitFile

log = logging.getLogger("fleetctl")
# Enough requests under way to hide the round trips; few enough not to crowd fleetd, whose
# other clients (the machines' own requests, other users) share its event loop.
CONCURRENT_REQUESTS = 16


class ApiUnavailable(Exception):
    """fleetd's API could not be reached."""


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    @classmethod
    @asynccontextmanager
    async def open(
        cls, endpoint: str, timeout: float, tls: ssl.SSLContext | None = None
    ) -> AsyncIterator[ApiClient]:
        parts = urlsplit(endpoint)
        if parts.scheme == "unix":
            if parts.netloc:
                raise ValueError(f'unable to connect to host "{parts.netloc}" with scheme "unix"')
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=parts.path)
            base = "http://fleet"
        elif parts.scheme in ("http", "https"):
            connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
            base = f"{parts.scheme}://{parts.netloc}"
        else:
            raise ValueError(
                "URL scheme undefined"
                if not parts.scheme
                else f"unsupported endpoint scheme {parts.scheme!r}"
            )
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
            yield cls(session, base + "/fleet/v1")

    async def request(self, method: str, path: str, body: object = None) -> object:
        log.debug("%s %s", method, self.base + path)
        try:
            async with self.session.request(method, self.base + path, json=body) as response:
                log.debug("%s %s: %s", method, self.base + path, response.status)
                payload = (
                    await response.json(content_type=None) if response.content_length != 0 else None
                )
                if response.status >= 400:
                    raise ClientError(error_message(payload, response.reason))
                return payload
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise ApiUnavailable(str(error) or type(error).__name__) from error

    async def collection(self, path: str, key: str) -> list[dict[str, object]]:
        """Every page of a collection."""
        items: list[dict[str, object]] = []
        token = ""
        while True:
            page = await self.request("GET", path + (f"?nextPageToken={token}" if token else ""))
            items += page.get(key, [])  # type: ignore[union-attr]
            token = page.get("nextPageToken", "")  # type: ignore[union-attr]
            if not token:
                return items

    # -- reading -----------------------------------------------------------------------------

    async def unit_entities(self) -> dict[str, dict[str, object]]:
        return {str(u["name"]): u for u in await self.collection("/units", "units")}

    async def jobs(self) -> dict[str, JobRecord]:
        return {
            name: JobRecord(
                name, UnitFile.from_options(u["options"]).hash, DesiredState(u["desiredState"])
            )  # type: ignore[arg-type]
            for name, u in (await self.unit_entities()).items()
        }

    async def published_states(self) -> dict[str, dict[str, UnitState]]:
        states: dict[str, dict[str, UnitState]] = {}
        for s in await self.collection("/state", "states"):
            state = UnitState(
                str(s.get("systemdLoadState", "")),
                str(s.get("systemdActiveState", "")),
                str(s.get("systemdSubState", "")),
                str(s.get("hash", "")),
            )
            states.setdefault(str(s["name"]), {})[str(s["machineID"])] = state
        return states

    async def jobs_and_files(self) -> tuple[dict[str, JobRecord], dict[str, str]]:
        entities = await self.unit_entities()  # one listing for both
        files = {name: UnitFile.from_options(u["options"]) for name, u in entities.items()}  # type: ignore[arg-type]
        jobs = {
            name: JobRecord(name, files[name].hash, DesiredState(u["desiredState"]))  # type: ignore[arg-type]
            for name, u in entities.items()
        }
        return jobs, {name: unit.serialize() for name, unit in files.items()}

    async def units(self) -> dict[str, UnitStatus]:
        return (await self.units_and_files())[0]

    async def units_and_files(self) -> tuple[dict[str, UnitStatus], dict[str, str]]:
        entities, states = await asyncio.gather(self.unit_entities(), self.published_states())
        files = {name: UnitFile.from_options(u["options"]) for name, u in entities.items()}  # type: ignore[arg-type]
        unplaced = [
            name
            for name, unit in entities.items()
            if unit.get("machineID") is None
            and DesiredState(unit["desiredState"]) != DesiredState.INACTIVE  # type: ignore[arg-type]
        ]
        reasons = await self.reasons(unplaced)
        found = {}
        for name, unit in sorted(entities.items()):
            desired, machine = DesiredState(unit["desiredState"]), unit.get("machineID")  # type: ignore[arg-type]
            found[name] = UnitStatus(
                name, files[name].hash, desired, machine, states.get(name, {}), reasons.get(name)
            )  # type: ignore[arg-type]
        return found, {name: unit.serialize() for name, unit in files.items()}

    async def reasons(self, names: Sequence[str]) -> dict[str, str]:
        """Why each of these units is not placed (the ones the engine gave a reason for)."""
        found: dict[str, str] = {}

        async def read(name: str) -> None:
            reason = (await self.request("GET", f"/units/{quote(name)}/reason"))["reason"]  # type: ignore[index]
            if reason:
                found[name] = reason

        await self.for_each(names, read)
        return found

    async def machines(self) -> dict[str, Machine]:
        return (await self.machines_and_states())[0]

    async def machines_and_states(self) -> tuple[dict[str, Machine], dict[str, str]]:
        """Machines and their drain state (a fleetd without drains says none: schedulable)."""
        entities = await self.collection("/machines", "machines")
        machines = {
            str(m["id"]): Machine(str(m["id"]), str(m.get("primaryIP", "")), m.get("metadata", {}))  # type: ignore[arg-type]
            for m in entities
        }
        return machines, {str(m["id"]): str(m.get("state", SCHEDULABLE)) for m in entities}

    async def unit_file(self, name: str) -> str:
        unit = await self.request("GET", f"/units/{quote(name)}")
        return UnitFile.from_options(unit["options"]).serialize()  # type: ignore[index]

    async def unit_files(self) -> dict[str, str]:
        return {
            name: UnitFile.from_options(u["options"]).serialize()  # type: ignore[arg-type]
            for name, u in (await self.unit_entities()).items()
        }

    # -- writing -----------------------------------------------------------------------------

    async def drain(self, machine: str, force: bool) -> DrainOutcome:
        path = f"/machines/{quote(machine)}/drain" + ("?force=true" if force else "")
        log.debug("PUT %s", self.base + path)
        try:
            async with self.session.put(self.base + path) as response:
                payload = await response.json(content_type=None)
                if response.status >= 400:
                    raise ClientError(error_message(payload, response.reason))
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise ApiUnavailable(str(error) or type(error).__name__) from error
        stays = {str(s["name"]): str(s["reason"]) for s in payload.get("stays", [])}
        return DrainOutcome(response.status == 201, stays)

    async def undrain(self, machine: str) -> bool:
        """DELETE the mark: 204 removed it, 404 found none."""
        path = f"/machines/{quote(machine)}/drain"
        log.debug("DELETE %s", self.base + path)
        try:
            async with self.session.delete(self.base + path) as response:
                if response.status == 404:
                    return False
                if response.status >= 400:
                    payload = await response.json(content_type=None)
                    raise ClientError(error_message(payload, response.reason))
                return True
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            raise ApiUnavailable(str(error) or type(error).__name__) from error

    async def put(self, name: str, desired: DesiredState, unit: UnitFile | None = None) -> None:
        body: dict[str, object] = {"desiredState": desired.value}
        if unit is not None:
            body["options"] = unit.to_options()
        await self.request("PUT", f"/units/{quote(name)}", body)

    async def create(self, units: Mapping[str, UnitFile]) -> None:
        """Create the units; the ones created are removed again when one fails."""
        created: list[str] = []
        try:
            await self.for_each(
                list(units),
                lambda name: self.put(name, DesiredState.INACTIVE, units[name]),
                created,
            )
        except ClientError:
            await self.destroy(created)
            raise

    async def replace(self, units: Mapping[str, tuple[UnitFile, DesiredState]]) -> None:
        await self.for_each(list(units), lambda n: self.put(n, units[n][1], units[n][0]))

    async def set_desired(self, names: Sequence[str], desired: DesiredState) -> None:
        await self.for_each(names, lambda name: self.put(name, desired))

    async def destroy(self, names: Sequence[str]) -> None:
        await self.for_each(names, lambda name: self.request("DELETE", f"/units/{quote(name)}"))

    async def for_each(
        self,
        names: Sequence[str],
        request: Callable[[str], Awaitable[object]],
        done: list[str] | None = None,
    ) -> None:
        """request(name) for every name, CONCURRENT_REQUESTS at a time; each name that succeeded
        is appended to `done`. After a failure no new request starts and the ones under way
        finish (none is cut off halfway, so `done` is exact), then the first error is raised."""
        pending = iter(names)  # shared by the workers: each name is taken once
        errors: list[Exception] = []

        async def worker() -> None:
            for name in pending:
                if errors:
                    return
                try:
                    await request(name)
                except Exception as error:  # re-raised below, once every worker has stopped
                    errors.append(error)
                    return
                if done is not None:
                    done.append(name)

        await asyncio.gather(*(worker() for _ in range(min(CONCURRENT_REQUESTS, len(names)))))
        if errors:
            raise errors[0]

    # -- events ------------------------------------------------------------------------------

    async def events(
        self, unit: str | None, machine: str | None, since: datetime | None
    ) -> list[dict[str, object]]:
        query = [*events_query(unit, machine, since), ("pageSize", str(MAX_PAGE_SIZE))]
        found: list[dict[str, object]] = []
        token = ""
        while True:
            extra = [("nextPageToken", token)] if token else []
            page = await self.request("GET", "/events?" + urlencode(query + extra))
            found += page.get("events", [])  # type: ignore[union-attr]
            token = page.get("nextPageToken", "")  # type: ignore[union-attr]
            if not token:
                return found

    async def follow_events(
        self, unit: str | None, machine: str | None, since: datetime | None
    ) -> AsyncIterator[dict[str, object]]:
        """The API's server-sent events: the request timeout bounds connecting only."""
        url = self.base + "/events?" + urlencode([*events_query(unit, machine, since), WATCH])
        connect = self.session.timeout.total
        timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)
        log.debug("GET %s", url)
        try:
            async with self.session.get(url, timeout=timeout) as response:
                if response.status >= 400:
                    payload = await response.json(content_type=None)
                    raise ClientError(error_message(payload, response.reason))
                async for line in response.content:
                    if line.startswith(b"data: "):
                        yield json.loads(line[len(b"data: ") :])
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
            raise ApiUnavailable(str(error) or type(error).__name__) from error


WATCH = ("watch", "true")


def events_query(
    unit: str | None, machine: str | None, since: datetime | None
) -> list[tuple[str, str]]:
    query = [("unit", unit), ("machine", machine)]
    query.append(("since", format_time(since) if since is not None else None))
    return [(name, value) for name, value in query if value]


def error_message(payload: object, fallback: str | None) -> str:
    """The message of fleet's error JSON, or the HTTP reason."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("message", fallback))
    return str(fallback)
