"""fleet's HTTP API v1, served by fleetd with aiohttp on its listeners (listeners.py).

    GET    /fleet/v1/units[?nextPageToken=]   GET|PUT|DELETE /fleet/v1/units/<name>
    GET    /fleet/v1/state[?machineID=&unitName=]   GET /fleet/v1/state/<name>
    GET    /fleet/v1/machines                 PATCH /fleet/v1/machines (metadata)
    PUT|DELETE /fleet/v1/machines/<id>/drain[?force=true]   (ours: mark a machine for
           draining, or remove the mark; machines carry their drain `state`)
    GET    /fleet/v1/discovery                (the API described in Google's discovery format)
    GET    /fleet/v1/units/<name>/reason      (ours: why a unit is not placed)
    GET    /fleet/v1/events[?unit=&machine=&since=&pageSize=&nextPageToken=]   (ours: the
           event history, oldest first; with watch=true a text/event-stream of new events)

Also mounted under /v1-alpha/. Errors are fleet's `{"error": {"code", "message"}}`; until this
machine has registered (it holds its machine key), and while etcd is unreachable, every request
gets 503, as fleet's did. Handlers validate, then go through the client layer (client.py), the
same code fleetctl's etcd driver uses; none reaches into the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from aiohttp import web

from . import __version__ as VERSION
from . import metrics
from .activation import TcpPolicy, insecure_warning, refusal_message, tcp_policy
from .api_discovery import discovery_document
from .api_model import (
    ApiError,
    decode_token,
    drain_entity,
    machine_entity,
    method_not_allowed_message,
    page_of,
    state_entity,
    unit_entity,
)
from .client import (
    ClientError,
    DrainRefused,
    FleetClient,
    UnknownMachine,
    check_unit,
    is_template,
)
from .events import Event, EventFilter, check_page_size, decode_page_token, page, parse_time
from .events_store import EventReader
from .listeners import Listener
from .model import DesiredState
from .registry import RegistryError
from .status import current_state, is_global
from .unitfile import UnitFile, UnitFileError, parse_unit_file
from .unitname import UnitName, UnitNameError, parse_unit_name

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNREACHABLE = "fleet server unable to communicate with etcd"
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle event stream: dead clients are noticed
STREAM_QUEUE = 1000  # events waiting for a slow stream reader before the watch waits too


def error_response(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status)


@web.middleware
async def fleet_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as error:
        response = error_response(error)
    except ClientError as error:  # checked before, so a race with another client
        response = error_response(ApiError(409, str(error)))
    except RegistryError:
        response = error_response(ApiError(503, UNREACHABLE))
    except web.HTTPMethodNotAllowed as error:
        message = method_not_allowed_message(error.allowed_methods)
        response = error_response(ApiError(405, message))
    except web.HTTPException as error:
        response = error_response(ApiError(error.status, error.reason))
    response.headers["Server"] = f"fleetd/{VERSION}"
    return response


class Api:
    def __init__(
        self,
        client: FleetClient,
        registered: asyncio.Event,
        revision_key: bytes,
        events: EventReader | None = None,
    ) -> None:
        self.client = client
        self.events = events
        self.streams: set[asyncio.Task[object]] = set()  # event streams, ended at shutdown
        # Set while this machine holds its machine key (Heart.registered): before that, fleet
        # answered every request with 503, and so do we.
        self.registered = registered
        # Listings are paged (100 a page) and every page is asked for separately: the listing
        # is rebuilt only when etcd changed, read with a key that exists while we are registered.
        self.revision_key = revision_key
        self.listing: tuple[int, list[dict[str, object]]] | None = None
        self.files: dict[str, UnitFile] = {}  # hash -> parsed unit (bodies never change)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[fleet_errors, self.until_registered])
        app.on_shutdown.append(self.end_streams)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_route("*", "/", self.root)
        for base in ("/fleet/v1", "/v1-alpha"):
            app.router.add_route("*", f"{base}/discovery", self.discovery)
            app.router.add_get(f"{base}/units", self.list_units)
            app.router.add_get(f"{base}/units/{{name}}", self.get_unit)
            app.router.add_put(f"{base}/units/{{name}}", self.put_unit)
            app.router.add_delete(f"{base}/units/{{name}}", self.delete_unit)
            app.router.add_get(f"{base}/units/{{name}}/reason", self.unit_reason)
            app.router.add_get(f"{base}/state", self.list_states)
            app.router.add_get(f"{base}/state/{{name}}", self.get_state)
            app.router.add_get(f"{base}/machines", self.list_machines)
            app.router.add_patch(f"{base}/machines", self.patch_machines)
            app.router.add_put(f"{base}/machines/{{machine}}/drain", self.put_drain)
            app.router.add_delete(f"{base}/machines/{{machine}}/drain", self.delete_drain)
            app.router.add_get(f"{base}/events", self.list_events)
        return app

    @web.middleware
    async def until_registered(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # /metrics answers anyway: a scrape is how an operator sees that fleetd waits.
        if not self.registered.is_set() and request.path != "/metrics":
            raise ApiError(503, UNREACHABLE)
        return await handler(request)

    async def root(self, request: web.Request) -> web.Response:
        raise ApiError(405, "the API is served under /fleet/v1/")

    async def discovery(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            # fleet answers a wrong method here with 400, not 405.
            raise ApiError(400, "only GET supported against this resource")
        return web.json_response(discovery_document(VERSION))

    async def unit_entities(self) -> list[dict[str, object]]:
        revision = await self.client.revision(self.revision_key)
        if self.listing is not None and revision is not None and self.listing[0] == revision:
            return self.listing[1]
        units = await self.client.units()
        missing = {status.hash for status in units.values() if status.hash not in self.files}
        if missing:
            for unit_hash, body in (await self.client.unit_bodies(missing)).items():
                self.files.setdefault(unit_hash, parse_unit_file(body, unit_hash))
        entities = []
        for status in units.values():
            unit = self.files[status.hash]
            entities.append(unit_entity(status, unit, current_state(status, is_global(unit))))
        if revision is not None:
            self.listing = (revision, entities)
        return entities

    async def list_units(self, request: web.Request) -> web.Response:
        page = decode_token(request.query.getall("nextPageToken", []))
        return web.json_response(page_of(await self.unit_entities(), page, "units"))

    async def get_unit(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for entity in await self.unit_entities():
            if entity["name"] == name:
                return web.json_response(entity)
        raise ApiError(404, "unit does not exist")

    async def delete_unit(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in await self.client.jobs([name]):
            raise ApiError(404, "unit does not exist")
        await self.client.destroy([name])
        return web.Response(status=204)

    async def unit_reason(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        reason = await self.client.reason(name)
        if reason is None:
            raise ApiError(404, "unit does not exist")
        return web.json_response({"name": name, "reason": reason})

    async def put_unit(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await read_body(request)
        if body.get("name") and body["name"] != name:
            raise ApiError(
                400, f'name in URL "{name}" differs from unit name in request body "{body["name"]}"'
            )
        jobs = await self.client.jobs([name])
        # A unit an older fleetd accepted under a name refused today can still be stopped,
        # unloaded and destroyed; it cannot be given a unit file.
        if name not in jobs or body.get("options"):
            check_name(name)
        desired = check_desired(body.get("desiredState"))
        unit = check_options(name, body.get("options"))
        if is_template(name) and desired not in (None, DesiredState.INACTIVE):
            raise ApiError(400, f'cannot activate template "{name}"')
        if name in jobs and (unit is None or unit.hash == jobs[name].hash):
            if desired is None:
                raise ApiError(409, "must provide DesiredState to update existing unit")
            await self.client.set_desired([name], desired)
            return web.Response(status=204)
        if unit is None:
            raise ApiError(409, "unit does not exist and options field empty")
        await self.client.replace(name, unit, desired or DesiredState.INACTIVE)
        return web.Response(status=201)

    async def list_states(self, request: web.Request) -> web.Response:
        machine_filter = set(request.query.getall("machineID", []))
        unit_filter = set(request.query.getall("unitName", []))
        page = decode_token(request.query.getall("nextPageToken", []))
        states = [
            state_entity(unit, machine, state)
            for (unit, machine), state in sorted((await self.client.unit_states()).items())
            if (not machine_filter or machine in machine_filter)
            and (not unit_filter or unit in unit_filter)
        ]
        return web.json_response(page_of(states, page, "states"))

    async def get_state(self, request: web.Request) -> web.Response:
        """The state the first machine (by id) reports for the unit, as fleet answers."""
        name = request.match_info["name"]
        for (unit, machine), state in sorted((await self.client.unit_states()).items()):
            if unit == name:
                return web.json_response(state_entity(unit, machine, state))
        raise ApiError(404, "unit state does not exist")

    async def list_machines(self, request: web.Request) -> web.Response:
        page = decode_token(request.query.getall("nextPageToken", []))
        found, states = await self.client.machines_and_states()
        machines = [machine_entity(m, states[m.id]) for _, m in sorted(found.items())]
        return web.json_response(page_of(machines, page, "machines"))

    async def put_drain(self, request: web.Request) -> web.Response:
        """Mark a machine for draining: 201 (marked now) or 200 (marked already), with the
        units that stay (forced); 404 for an unknown machine; 409 when a unit on it can run
        on no other machine and force is not true."""
        machine = request.match_info["machine"]
        force = check_force(request.query.getall("force", []))
        try:
            outcome = await self.client.drain(machine, force)
        except UnknownMachine as error:
            raise ApiError(404, str(error)) from error
        except DrainRefused as error:
            raise ApiError(409, str(error)) from error
        body = drain_entity(machine, outcome)
        return web.json_response(body, status=201 if outcome.new else 200)

    async def delete_drain(self, request: web.Request) -> web.Response:
        """Remove a machine's drain mark: 204; 404 when it has none (or is unknown)."""
        machine = request.match_info["machine"]
        if await self.client.undrain(machine):
            return web.Response(status=204)
        if machine in await self.client.machines():
            raise ApiError(404, f"machine {machine} is not drained")
        raise ApiError(404, f"machine {machine} does not exist")

    async def list_events(self, request: web.Request) -> web.StreamResponse:
        if self.events is None:
            raise ApiError(404, "this fleetd keeps no events")
        wanted, size, after = events_query(request.query)
        if request.query.get("watch", "") in ("true", "1"):
            return await self.stream_events(request, wanted)
        found, _ = await self.events.read(wanted)
        chunk, token = page(found, after, size)
        body: dict[str, object] = {"events": [event.to_json() for event in chunk]}
        if token is not None:
            body["nextPageToken"] = token
        return web.json_response(body)

    async def stream_events(self, request: web.Request, wanted: EventFilter) -> web.StreamResponse:
        """Server-sent events: the history since `since` (when given), then every new event
        as it is written, one `data: <event JSON>` each, until the client or fleetd goes."""
        assert self.events is not None
        backlog, revision = await self.events.read(wanted)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[object] = asyncio.Queue(STREAM_QUEUE)
        pump = asyncio.create_task(pump_events(self.events.follow(wanted, revision), queue))
        task = asyncio.current_task()
        assert task is not None
        self.streams.add(task)
        try:
            for event in backlog if wanted.since is not None else []:
                await response.write(server_sent(event.to_json()))
            while not pump.done() or not queue.empty():
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                await response.write(server_sent(event))
        except ConnectionError:
            pass  # the client went
        finally:
            self.streams.discard(task)
            pump.cancel()
        return response

    async def end_streams(self, app: web.Application) -> None:
        for task in list(self.streams):
            task.cancel()

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format; cluster gauges are read from etcd now."""
        await read_cluster_gauges(self.client)
        return web.Response(body=metrics.exposition(), content_type="text/plain")

    async def patch_machines(self, request: web.Request) -> web.Response:
        """fleet's JSON-patch-like metadata ops, all validated before any is applied."""
        ops = await read_json(request)
        if not isinstance(ops, list):
            raise ApiError(400, "unable to decode body: expected a list of operations")
        changes = [metadata_change(op) for op in ops]
        await self.client.set_metadata(changes)
        return web.Response(status=204, content_type="application/json")


