"""fleetd: wiring. Startup, the components as tasks, shutdown; signals only set flags.

fleetd [--config /etc/fleet/fleet.conf] [--<option> VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from flotilla.process import CommandError

from . import __version__ as VERSION
from . import systemd as sd
from .activation import ActivationError
from .agent import Agent
from .api_on_demand import ApiOnDemand, RunningServer
from .config import (
    COMPATIBILITY_KEYS,
    DEFAULT_CONFIG_FILE,
    SETTINGS,
    Config,
    ConfigError,
    default_text,
    load_config,
    read_config_file,
)
from .deadline import watchdog_seconds
from .deadline_keeper import DeadlineKeeper
from .etcdclient import TlsFiles
from .events import MACHINE_LEFT, Draft
from .events_store import EventReader, EventRecorder
from .executor import TaskExecutor
from .heart import Heart
from .identity import detect_public_ip, this_machine
from .keys import Keys
from .listeners import Listener, take_passed_listeners, unix_listener
from .registry import Registry, RegistryError
from .state_dump import format_state
from .status_line import registered_status
from .wiring import Wiring, wire_machine

log = logging.getLogger("fleetd")
API_SOCKET = Path("/var/run/fleet.sock")
RUN_DIR = Path("/run/fleet")  # the lease id and the peer list survive a fleetd restart
DEADLINE_FILE = RUN_DIR / "deadline"  # read by fleetd-backstop (backstop.py)
ADDRESS_CHECK_SECONDS = 5.0  # how soon a new detected public IP is taken up
TRANSPORT_CHECK_SECONDS = 1.0
EVENTS_DRAIN_SECONDS = 1.0  # a graceful leave writes its last events, but does not wait on etcd


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fleetd",
        description="Flotilla's cluster daemon, a drop-in for fleet's fleetd. SIGHUP reloads"
        " the configuration, SIGUSR1 logs the agent's and the engine's state, SIGTERM leaves"
        " the cluster.",
    )
    parser.add_argument("--config", type=Path, help=f"config file [default: {DEFAULT_CONFIG_FILE}]")
    parser.add_argument("--version", action="version", version=f"fleetd {VERSION}")
    settings = parser.add_argument_group(
        "settings",
        "Each is a fleet.conf line KEY=VALUE, an environment variable FLEET_<KEY> or a flag"
        " --KEY VALUE; a flag wins over the environment, which wins over the file.",
    )
    for setting in SETTINGS:
        default = default_text(setting) or "none"
        settings.add_argument(
            f"--{setting.name}", metavar="VALUE", help=f"{setting.help} [default: {default}]"
        )
    compatibility = parser.add_argument_group(
        "accepted for compatibility with fleet only",
        "fleet's keys that fleetd accepts in each of those places and ignores, with a warning"
        " (any value). An unknown key in fleet.conf or an unknown FLEET_* variable is ignored"
        " with a warning naming it too.",
    )
    for key in COMPATIBILITY_KEYS:
        compatibility.add_argument(f"--{key.name}", metavar="VALUE", help=f"no effect: {key.help}")
    return parser.parse_args(argv)


def read_config(args: argparse.Namespace) -> tuple[Config, list[str]]:
    """The configuration and the warnings about it (logging is not set up yet)."""
    path = args.config or DEFAULT_CONFIG_FILE
    file_values = read_config_file(path) if args.config or path.exists() else {}
    names = [s.name for s in SETTINGS] + [key.name for key in COMPATIBILITY_KEYS]
    flags = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return load_config(file_values, os.environ, flags)


def setup_logging(verbosity: int, machine_id: str = "") -> None:
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    if "JOURNAL_STREAM" in os.environ:
        from flotilla.systemd_service import JournalHandler

        root.addHandler(JournalHandler(SYSLOG_IDENTIFIER="fleetd", FLEET_MACHINE=machine_id))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def notify(state: str) -> None:
    if "NOTIFY_SOCKET" in os.environ:
        from flotilla import systemd_service as daemon

        daemon.notify(state)


def announce_registration(machine_id: str) -> Callable[[int, bool], Awaitable[None]]:
    """Each new lease is told to systemd as fleetd's status line (status_line.py)."""

    async def announce(lease: int, _lost_lease: bool) -> None:
        notify(f"STATUS={registered_status(machine_id, lease)}")

    return announce


