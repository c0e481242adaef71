"""Drain and undrain this machine through fleet (I/O): fleetctl's etcd driver, in this process.

    drain:   the drain mark, forced (a unit no other machine can take stays), then a wait until
             every unit it moves runs on its new machine: `fleetctl --driver=etcd drain --force`
    undrain: the mark removed: `fleetctl --driver=etcd undrain`

Why not fleetctl as a process through the local fleetd's API, as before: on a busy TCG guest a
fleetctl process and fleetd's API, loaded at its first request after each boot, took 20-45 s of
every node's turn in a rolling update; this process already holds an etcd client. fleet's etcd
is fleet.conf's (etcd_servers, its key prefix, TLS and login), which may differ from the lock's
ETCD_ENDPOINTS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fleetd.client import ClientError
from fleetd.config import DEFAULT_CONFIG_FILE
from fleetd.etcdclient import TlsFiles
from fleetd.fleetctl.draining import wait_drained
from fleetd.fleetctl.etcd_driver import EtcdDriver
from fleetd.fleetctl.session import Failure
from fleetd.keys import Keys
from fleetd.registry import Registry

from .lock import fleet_settings

DRAIN_TIMEOUT = 30 * 60.0  # seconds: a drain moves units one at a time; a stuck one must end
# A request's timeout: longer than fleetctl's 3 s default, for a machine busy writing its slot
# (under QEMU a drain's first request timed out with the neighbours doing that).
REQUEST_TIMEOUT = 30.0


class DrainFailed(Exception):
    """fleet did not finish the drain: a unit the engine placed nowhere, or the timeout."""


class FleetOverEtcd:
    def __init__(self, fleet_conf: Path = DEFAULT_CONFIG_FILE) -> None:
        self.fleet_conf = fleet_conf

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[EtcdDriver]:
        config = fleet_settings(self.fleet_conf)
        tls = TlsFiles(config.etcd_cafile, config.etcd_certfile, config.etcd_keyfile)
        keys = Keys(config.etcd_key_prefix)
        username, password = config.etcd_username, config.etcd_password
        servers = config.etcd_servers
        async with Registry.open(servers, keys, REQUEST_TIMEOUT, username, password, tls) as opened:
            yield EtcdDriver(opened)

    async def drain(self, machine: str) -> None:
        """Returns once fleet has moved the machine's units away; DrainFailed otherwise."""
        async with self.driver() as driver:
            units = await driver.units()
            try:
                outcome = await driver.drain(machine, force=True)
            except ClientError as error:  # not registered (fleetd down here), say
                raise DrainFailed(f"Error draining machine: {error}") from error
            moving = [
                name
                for name, status in units.items()
                if status.machine == machine and name not in outcome.stays
            ]
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await wait_drained(driver, machine, moving, 0)
            except (Failure, TimeoutError) as error:
                why = str(error) or f"the drain was not done after {DRAIN_TIMEOUT:.0f}s"
                raise DrainFailed(why) from error

    async def undrain(self, machine: str) -> None:
        async with self.driver() as driver:
            await driver.undrain(machine)