async def read_cluster_gauges(client: FleetClient) -> None:
    """The gauges of the whole cluster (machines, units), read from etcd for a scrape."""
    units, machines = await client.units(), await client.machines()
    metrics.MACHINES.set(len(machines))
    for desired in DesiredState:
        metrics.UNITS.labels(desired.value).set(sum(u.desired == desired for u in units.values()))
    metrics.ACTIVE_UNITS.set(sum(1 for u in units.values() if u.active_on()))


def events_query(query: Mapping[str, str]) -> tuple[EventFilter, int, str | None]:
    """The filter, page size and page start of GET /events; ApiError 400 for bad values."""
    try:
        since = parse_time(query["since"]) if query.get("since") else None
        size = check_page_size(query.get("pageSize"))
        token = query.get("nextPageToken")
        after = decode_page_token(token) if token else None
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return EventFilter(query.get("unit") or None, query.get("machine") or None, since), size, after


async def pump_events(events: AsyncIterator[Event], queue: asyncio.Queue[object]) -> None:
    """Feed a stream's queue from the watch; a broken watch ends the stream (the client
    reconnects with `since`)."""
    with contextlib.suppress(RegistryError):
        async for event in events:
            await queue.put(event.to_json())


def server_sent(entity: object) -> bytes:
    return b"data: " + json.dumps(entity, separators=(",", ":")).encode() + b"\n\n"