class Server:
    def __init__(
        self,
        args: argparse.Namespace,
        config: Config,
        warnings: list[str],
        listeners: list[Listener],
    ) -> None:
        self.args = args
        self.config = config
        self.config_warnings = warnings  # logged once logging is set up for the config
        self.describe_state: Callable[[], str] | None = None  # while the components run
        # The API's sockets, kept across reloads: systemd's (fleet.socket), else our own.
        self.listeners = listeners
        self.should_exit = asyncio.Event()
        self.should_reload = asyncio.Event()
        # systemd's watchdog: the unit's WatchdogSec, then as fleetd tightens it to its TTL.
        self.watchdog_configured = int(os.environ.get("WATCHDOG_USEC", "0")) / 1e6
        self.watchdog_seconds = self.watchdog_configured

    async def serve(self) -> int:
        """Exit status: 0 after SIGTERM, 1 when a component failed (systemd restarts fleetd,
        which reuses the machine lease, so nothing moves)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.should_exit.set)
        loop.add_signal_handler(signal.SIGINT, self.should_exit.set)
        loop.add_signal_handler(signal.SIGHUP, self.should_reload.set)
        loop.add_signal_handler(signal.SIGUSR1, self.dump_state)
        if not self.listeners:
            self.listeners = [unix_listener(API_SOCKET)]
        # The watchdog spans reloads: it pings as long as the event loop runs.
        watchdog = asyncio.create_task(self.watchdog(), name="watchdog")
        try:
            while True:
                outcome = await self.run_once(watchdog)
                if outcome != "reload":
                    return 0 if outcome == "exit" else 1
                self.reload_config()
        except Exception:
            log.critical("fleetd failed; exiting so that systemd restarts it", exc_info=True)
            return 1
        finally:
            await cancel([watchdog])

    def reload_config(self) -> None:
        log.info("Reloading configuration")
        try:
            self.config, self.config_warnings = read_config(self.args)
        except ConfigError as error:
            log.error("keeping the old configuration: %s", error)

    def dump_state(self) -> None:
        """SIGUSR1, as in fleet: the agent's and the engine's state to the journal. It only
        reads what the components hold, so it runs on the event loop between their steps."""
        if self.describe_state is None:
            log.info("state dump: fleetd is between runs of its components; nothing to dump")
            return
        try:
            log.info("state dump: %s", self.describe_state())
        except Exception:
            log.exception("state dump failed")

    async def run_once(self, watchdog: asyncio.Task[None]) -> str:
        """Run every component until SIGTERM ("exit"), SIGHUP ("reload") or a failure."""
        config = self.config
        machine = this_machine(config)
        setup_logging(config.verbosity, machine.id)
        for warning in self.config_warnings:
            log.warning("%s", warning)
        self.config_warnings = []  # once per reading of the configuration
        self.fit_watchdog(config.agent_ttl)
        keys = Keys(config.etcd_key_prefix)
        tls = TlsFiles(config.etcd_cafile, config.etcd_certfile, config.etcd_keyfile)
        registry_context = Registry.open(
            config.etcd_servers,
            keys,
            config.etcd_request_timeout,
            config.etcd_username,
            config.etcd_password,
            tls,
        )
        async with registry_context as registry, await sd.Systemd.connect() as systemd:
            events = EventRecorder(registry, machine.id, config.events_limit, config.events_max_age)
            wiring = Wiring(
                agent_ttl=config.agent_ttl,
                agent_interval=config.agent_reconcile_interval,
                engine_interval=config.engine_reconcile_interval,
                request_timeout=config.etcd_request_timeout,
                peer_port=config.peer_port,
                units_directory=Path(config.units_directory),
                run_directory=RUN_DIR,
                deadline_file=DEADLINE_FILE,
                fencing=config.fencing,
                engine=not config.disable_engine,
                record=events.record if config.events_limit else None,
            )
            parts = await wire_machine(registry, systemd, machine, wiring)
            heart, agent, engine = parts.heart, parts.agent, parts.engine
            heart.on_new_lease.append(announce_registration(machine.id))
            responder = parts.responder
            components = {
                **parts.components,
                "peer responder": watch_transport(responder),
                "event recorder": events.run(),
            }
            if not config.public_ip:
                components["address watch"] = self.watch_address(machine.ip)
            api = ApiOnDemand(
                self.listeners, lambda: start_api(config, registry, heart, self.listeners)
            )
            components["API"] = api.run(at_once=api_at_once(config, self.listeners))
            scrapes = await start_metrics_listener(config, registry, heart, agent)
            tasks = [asyncio.create_task(c, name=name) for name, c in components.items()]
            heart_task = tasks[0]
            self.describe_state = lambda: format_state(
                agent.state_view(), engine.state_view() if engine else None
            )
            notify("READY=1")
            log.info("fleetd %s started on machine %s (%s)", VERSION, machine.id, machine.ip)
            outcome = await self.wait_for_signal_or_failure([*tasks, watchdog])
            self.describe_state = None
            # The heart keeps the lease alive until the units are gone, so nothing moves early.
            await cancel([t for t in tasks if t is not heart_task])
            if outcome == "exit":
                await self.leave(registry, agent, parts.executor, heart, parts.keeper, events)
            await cancel([heart_task])
            responder.close()
            await api.close()
            await scrapes.close()
        return outcome

    async def wait_for_signal_or_failure(self, tasks: list[asyncio.Task[None]]) -> str:
        exit_wait = asyncio.create_task(self.should_exit.wait())
        reload_wait = asyncio.create_task(self.should_reload.wait())
        done, _ = await asyncio.wait(
            [exit_wait, reload_wait, *tasks], return_when=asyncio.FIRST_COMPLETED
        )
        await cancel([exit_wait, reload_wait])
        self.should_reload.clear()
        if self.should_exit.is_set():
            return "exit"
        for task in done & set(tasks):
            error = None if task.cancelled() else task.exception()
            if isinstance(error, AddressChanged):
                log.warning("%s; exiting so that systemd restarts fleetd with it", error)
                return "failed"
            log.critical(
                "fleetd's %s stopped%s; exiting so that systemd restarts fleetd",
                task.get_name(),
                f": {error!r}" if error else "",
                exc_info=error,
            )
            return "failed"
        return "reload"

    async def leave(
        self,
        registry: Registry,
        agent: Agent,
        executor: TaskExecutor,
        heart: Heart,
        keeper: DeadlineKeeper | None,
        events: EventRecorder,
    ) -> None:
        """Graceful stop: leadership given up, units stopped and unloaded, lease revoked, so
        every unit can move at once."""
        notify("STOPPING=1")
        log.info("shutting down: stopping units and leaving the cluster")
        with contextlib.suppress(RegistryError):
            await registry.resign(heart.machine.id)
        await agent.purge()
        if running := await agent.still_running(executor.unit_files()):
            # Revoking now would move them while they run here (systemd refuses or delays
            # stops while the machine shuts down): let the lease expire by itself instead; the
            # backstop stops them by its deadline, before the lease can expire.
            log.warning(
                "leaving with units still running (%s): the lease is left to expire",
                " ".join(running),
            )
            return
        if keeper is not None and not executor.unit_files():
            keeper.retire()  # else the backstop stops what is left at the deadline
        if self.config.events_limit:
            events.record(Draft(MACHINE_LEFT, None, heart.machine.id, None, None, "fleetd stopped"))
            await events.drain(EVENTS_DRAIN_SECONDS)
        with contextlib.suppress(RegistryError):
            await heart.stop()
        with contextlib.suppress(RegistryError):
            # After the lease, or the engine would see it alive and remember it again.
            await registry.forget_member(heart.machine.id)

    def fit_watchdog(self, ttl: float) -> None:
        """Tighten systemd's watchdog to fit inside the TTL: a wedged fleetd is restarted
        while its lease is still alive, and the restarted fleetd reuses it."""
        if not self.watchdog_configured:
            return
        seconds = watchdog_seconds(ttl, self.watchdog_configured)
        if seconds != self.watchdog_seconds:
            notify(f"WATCHDOG_USEC={round(seconds * 1e6)}")
            self.watchdog_seconds = seconds
            log.info("watchdog: %.1fs (agent_ttl %.0fs)", seconds, ttl)

    async def watchdog(self) -> None:
        """Ping systemd's watchdog from the event loop: a wedged loop gets fleetd restarted."""
        if not self.watchdog_configured:
            await asyncio.Event().wait()  # no watchdog: nothing to do, nothing to fail
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_seconds / 2)

    async def watch_address(self, ip: str) -> None:
        """The detected public IP changed (a new DHCP lease, say): the machine must be published
        with it, and the peer responder and the probes must use it (fencing needs both). A
        reload would not do: gRPC keeps its connection to etcd from the old address, which no
        longer answers. So fleetd exits and systemd starts it again at once (the lease is
        reused, nothing moves). With public_ip set, SIGHUP takes up a new one."""
        while True:
            await asyncio.sleep(ADDRESS_CHECK_SECONDS)
            try:
                found = await asyncio.to_thread(detect_public_ip)
            except (ConfigError, CommandError, ValueError) as error:
                log.debug("cannot detect the public IP: %s", error)
                continue
            if found != ip:
                raise AddressChanged(f"the public IP changed from {ip} to {found}")


