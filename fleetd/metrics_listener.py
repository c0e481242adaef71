"""`metrics_listen`: an optional plain-HTTP listener for Prometheus and load balancers, which
cannot present the API's client certificates. Read-only, and only two paths:

    /metrics   the API's metrics (the cluster gauges read now) plus prometheus-client's
               process and platform metrics
    /healthz   200 while this fleetd holds its machine lease and its agent's last reconcile
               pass succeeded, else 503; the body says why

Every other path is 404, every method but GET and HEAD 405: nothing here reads a unit or a
machine, nor changes anything. Off unless metrics_listen is set.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from . import metrics
from .config import listen_address
from .registry import RegistryError

log = logging.getLogger("fleetd")
PATHS = ("/metrics", "/healthz")

# prometheus-client's default collectors (process_*, python_info, python_gc_*), registered apart
# from fleetd's own registry so that the API's /metrics stays as it was.
PROCESS_REGISTRY = CollectorRegistry()
for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    PROCESS_REGISTRY.register(collector)


@dataclass(frozen=True)
class Health:
    """What /healthz judges from: the lease, a fence, the agent's last pass."""

    registered: bool  # this machine holds its machine key (its lease is alive)
    fenced: bool  # the agent stopped its units: cut off from etcd
    last_pass_error: str | None  # None: no pass yet; "": the last one succeeded


def verdict(health: Health) -> tuple[int, str]:
    """The status /healthz answers and why (pure)."""
    if not health.registered:
        return 503, "not registered: this machine holds no lease in etcd"
    if health.fenced:
        return 503, "fenced: cut off from etcd, the units here are stopped"
    if health.last_pass_error is None:
        return 503, "no reconcile pass yet"
    if health.last_pass_error:
        return 503, f"the last reconcile pass failed: {health.last_pass_error}"
    return 200, "ok"


def make_app(
    refresh_gauges: Callable[[], Awaitable[None]], health: Callable[[], Health]
) -> web.Application:
    async def scrape(request: web.Request) -> web.Response:
        try:
            await refresh_gauges()
        except (RegistryError, TimeoutError) as error:
            # The process's own metrics still say something; the cluster gauges keep their
            # last values (a scrape is how an operator sees that etcd is away).
            log.debug("metrics: cannot read the cluster gauges: %s", error)
        body = metrics.exposition() + generate_latest(PROCESS_REGISTRY)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def healthz(request: web.Request) -> web.Response:
        status, reason = verdict(health())
        return web.Response(status=status, text=reason + "\n")

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=404, text="only /metrics and /healthz are served here\n")

    app = web.Application(middlewares=[read_only])
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{path:.*}", refuse)
    return app


@web.middleware
async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=405, headers={"Allow": "GET, HEAD"}, text="read-only\n")
    return await handler(request)


class MetricsListener:
    """The running listener (or none, when metrics_listen is off); `close` stops it."""

    def __init__(self, runner: web.AppRunner | None) -> None:
        self.runner = runner

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def serve_metrics(
    where: str,
    refresh_gauges: Callable[[], Awaitable[None]],
    health: Callable[[], Health],
) -> MetricsListener:
    """Listen on `where` (metrics_listen's HOST:PORT; "" is off)."""
    if not where:
        return MetricsListener(None)
    host, port = listen_address(where)
    runner = web.AppRunner(make_app(refresh_gauges, health), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("serving /metrics and /healthz on tcp:%s:%d, plain HTTP", host, port)
    return MetricsListener(runner)
