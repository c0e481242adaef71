"""A fleet cluster on a lab: fleetd on every machine, a client on the host, and watchdogs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fleetd.client import FleetClient
from fleetd.machine_plan import RUNNING_STATES as RUNNING
from fleetd.model import UnitStatus
from fleetd.registry import Registry
from fleetlab.fleet import configure_fleetd
from fleetlab.lab import Lab

# Metadata per machine; tests rely on it.
METADATA = {"m1": "region=us,disk=ssd", "m2": "region=eu,disk=hdd", "m3": "region=eu,disk=ssd"}
SLEEPER = "[Service]\nExecStart=/bin/sleep infinity\n"


def unit(x_fleet: str = "", service: str = SLEEPER) -> str:
    return service + (f"\n[X-Fleet]\n{x_fleet}\n" if x_fleet else "")


@dataclass
class FleetCluster:
    lab: Lab
    ttl: float
    registry: Registry
    client: FleetClient
    ids: dict[str, str] = field(default_factory=dict)  # machine name -> machine id

    @property
    def names(self) -> dict[str, str]:
        return {machine_id: name for name, machine_id in self.ids.items()}

    def configure(self, machine: str, **options: str) -> None:
        settings = {"metadata": METADATA.get(machine, ""), "engine_reconcile_interval": "1s"}
        configure_fleetd(self.lab, machine, self.ttl, **{**settings, **options})

    def systemctl(self, machine: str, *args: str) -> str:
        return self.lab.run(machine, ["systemctl", *args], check=False).stdout.strip()

    def active_on(self, unit_name: str) -> list[str]:
        """Machines where systemd itself says the unit runs (not what fleet reports): active,
        or on its way up or down, since its processes may run in all of those states."""
        return [
            name
            for name in self.running_machines()
            if self.systemctl(name, "is-active", unit_name) in RUNNING
        ]

    def main_pid(self, machine: str, unit_name: str) -> str:
        return self.systemctl(machine, "show", "-p", "MainPID", "--value", unit_name)

    def running_machines(self) -> list[str]:
        return self.lab.running_machines()

    def machine_of(self, units: dict[str, UnitStatus], unit_name: str) -> str | None:
        machine_id = units[unit_name].machine
        return None if machine_id is None else self.names[machine_id]


@contextmanager
def never_twice(cluster: FleetCluster, units: list[str], every: float = 0.5) -> Iterator[None]:
    """Sample systemd on every machine every `every` seconds; fail if a unit ever runs twice."""
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name in units:
                where = cluster.active_on(name)
                if len(where) > 1:
                    seen.append(f"{time.strftime('%X')} {name} active on {where}")
            stop.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
    assert not seen, "a unit ran on two machines at once:\n" + "\n".join(seen)