async def load_api_modules() -> None:
    """Import the HTTP stack (aiohttp, the API) in a thread: imported in the event loop it
    held the loop for seconds on a busy VM, past the watchdog, so the first request to the API
    got fleetd killed (and the client a refused connection), again and again."""
    await asyncio.to_thread(importlib.import_module, f"{__package__}.api")


async def start_api(
    config: Config, registry: Registry, heart: Heart, listeners: list[Listener]
) -> RunningServer:
    await load_api_modules()
    from .api import Api, serve  # the HTTP stack, loaded only when the API is wanted
    from .client import FleetClient

    machine_key = registry.keys.machine(heart.machine.id)
    api = Api(FleetClient(registry), heart.registered, machine_key, EventReader(registry))
    tcp = api_listen_address(config)
    return await serve(api, listeners, api_tls(config), config.api_insecure_tcp, tcp)


class NoListener:
    async def close(self) -> None:
        pass


async def start_metrics_listener(
    config: Config, registry: Registry, heart: Heart, agent: Agent
) -> RunningServer:
    """metrics_listen: plain /metrics and /healthz (the HTTP stack is loaded only when set)."""
    if not config.metrics_listen:
        return NoListener()
    await load_api_modules()
    from .api import read_cluster_gauges
    from .client import FleetClient
    from .metrics_listener import Health, serve_metrics

    return await serve_metrics(
        config.metrics_listen,
        lambda: read_cluster_gauges(FleetClient(registry)),
        lambda: Health(heart.registered.is_set(), agent.fenced, agent.last_pass_error),
    )


