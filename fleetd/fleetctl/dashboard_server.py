"""`fleetctl dashboard`'s web server (aiohttp): one watcher reads the cluster through the
command's driver, however many pages are open, and every page gets its snapshots pushed as
server-sent events. Read-only: GET and HEAD only, no route writes anything.

    /              the page (flotilla/data/dashboard/index.html)
    /static/NAME   its script and style sheet
    /api/state     the current snapshot (JSON)
    /api/stream    text/event-stream: the snapshot now, then each time it changes
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from flotilla.resources import data_path

from ..client import ClientError
from ..model import UnitStatus
from ..registry import RegistryError
from ..status import is_global
from ..unitfile import UnitFileError, parse_unit_file
from .api_driver import ApiUnavailable
from .dashboard_feed import NoHistory, new_events, recent_events
from .dashboard_view import event_time, snapshot
from .driver import Driver

log = logging.getLogger("fleetctl")
POLL_SECONDS = 1.0  # the units' systemd states change without an event: read them this often
RETRY_SECONDS = 1.0
KEPT_EVENTS = 2000
CLOCK_MARGIN_SECONDS = 2.0  # the machines' clocks against ours
REFUSED_RETRY_SECONDS = 5.0
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# What a read can fail with while fleetd restarts or etcd is away; shown on the page, retried.
CLUSTER_ERRORS = (ApiUnavailable, ClientError, RegistryError, OSError, TimeoutError)
HEARTBEAT_SECONDS = 15.0  # a comment line now and then, so that a page notices a dead server


class ClusterWatch:
    """The latest snapshot of the cluster, and a condition that wakes the pages when it changes."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.events: dict[str, dict[str, Any]] = {}  # by id, in arrival order
        self.globals: dict[str, bool] = {}  # unit hash -> global (bodies never change)
        self.history = True  # until the cluster says it keeps none
        self.state: dict[str, object] = {"version": 0, "error": "reading the cluster..."}
        self.text = json.dumps(self.state)
        self.changed = asyncio.Condition()
        self.wakeup = asyncio.Event()

    async def run(self) -> None:
        await asyncio.gather(self.poll(), self.follow())

    async def poll(self) -> None:
        while True:
            try:
                fresh = await self.read()
            except Exception as error:  # whatever a restarting fleetd answers: shown, retried
                level = logging.DEBUG if isinstance(error, CLUSTER_ERRORS) else logging.WARNING
                log.log(level, "dashboard: reading the cluster failed: %r", error)
                why = str(error) or type(error).__name__
                await self.publish({**self.state, "error": f"cannot read the cluster: {why}"})
            else:
                await self.publish({**fresh, "error": None})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), POLL_SECONDS)
            self.wakeup.clear()

    async def read(self) -> dict[str, object]:
        units = await self.driver.units()
        machines, states = await self.driver.machines_and_states()
        globals_ = await self.global_units(units)
        return snapshot(machines, units, globals_, self.events.values(), self.history, states)

    async def global_units(self, units: Mapping[str, UnitStatus]) -> set[str]:
        if any(status.hash not in self.globals for status in units.values()):
            for name, text in (await self.driver.unit_files()).items():
                if name in units:
                    try:
                        self.globals[units[name].hash] = is_global(parse_unit_file(text, name))
                    except UnitFileError:
                        self.globals[units[name].hash] = False
        return {name for name, status in units.items() if self.globals.get(status.hash)}

    async def follow(self) -> None:
        """The event history, then every new event; reconnects after fleetd restarts."""
        while True:
            try:
                # From the newest event kept, or from before the history was read: nothing
                # written in between is missed (the repeats are kept by id).
                read_at = time.time() - CLOCK_MARGIN_SECONDS
                if not self.events:
                    self.keep(await recent_events(self.driver))
                self.history = True
                times = [t for e in self.events.values() if (t := event_time(e)) is not None]
                since = datetime.fromtimestamp(max(times, default=read_at), UTC)
                async for event in new_events(self.driver, since):
                    self.keep([event])
                    self.wakeup.set()  # the page shows the event with the state it explains
            except NoHistory as error:
                # A refusal: no history at all, or a fleetd not yet registered after a restart
                # (503); the API driver does not tell them apart, so ask again soon.
                log.debug("dashboard: the event history was refused: %s", error)
                self.history = bool(self.events)
                await asyncio.sleep(REFUSED_RETRY_SECONDS)
                continue
            except Exception as error:  # the stream broke (fleetd restarts): reconnect
                level = logging.DEBUG if isinstance(error, CLUSTER_ERRORS) else logging.WARNING
                log.log(level, "dashboard: the event stream broke: %r", error)
            await asyncio.sleep(RETRY_SECONDS)

    def keep(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.events[str(event.get("id"))] = event
        while len(self.events) > KEPT_EVENTS:
            del self.events[next(iter(self.events))]

    async def publish(self, state: dict[str, object]) -> None:
        if content(state) == content(self.state):
            return
        version = int(self.state.get("version", 0)) + 1  # type: ignore[call-overload]
        self.state = {**state, "version": version, "updated": time.time()}
        self.text = json.dumps(self.state)
        async with self.changed:
            self.changed.notify_all()

    async def updates(self) -> AsyncIterator[str | None]:
        """The snapshot now, then each new one (a page that falls behind gets the latest);
        None when nothing changed for a while."""
        sent = None
        while True:
            if self.state["version"] != sent:
                sent = self.state["version"]
                yield self.text
            quiet = False
            async with self.changed:
                if self.state["version"] == sent:  # else it changed while the page was sent to
                    try:
                        await asyncio.wait_for(self.changed.wait(), HEARTBEAT_SECONDS)
                    except TimeoutError:
                        quiet = True
            if quiet:
                yield None


def content(state: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in state.items() if k not in ("version", "updated")}


def make_app(watch: ClusterWatch) -> web.Application:
    static = data_path("dashboard")

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "index.html", headers={"Cache-Control": "no-store"})

    async def asset(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(static / name, headers={"Content-Type": STATIC_FILES[name]})

    async def state(request: web.Request) -> web.Response:
        return web.Response(text=watch.text, content_type="application/json")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            async for text in watch.updates():
                await response.write(
                    b": still here\n\n" if text is None else f"data: {text}\n\n".encode()
                )
        return response

    app = web.Application(middlewares=[read_only])
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/stream", stream)
    return app


@web.middleware
async def read_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Nothing but GET and HEAD, whatever the path: the dashboard never changes the cluster."""
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def serve(driver: Driver, listener: socket.socket, announce: str) -> None:
    """Serve the dashboard on `listener` until SIGINT or SIGTERM; print `announce` once up."""
    watch = ClusterWatch(driver)
    runner = web.AppRunner(make_app(watch), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    watcher = asyncio.create_task(watch.run(), name="cluster watch")
    try:
        await web.SockSite(runner, listener).start()
        print(announce, flush=True)
        done, _ = await asyncio.wait(
            [watcher, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if watcher in done:
            watcher.result()  # a bug in the watcher: fleetctl fails with it
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await runner.cleanup()
