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
import sys
import time
from pathlib import Path

from . import peers
from . import systemd as sd
from .agent import Agent
from .config import (
    DEFAULT_CONFIG_FILE,
    SETTINGS,
    Config,
    ConfigError,
    load_config,
    read_config_file,
)
from .engine import Engine
from .fencing import (
    decide,
    etcd_silence_suspicious,
    keepalive_interval,
    probe_timeout,
    stop_deadline,
)
from .heart import Heart
from .identity import this_machine
from .keys import Keys
from .registry import Registry, RegistryError

log = logging.getLogger("fleetd")
LEASE_FILE = Path("/run/fleet/lease")
VERSION = "0.1.0"
PEER_REFRESH_SECONDS = 5.0  # how stale the peer list used for fencing may get


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
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.should_exit.set)
        loop.add_signal_handler(signal.SIGINT, self.should_exit.set)
        loop.add_signal_handler(signal.SIGHUP, self.should_reload.set)
        while True:
            graceful = await self.run_once()
            if graceful:
                return 0
            self.reload_config()

    def reload_config(self) -> None:
        log.info("Reloading configuration")
        try:
            self.config = read_config(self.args)
        except ConfigError as error:
            log.error("keeping the old configuration: %s", error)

    async def run_once(self) -> bool:
        """Run every component until SIGTERM (True: shut down) or SIGHUP (False: reload)."""
        config = self.config
        machine = this_machine(config)
        setup_logging(config.verbosity, machine.id)
        keys = Keys(config.etcd_key_prefix)
        async with (
            Registry.open(config.etcd_servers[0], keys, config.etcd_request_timeout) as registry,
            await sd.Systemd.connect() as systemd,
        ):
            heart = Heart(registry, machine, config.agent_ttl, LEASE_FILE)
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
            tasks = [
                asyncio.create_task(coroutine)
                for coroutine in (
                    heart.run(),
                    agent.run(),
                    self.watchdog(),
                    *(
                        []
                        if config.disable_engine
                        else [Engine(registry, heart, config.engine_reconcile_interval).run()]
                    ),
                    *([self.fence_when_cut_off(registry, heart, agent)] if config.fencing else []),
                )
            ]
            notify("READY=1")
            log.info("fleetd %s started on machine %s (%s)", VERSION, machine.id, machine.ip)
            graceful = await self.wait_for_signal()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            responder.close()
            if graceful:
                await self.leave(agent, heart)
        return graceful

    async def wait_for_signal(self) -> bool:
        exit_wait = asyncio.create_task(self.should_exit.wait())
        reload_wait = asyncio.create_task(self.should_reload.wait())
        await asyncio.wait([exit_wait, reload_wait], return_when=asyncio.FIRST_COMPLETED)
        exit_wait.cancel()
        reload_wait.cancel()
        self.should_reload.clear()
        return self.should_exit.is_set()

    async def leave(self, agent: Agent, heart: Heart) -> None:
        """Graceful stop: units stopped and unloaded, lease revoked, so units move at once."""
        notify("STOPPING=1")
        log.info("shutting down: stopping units and leaving the cluster")
        await agent.purge()
        with contextlib.suppress(RegistryError):
            await heart.stop()

    async def watchdog(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
        if not usec:
            return
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(usec / 2e6)

    async def fence_when_cut_off(self, registry: Registry, heart: Heart, agent: Agent) -> None:
        """Every tick: when etcd has been silent too long, ask the peers and maybe fence."""
        ttl = self.config.agent_ttl
        peer_ips: list[str] = []
        refreshed = float("-inf")
        last_verdict = ""
        while True:
            await asyncio.sleep(keepalive_interval(ttl) / 2)
            now = time.monotonic()
            if heart.failing_since is None:
                last_verdict = ""
                # Often while this machine knows no peers (a cluster forming), rarely after.
                if now - refreshed >= (PEER_REFRESH_SECONDS if peer_ips else 1.0):
                    with contextlib.suppress(RegistryError):
                        machines = await registry.machines()
                        peer_ips = [m.ip for m in machines.values() if m.id != heart.machine.id]
                        refreshed = now
                continue
            if agent.fenced or not etcd_silence_suspicious(now, heart.last_contact, ttl):
                continue
            timeout = probe_timeout(ttl)
            reports = await peers.probe(heart.machine.ip, peer_ips, self.config.peer_port, timeout)
            verdict = decide(
                time.monotonic(),
                heart.last_contact,
                heart.failing_since,
                ttl,
                len(peer_ips),
                reports,
            )
            if verdict.fence and reports and await heart.try_now():
                continue  # peers reach etcd and, asked once more, so do we: no outage here
            if verdict.fence:
                await agent.fence(stop_deadline(heart.last_contact, ttl), verdict.reason)
            elif verdict.reason != last_verdict:
                log.warning("etcd is silent; not fencing: %s", verdict.reason)
            last_verdict = verdict.reason


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
