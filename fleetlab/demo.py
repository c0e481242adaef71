"""The demo `make demo` runs on a lab with fleetd: start units, show where they run, kill a
machine, show them move. Leaves the lab up for exploring (`fleetlab down` removes it).

    python -m fleetlab.demo [--lab NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from fleetd.client import FleetClient
from fleetd.model import UnitStatus

from .fleet import fleet_client
from .lab import Lab

UNITS = {
    "hello@.service": "[Unit]\nDescription=Hello %i\n\n[Service]\n"
    "ExecStart=/bin/sh -c 'while true; do echo hello from %i on $(hostname); sleep 5; done'\n",
    "sidecar.service": "[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nGlobal=true\n",
}
INSTANCES = ["hello@1.service", "hello@2.service", "hello@3.service"]


def show(units: dict[str, UnitStatus], names: dict[str, str]) -> None:
    print(f"  {'UNIT':<18} {'DESIRED':<9} ACTIVE ON")
    for name, status in units.items():
        where = ", ".join(names.get(m, m[:8]) for m in status.active_on()) or "-"
        print(f"  {name:<18} {status.desired.value:<9} {where}")


async def demo(lab: Lab) -> None:
    names = {r.machine_id: r.name for r in lab.require_state().machines}
    async with fleet_client(lab) as client:
        await client.submit(UNITS)
        await client.start([*INSTANCES, "sidecar.service"])
        units = await wait_running(client, len(names))
        print("units started:")
        show(units, names)
        victim = names[units["hello@1.service"].machine]
        print(f"\npower cut on {victim} (fleetlab kill {victim}); fleetd moves its units")
        lab.kill(victim)
        started = time.monotonic()
        units = await client.wait_until(lambda u: moved(u, names, victim), 60)
        print(f"hello@1 active again after {time.monotonic() - started:.1f}s:")
        show(units, names)


def moved(units: dict[str, UnitStatus], names: dict[str, str], victim: str) -> bool:
    return all(
        units[n].active_on() and victim not in [names[m] for m in units[n].active_on()]
        for n in INSTANCES
    )


async def wait_running(client: FleetClient, machines: int) -> dict[str, UnitStatus]:
    return await client.wait_until(
        lambda u: (
            all(u[n].active_on() for n in INSTANCES)
            and len(u["sidecar.service"].active_on()) == machines
        ),
        60,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="default")
    asyncio.run(demo(Lab(parser.parse_args().lab)))


if __name__ == "__main__":
    main()