METADATA_PATH = re.compile(r"/([^/]+)/metadata/([A-Za-z0-9_.-]+)")


def metadata_change(op: object) -> tuple[str, str, str]:
    """One PATCH op -> (machine, key, value), "" for remove; ApiError 400 with fleet's words."""
    if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
        raise ApiError(400, "invalid op: expect add, remove, or replace")
    match = METADATA_PATH.fullmatch(str(op.get("path", "")))
    if match is None:
        raise ApiError(400, "machine metadata path invalid")
    if op["op"] == "remove":
        return match.group(1), match.group(2), ""
    value = op.get("value")
    if not isinstance(value, dict) or not isinstance(value.get("value"), str) or not value["value"]:
        raise ApiError(400, "invalid value: add and replace require a value")
    return match.group(1), match.group(2), value["value"]


async def read_json(request: web.Request) -> object:
    if request.headers.getall("Content-Type", []) != ["application/json"]:
        raise ApiError(415, "Content-Type must be application/json")
    try:
        return json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ApiError(400, f"unable to decode body: {error}") from error


async def read_body(request: web.Request) -> dict[str, object]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "unable to decode body: expected a JSON object")
    return body


def check_name(name: str) -> UnitName:
    try:
        return parse_unit_name(name)
    except UnitNameError as error:
        raise ApiError(400, str(error)) from error


