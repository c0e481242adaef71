"""fleetd: wiring. Startup, the components as tasks, shutdown; signals only set flags.

fleetd [--config /etc/fleet/fleet.conf] [--<option> VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from . import __version__ as VERSION
from . import peers
from . import systemd as sd
from .agent import Agent
from .api import serve as serve_api
from .api import tls_context
from .client import FleetClient
from .config import (
    DEFAULT_CONFIG_FILE,
    SETTINGS,
    Config,
    ConfigError,
    load_config,
    read_config_file,
)
from .engine import Engine
from .etcdclient import TlsFiles
from .guard import FenceGuard
from .heart import Heart
from .identity import this_machine
from .keys import Keys
from .registry import Registry, RegistryError

log = logging.getLogger("fleetd")
API_SOCKET = Path("/var/run/fleet.sock")
RUN_DIR = Path("/run/fleet")  # the lease id and the peer list survive a fleetd restart


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fleetd", description="Flotilla's cluster daemon")
    parser.add_argument("--config", type=Path, help=f"config file [default: {DEFAULT_CONFIG_FILE}]")
    parser.add_argument("--version", action="version", version=f"fleetd {VERSION}")
    for setting in SETTINGS:
        parser.add_argument(f"--{setting.name}", metavar="VALUE", help=setting.help)
    return parser.parse_args(argv)


def read_config(args: argparse.Namespace) -> Config:
    path = args.config or DEFAULT_CONFIG_FILE
    file_values = read_config_file(path) if args.config or path.exists() else {}
    flags = {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name) is not None}
    return load_config(file_values, os.environ, flags)


def setup_logging(verbosity: int, machine_id: str = "") -> None:
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level)
    if "JOURNAL_STREAM" in os.environ:
        from systemd.journal import JournalHandler

        root.addHandler(JournalHandler(SYSLOG_IDENTIFIER="fleetd", FLEET_MACHINE=machine_id))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


def notify(state: str) -> None:
    if "NOTIFY_SOCKET" in os.environ:
        from systemd import daemon

        daemon.notify(state)


class Server:
    def __init__(self, args: argparse.Namespace, config: Config) -> None:
        self.args = args
        self.config = config
        self.should_exit = asyncio.Event()
        self.should_reload = asyncio.Event()

    async def serve(self) -> int:
        """Exit status: 0 after SIGTERM, 1 when a component failed (systemd restarts fleetd,
        which reuses the machine lease, so nothing moves)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.should_exit.set)
        loop.add_signal_handler(signal.SIGINT, self.should_exit.set)
        loop.add_signal_handler(signal.SIGHUP, self.should_reload.set)
        while True:
            outcome = await self.run_once()
            if outcome != "reload":
                return 0 if outcome == "exit" else 1
            self.reload_config()

    def reload_config(self) -> None:
        log.info("Reloading configuration")
        try:
            self.config = read_config(self.args)
        except ConfigError as error:
            log.error("keeping the old configuration: %s", error)

    async def run_once(self) -> str:
        """Run every component until SIGTERM ("exit"), SIGHUP ("reload") or a failure."""
        config = self.config
        machine = this_machine(config)
        setup_logging(config.verbosity, machine.id)
        keys = Keys(config.etcd_key_prefix)
        tls = TlsFiles(config.etcd_cafile, config.etcd_certfile, config.etcd_keyfile)
        registry_context = Registry.open(
            config.etcd_servers[0],
            keys,
            config.etcd_request_timeout,
            config.etcd_username,
            config.etcd_password,
            tls,
        )
        async with registry_context as registry, await sd.Systemd.connect() as systemd:
            heart = Heart(registry, machine, config.agent_ttl, RUN_DIR / "lease")
            agent = Agent(
                registry,
                systemd,
                heart,
                Path(config.units_directory),
                config.agent_reconcile_interval,
            )
            heart.on_new_lease.append(agent.republish)
            heart.on_contact.append(agent.unfence)
            responder = await peers.serve(machine.ip, config.peer_port, machine.id, heart.etcd_age)
            components = [agent.run()]
            if watchdog_seconds := int(os.environ.get("WATCHDOG_USEC", "0")) / 1e6:
                components.append(self.watchdog(watchdog_seconds))
            if not config.disable_engine:
                components.append(Engine(registry, heart, config.engine_reconcile_interval).run())
            if config.fencing:
                guard = FenceGuard(
                    registry,
                    heart,
                    agent,
                    config.peer_port,
                    config.etcd_request_timeout,
                    RUN_DIR / "peers",
                )
                components.append(guard.run())
            api = await serve_api(
                FleetClient(registry), API_SOCKET, keys.machine(machine.id), api_tcp(config)
            )
            heart_task = asyncio.create_task(heart.run())
            tasks = [heart_task, *(asyncio.create_task(c) for c in components)]
            notify("READY=1")
            log.info("fleetd %s started on machine %s (%s)", VERSION, machine.id, machine.ip)
            outcome = await self.wait_for_signal_or_failure(tasks)
            # The heart keeps the lease alive until the units are gone, so nothing moves early.
            await cancel([t for t in tasks if t is not heart_task])
            if outcome == "exit":
                await self.leave(registry, agent, heart)
            await cancel([heart_task])
            responder.close()
            await api.cleanup()
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
            log.critical(
                "a fleetd component stopped: %r; exiting so that systemd restarts fleetd",
                task.exception(),
            )
            return "failed"
        return "reload"

    async def leave(self, registry: Registry, agent: Agent, heart: Heart) -> None:
        """Graceful stop: leadership given up, units stopped and unloaded, lease revoked, so
        every unit can move at once."""
        notify("STOPPING=1")
        log.info("shutting down: stopping units and leaving the cluster")
        with contextlib.suppress(RegistryError):
            await registry.resign(heart.machine.id)
        await agent.purge()
        with contextlib.suppress(RegistryError):
            await heart.stop()

    async def watchdog(self, seconds: float) -> None:
        """Ping systemd's watchdog from the event loop: a wedged loop gets fleetd restarted."""
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(seconds / 2)


def api_tcp(config: Config) -> tuple[str, int, ssl.SSLContext] | None:
    if not config.api_listen:
        return None
    host, _, port = config.api_listen.rpartition(":")
    context = tls_context(config.api_tls_cert, config.api_tls_key, config.api_tls_client_ca)
    return host, int(port), context


async def cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = read_config(args)
        setup_logging(config.verbosity)
        this_machine(config)  # fail now, with a clear message, on a bad identity
    except ConfigError as error:
        print(f"fleetd: {error}", file=sys.stderr)
        return 1
    return asyncio.run(Server(args, config).serve())


if __name__ == "__main__":
    sys.exit(main())