def api_at_once(config: Config, listeners: list[Listener]) -> bool:
    """Whether the API starts with fleetd rather than at its first connection: whenever TCP or
    TLS is configured, so that their refusals and errors show at start as they always did."""
    tls = (config.api_tls_cert, config.api_tls_key, config.api_tls_client_ca)
    return bool(config.api_listen) or any(tls) or any(listener.is_tcp for listener in listeners)


def api_tls(config: Config) -> ssl.SSLContext | None:
    """TLS for TCP listeners, when it is configured (all three files)."""
    files = (config.api_tls_cert, config.api_tls_key, config.api_tls_client_ca)
    if not all(files):
        return None
    from .api import tls_context

    return tls_context(*files)


def api_listen_address(config: Config) -> tuple[str, int] | None:
    if not config.api_listen:
        return None
    host, _, port = config.api_listen.rpartition(":")
    return host, int(port)


class AddressChanged(Exception):
    """The machine's detected public IP is not the one fleetd runs with."""


async def watch_transport(transport: asyncio.BaseTransport) -> None:
    """Fail when a server's transport closes: a closed peer responder would leave the other
    machines' fencing without our answers."""
    while not transport.is_closing():
        await asyncio.sleep(TRANSPORT_CHECK_SECONDS)
    raise RuntimeError("the transport closed")


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config, warnings = read_config(args)
        setup_logging(config.verbosity)
        this_machine(config)  # fail now, with a clear message, on a bad identity
        listeners = take_passed_listeners()
    except (ConfigError, ActivationError) as error:
        print(f"fleetd: {error}", file=sys.stderr)
        return 1
    return asyncio.run(Server(args, config, warnings, listeners).serve())


if __name__ == "__main__":
    sys.exit(main())
