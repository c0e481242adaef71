"""Drain and undrain this machine through fleet (I/O): fleetctl as a subprocess.

    fleetctl [--endpoint URL] drain --force MACHINE   blocks until the machine's movable
                                                      units run elsewhere; exit 0
    fleetctl [--endpoint URL] undrain MACHINE         schedulable again

fleetctl's default endpoint is the local fleetd's API socket, which every machine running
fleetd has (and the coordinator drains only where fleetd is enabled); `endpoint` points it
elsewhere. flotilla.process.run passes no inherited environment, so FLEETCTL_* variables of
the caller do not reach it.
The runner is a parameter, so the coordinator's tests record the commands instead of running them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from flotilla.process import run

DRAIN_TIMEOUT = 30 * 60.0  # seconds: a drain moves units one at a time; a stuck one must end
UNDRAIN_TIMEOUT = 60.0

Runner = Callable[[Sequence[str], float], object]  # argv, timeout; raises when it fails


def run_command(argv: Sequence[str], timeout: float) -> object:
    return run(argv, timeout=timeout)


# fleetctl's own default (fleet's 3 s) is short for a machine busy writing its slot: a drain's
# first request (a snapshot of the cluster) timed out under QEMU with its neighbours doing that.
REQUEST_TIMEOUT = 30.0


def fleetctl_argv(action: str, machine: str, endpoint: str | None) -> list[str]:
    flags = [f"--endpoint={endpoint}"] if endpoint else []
    flags.append(f"--request-timeout={REQUEST_TIMEOUT:g}")
    force = ["--force"] if action == "drain" else []
    return ["fleetctl", *flags, action, *force, machine]


class FleetCtl:
    def __init__(self, endpoint: str | None = None, runner: Runner = run_command) -> None:
        self.endpoint = endpoint
        self.runner = runner

    async def drain(self, machine: str) -> None:
        """Returns once fleet has moved the machine's units away; CommandError otherwise."""
        argv = fleetctl_argv("drain", machine, self.endpoint)
        await asyncio.to_thread(self.runner, argv, DRAIN_TIMEOUT)

    async def undrain(self, machine: str) -> None:
        argv = fleetctl_argv("undrain", machine, self.endpoint)
        await asyncio.to_thread(self.runner, argv, UNDRAIN_TIMEOUT)