def check_force(values: Sequence[str]) -> bool:
    if len(values) > 1 or (values and values[0] not in ("", "true", "false", "1", "0")):
        raise ApiError(400, "force must be true or false")
    return bool(values) and values[0] in ("true", "1")


def check_desired(value: object) -> DesiredState | None:
    if value in (None, ""):
        return None
    try:
        return DesiredState(value)
    except ValueError as error:
        raise ApiError(400, f"invalid desiredState {value!r}") from error


def check_options(name: str, options: object) -> UnitFile | None:
    """Options as fleet checks them: the JSON shape, then a re-parse of the serialization, with
    every check fleetctl's etcd driver makes (client.check_unit)."""
    if not options:
        return None
    if not isinstance(options, list):
        raise ApiError(400, "options must be a list")
    try:
        return check_unit(name, UnitFile.from_options(options, name).serialize())
    except (UnitFileError, ClientError) as error:
        raise ApiError(400, str(error)) from error


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    """TLS that requires a client certificate signed by `client_ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class ApiServer:
    """The API on its listeners; `close` stops it (the listeners themselves stay open)."""

    def __init__(self, runners: list[web.AppRunner]) -> None:
        self.runners = runners

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


async def serve(
    api: Api,
    listeners: Sequence[Listener],
    tls: ssl.SSLContext | None,
    insecure_tcp: bool,
    api_listen: tuple[str, int] | None = None,
) -> ApiServer:
    """Serve `api` on every listener: unix sockets as they are, TCP ones as tcp_policy says
    (a refused one answers every request with 403 and why), and on `api_listen`, which the
    configuration allows only with TLS or api_insecure_tcp."""
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    refusing: web.AppRunner | None = None
    for listener in listeners:
        policy = tcp_policy(tls is not None, insecure_tcp) if listener.is_tcp else None
        if policy is TcpPolicy.REFUSED:
            log.error(refusal_message(listener.where))
            refusing = refusing or await refusing_runner()
            await web.SockSite(refusing, listener.duplicate()).start()
            continue
        if policy is TcpPolicy.PLAIN:
            log.warning(insecure_warning(listener.where))
        context = tls if policy is TcpPolicy.TLS else None
        await web.SockSite(runner, listener.duplicate(), ssl_context=context).start()
        log.info("serving the API on %s%s", listener.where, f", {policy.value}" if policy else "")
    if api_listen is not None:
        host, port = api_listen
        if tls is None:
            log.warning(insecure_warning(f"tcp:{host}:{port}"))
        await web.TCPSite(runner, host, port, ssl_context=tls).start()
    return ApiServer([runner] if refusing is None else [runner, refusing])


async def refusing_runner() -> web.AppRunner:
    async def refuse(request: web.Request) -> web.Response:
        # The address the client reached, not the Host header it sent.
        address = request.transport.get_extra_info("sockname") if request.transport else None
        where = f"tcp:{address[0]}:{address[1]}" if address else f"tcp:{request.host}"
        return error_response(ApiError(403, refusal_message(where)))

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner
