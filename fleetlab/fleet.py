"""fleetd on a lab: one fleet.conf per machine, fleetd enabled everywhere, a client on the host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fleetd.client import FleetClient
from fleetd.keys import Keys
from fleetd.registry import Registry

from .lab import Lab


def fleet_config(lab: Lab, machine: str, agent_ttl: float, options: Mapping[str, str]) -> str:
    record = lab.require_state().machine(machine)
    assert record is not None
    settings = {
        "etcd_servers": lab.layout.etcd_endpoint,
        "public_ip": record.ip,
        "agent_ttl": f"{agent_ttl}s",
        **options,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def configure_fleetd(lab: Lab, machine: str, agent_ttl: float, **options: str) -> None:
    """Write the machine's /etc/fleet/fleet.conf (fleetd reads it at start and on SIGHUP)."""
    text = fleet_config(lab, machine, agent_ttl, options)
    script = "mkdir -p /etc/fleet && cat > /etc/fleet/fleet.conf"
    lab.run(machine, ["sh", "-c", script], input=text)


def enable_fleetd(lab: Lab, machine: str) -> None:
    """Start fleetd now and on every later boot of the machine, as fleet.service was on CoreOS:
    `systemctl enable` puts the wants link in the machine's /etc, which lives in its overlay
    upper directory beside fleet.conf, so `start` after `kill` or `stop` brings fleetd back."""
    lab.run(machine, ["systemctl", "enable", "--now", "fleetd.service"])


def start_fleetd(
    lab: Lab,
    agent_ttl: float = 10.0,
    metadata: Mapping[str, str] | None = None,
    **settings: str,
) -> None:
    """Configure and enable fleetd on every running machine (`metadata`: per machine name;
    `settings`: more fleet.conf keys, the same on every machine)."""
    for machine in lab.running_machines():
        options = {"metadata": metadata[machine]} if metadata and machine in metadata else {}
        configure_fleetd(lab, machine, agent_ttl, **options, **settings)
        enable_fleetd(lab, machine)


@asynccontextmanager
async def fleet_client(lab: Lab, timeout: float = 5.0) -> AsyncIterator[FleetClient]:
    """A client on the host for the lab's fleet, once every running machine has registered."""
    async with Registry.open(lab.host_etcd_endpoint, Keys(), timeout=2.0) as registry:
        client = FleetClient(registry)
        expected = len(lab.running_machines())
        deadline = time.monotonic() + timeout + 20
        while len(await client.machines()) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError("fleetd did not register every machine")
            await asyncio.sleep(0.1)
        yield client
